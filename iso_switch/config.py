"""Configuration: a TOML file read into frozen dataclasses with safe defaults.

The embedded defaults are the switch the terminal interface describes
(interface section 2): two listeners on 127.0.0.1, 8583 ``ascii87-hex`` and
8584 ``ascii87-bin``, 2-byte binary length headers, no TPDU, 8 KiB frames.
With no file at all the switch runs on exactly these.

A file only needs the keys it changes. Anything else is refused rather than
guessed: an unknown key (a typo such as ``max_frame_byte``) or a bad value
raises :class:`ConfigError` naming the key path (``limits.max_frame_bytes``,
``listeners[1].port``), because a silently ignored limit in a payment switch
is a limit that is not there. A ``[[listeners]]`` list in the file replaces
the default listeners as a whole.

Relative paths (``keys.dir``, ``keys.master_key_file``, ``trace.path``) are
relative to ``data_dir``; :meth:`Config.resolve_path` applies that rule so
every user of the config applies it the same way.

:func:`dump_config` writes the effective configuration back as TOML (a tiny
emitter: the standard library reads TOML but does not write it), and
``load_config`` of that text gives the same :class:`Config` again.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import math
import re
import tomllib
import typing
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from iso_switch.codec import list_specs
from iso_switch.issuer import ACTION_ALERT, ACTION_DECLINE, VELOCITY_COUNT_MAX
from iso_switch.protocol.admission import (
    ADMISSION_WINDOW_S,
    MAX_AUTH_FAILURES_PER_WINDOW,
    MAX_CONNECTIONS_PER_ADDRESS,
    MAX_NEW_DEVICES_PER_WINDOW,
)
from iso_switch.protocol.framing import (
    DEFAULT_MAX_FRAME_BYTES,
    MIN_MAX_FRAME_BYTES,
    FramingKind,
    max_length_for,
)
from iso_switch.protocol.session import MAX_IN_FLIGHT_PER_CONNECTION
from iso_switch.routing import BIN_LENGTH_MAX, ON_US_ISSUER, route_overlaps

__all__ = [
    "DEFAULT_LISTENERS",
    "RESTART_ONLY",
    "Config",
    "ConfigError",
    "IssuerConfig",
    "KeysConfig",
    "LedgerConfig",
    "LimitsConfig",
    "ListenerConfig",
    "LoggingConfig",
    "ReloadPlan",
    "RiskConfig",
    "TimeoutsConfig",
    "TraceConfig",
    "check_issuer_routes",
    "dump_config",
    "load_config",
    "parse_config",
    "parse_endpoint",
    "reload_plan",
]

#: Longest a value is quoted in an error message.
_MAX_QUOTED_VALUE_CHARS: Final = 60
#: Largest duration a timeout may be set to (one day): anything longer is a typo.
_MAX_TIMEOUT_S: Final = 86_400.0


class ConfigError(ValueError):
    """A configuration file or override the switch refuses to run with.

    ``key_path`` names the offending key (``limits.max_frame_bytes``,
    ``listeners[0].port``), or is empty for the file as a whole.
    """

    def __init__(self, key_path: str, problem: str) -> None:
        super().__init__(f"{key_path}: {problem}" if key_path else problem)
        self.key_path = key_path
        self.problem = problem


# -- field metadata helpers ---------------------------------------------------


def _bounded(low: float, high: float) -> dict[str, Any]:
    return {"min": low, "max": high}


def _choices(*values: str) -> dict[str, Any]:
    return {"choices": values}


def _check(function: Callable[[Any], str | None]) -> dict[str, Any]:
    return {"check": function}


def _check_timezone(name: str) -> str | None:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {name!r}"
    return None


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _check_env_name(name: str) -> str | None:
    return None if _ENV_NAME.fullmatch(name) else "must be an environment variable name"


def _check_identifier(name: str) -> str | None:
    if _IDENTIFIER.fullmatch(name):
        return None
    return "must be letters, digits, '.', '_' or '-' (and not empty)"


def _check_not_empty(text: str) -> str | None:
    return None if text else "must not be empty"


# -- the configuration ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    """One TCP listener: where it binds, which dialect and framing it speaks."""

    name: str = field(metadata=_check(_check_identifier))
    port: int = field(metadata=_bounded(0, 65535))  # 0: any free port (tests)
    host: str = field(default="127.0.0.1", metadata=_check(_check_not_empty))
    #: A spec name under ``specs/`` (``ascii87-hex``, ``ascii87-bin``, ...).
    dialect: str = field(default="ascii87-hex", metadata=_check(_check_identifier))
    framing: str = field(
        default=FramingKind.BINARY2.value, metadata=_choices(*(k.value for k in FramingKind))
    )
    tpdu: bool = False


DEFAULT_LISTENERS: Final = (
    ListenerConfig(name="ascii87-hex", port=8583, dialect="ascii87-hex"),
    ListenerConfig(name="ascii87-bin", port=8584, dialect="ascii87-bin"),
)


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """Bounds on everything a peer can make the switch hold."""

    #: Largest length a header may announce (TPDU included), interface s.1.
    max_frame_bytes: int = field(
        default=DEFAULT_MAX_FRAME_BYTES, metadata=_bounded(MIN_MAX_FRAME_BYTES, 65535)
    )
    #: Connections open at once, over all listeners; more wait in accept.
    max_connections: int = field(default=20_000, metadata=_bounded(1, 1_000_000))
    #: Requests read from one connection and not yet answered.
    max_in_flight_per_connection: int = field(
        default=MAX_IN_FLIGHT_PER_CONNECTION, metadata=_bounded(1, 65536)
    )
    #: Decisions committed to the ledger in one transaction at most.
    max_batch: int = field(default=512, metadata=_bounded(1, 65536))
    #: Per source address (see iso_switch.protocol.admission): connections
    #: open at once; failed MAC checks and new DUKPT device IDs per window,
    #: past which requests from devices the address has not authenticated
    #: are answered 63 without any key derivation.
    max_connections_per_address: int = field(
        default=MAX_CONNECTIONS_PER_ADDRESS, metadata=_bounded(1, 1_000_000))
    max_auth_failures_per_address: int = field(
        default=MAX_AUTH_FAILURES_PER_WINDOW, metadata=_bounded(1, 1_000_000))
    max_new_devices_per_address: int = field(
        default=MAX_NEW_DEVICES_PER_WINDOW, metadata=_bounded(1, 1_000_000))
    admission_window_s: float = field(default=ADMISSION_WINDOW_S, metadata=_bounded(1, 86_400))


@dataclass(frozen=True, slots=True)
class TimeoutsConfig:
    """How long the switch waits, in seconds."""

    #: A connection with no bytes for this long is closed.
    idle_timeout_s: float = field(default=300.0, metadata=_bounded(0.001, _MAX_TIMEOUT_S))
    #: A connection with no request for this long is closed, whatever else it
    #: sends: keep-alives (zero-length frames) and partial frames do not
    #: count, any other whole frame (0800 echoes included) does. It bounds
    #: how long a client can hold one of ``limits.max_connections`` without
    #: asking for anything; a terminal that is cut off reconnects for its
    #: next request.
    no_request_timeout_s: float = field(default=900.0, metadata=_bounded(0.001, _MAX_TIMEOUT_S))
    #: Time to receive one whole frame once its first byte arrived: a client
    #: sending one byte a second is cut off.
    frame_read_timeout_s: float = field(default=10.0, metadata=_bounded(0.001, _MAX_TIMEOUT_S))
    #: A request not decided in this time is answered 91/96, well inside a
    #: terminal's own ~30 s timeout, so it never reverses a success.
    decision_deadline_s: float = field(default=5.0, metadata=_bounded(0.001, _MAX_TIMEOUT_S))
    #: On shutdown, how long requests in flight get to finish.
    shutdown_grace_s: float = field(default=10.0, metadata=_bounded(0.0, _MAX_TIMEOUT_S))


@dataclass(frozen=True, slots=True)
class LedgerConfig:
    """The durable store and the business calendar."""

    #: SQLite ``PRAGMA synchronous``: ``FULL`` or ``EXTRA`` only. ``OFF`` and
    #: ``NORMAL`` are refused: an answered decision must survive a power cut,
    #: and in WAL mode NORMAL may lose the last commits.
    synchronous: str = field(default="FULL", metadata=_choices("FULL", "EXTRA"))
    #: The business day (daily limits) runs in this IANA zone.
    timezone: str = field(default="Asia/Shanghai", metadata=_check(_check_timezone))
    hold_expiry_days: int = field(default=7, metadata=_bounded(1, 366))
    #: How long decisions are kept for duplicate detection and reversals.
    retention_days: int = field(default=45, metadata=_bounded(1, 3660))
    #: Transfers above this amount (minor units) are referred for review (01).
    review_threshold_minor: int = field(default=200_000, metadata=_bounded(0, 10**15))
    #: Where the processor runs: ``process`` (a child process, its own core)
    #: or ``thread`` (the switch's writer thread, sharing the GIL).
    worker: str = field(default="process", metadata=_choices("process", "thread"))
    #: An idle switch still runs housekeeping (due holds expire, old keys
    #: are pruned) this often; a busy one does it with every batch.
    housekeeping_interval_s: float = field(default=30.0, metadata=_bounded(0.05, 3600))
    #: With ``worker = "process"``: the longest the switch waits to hand the
    #: ledger process a batch or for its answer. Past it the process is
    #: killed and another started; that batch's requests get their stored
    #: decision where one was committed, else 91. Above the slowest batch
    #: (fsync, and the hourly prune of old decisions, which runs inside one),
    #: or every restart would be killed again.
    reply_timeout_s: float = field(default=30.0, metadata=_bounded(0.05, 3600))


def _check_key_set_id(text: str) -> str | None:
    if len(text) == 10 and all(c in "0123456789ABCDEFabcdef" for c in text):
        return None
    return "must be a key set identifier: 10 hex characters (the KSN's first 5 bytes)"


@dataclass(frozen=True, slots=True)
class DeviceBindingConfig:
    """Bind the devices of one key set (one base derivation key) to their
    terminals: a request whose KSN is of this key set is answered 63 unless
    its device is listed in ``file`` for the DE41 it names."""

    key_set_id: str = field(metadata=_check(_check_key_set_id))
    #: Lines of ``device_id,terminal_id`` (see iso_switch.acquirer.devices);
    #: a relative path is under ``data_dir``.
    file: str = field(metadata=_check(_check_not_empty))


@dataclass(frozen=True, slots=True)
class KeysConfig:
    """Where wrapped keys live and where the master key comes from."""

    dir: str = field(default="keys", metadata=_check(_check_not_empty))
    #: The master key is read from this environment variable ...
    master_key_env: str = field(default="ISO_SWITCH_MASTER_KEY", metadata=_check(_check_env_name))
    #: ... or from this file when set (never from the config file itself).
    master_key_file: str = ""
    #: Name of the HMAC key (usage M7) that hashes PANs for card lookup; empty:
    #: the key store's only M7 key. The ledger records its check value and
    #: refuses another key, since every card on file would stop matching.
    pan_hash_key: str = ""
    #: Key sets whose devices are bound to terminal IDs (none by default).
    device_binding: tuple[DeviceBindingConfig, ...] = ()
    #: Hours a rotated BDK still serves the key set it had, so terminals can
    #: be re-injected meanwhile (0: refused at once; at most a year).
    bdk_rotation_grace_h: int = field(default=720, metadata=_bounded(0, 8760))


_RISK_ACTIONS = _choices(ACTION_ALERT, ACTION_DECLINE)


@dataclass(frozen=True, slots=True)
class RiskConfig:
    """The issuer's risk rules and what each does when it fires: ``alert``
    stores an alert only, ``decline`` also answers 05. The defaults are the
    demo's: the two rules alert, a blacklisted subject is declined."""

    #: Velocity: more than this many debit requests on one card within the
    #: window fire the rule. At most the request times kept per card.
    velocity_count: int = field(default=10, metadata=_bounded(1, VELOCITY_COUNT_MAX))
    velocity_window_s: int = field(default=60, metadata=_bounded(1, 86_400))
    velocity_action: str = field(default=ACTION_ALERT, metadata=_RISK_ACTIONS)
    #: Amount: a debit above this many times the card's average approved
    #: debit fires the rule, once the card has this many approved debits.
    amount_factor: int = field(default=10, metadata=_bounded(1, 1_000_000))
    amount_min_history: int = field(default=3, metadata=_bounded(1, 1_000_000))
    amount_action: str = field(default=ACTION_ALERT, metadata=_RISK_ACTIONS)
    #: A blacklisted PAN, account, terminal or merchant.
    blacklist_action: str = field(default=ACTION_DECLINE, metadata=_RISK_ACTIONS)


#: Remote issuers one switch may be configured with, and what each may list.
MAX_ISSUERS: Final = 64
MAX_ISSUER_BINS: Final = 10_000
MAX_ISSUER_ENDPOINTS: Final = 16
#: An issuer id becomes a ledger account name (``due-from:<id>``) and a
#: metric label value: short, and no character that needs quoting.
_ISSUER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
_PORT_TEXT = re.compile(r"[0-9]{1,5}")


def _check_institution_id(text: str) -> str | None:
    if 1 <= len(text) <= 11 and text.isascii() and text.isdigit():
        return None
    return "must be 1 to 11 digits (DE32 on issuer links)"


def _check_issuer_id(text: str) -> str | None:
    if not _ISSUER_ID.fullmatch(text):
        return "must be 1 to 32 letters, digits, '_' or '-', starting with a letter or digit"
    if text == ON_US_ISSUER:
        return f"{ON_US_ISSUER!r} is the switch's own issuer, not a remote one"
    return None


def _check_list(items: tuple[str, ...], what: str, most: int,
                item_problem: Callable[[str], str | None]) -> str | None:
    """A list of 1 to ``most`` distinct ``what``s, each without a problem."""
    if not 1 <= len(items) <= most:
        return f"must list 1 to {most} {what}s, got {len(items)}"
    for item in items:
        problem = item_problem(item)
        if problem is not None:
            return f"{_describe(item)} {problem}"
    if len(set(items)) != len(items):
        return f"lists a {what} twice"
    return None


def _bin_problem(prefix: str) -> str | None:
    if 1 <= len(prefix) <= BIN_LENGTH_MAX and prefix.isascii() and prefix.isdigit():
        return None
    return f"is not a prefix of 1 to {BIN_LENGTH_MAX} digits"


def _endpoint_problem(endpoint: str) -> str | None:
    try:
        parse_endpoint(endpoint)
    except ValueError as error:
        return str(error)
    return None


def _check_bins(bins: tuple[str, ...]) -> str | None:
    return _check_list(bins, "BIN prefix", MAX_ISSUER_BINS, _bin_problem)


def _check_endpoints(endpoints: tuple[str, ...]) -> str | None:
    return _check_list(endpoints, "endpoint", MAX_ISSUER_ENDPOINTS, _endpoint_problem)


def parse_endpoint(text: str) -> tuple[str, int]:
    """``host:port`` (``[v6 address]:port`` for IPv6) as ``(host, port)``;
    :class:`ValueError` saying what is wrong otherwise."""
    host, colon, port = text.rpartition(":")
    if not colon or not _PORT_TEXT.fullmatch(port) or not 1 <= int(port) <= 65535:
        raise ValueError("must be host:port with a port from 1 to 65535")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError("holds no IPv6 address between its brackets") from None
        return host[1:-1], int(port)
    if not host or ":" in host or any(c.isspace() or c in "[]/" for c in host):
        raise ValueError("must be host:port (an IPv6 address goes in brackets: [::1]:9583)")
    return host, int(port)


def _check_dialect(name: str) -> str | None:
    shipped = list_specs()
    if name in shipped:
        return None
    return f"unknown dialect {_describe(name)}; the switch ships {', '.join(shipped)}"


def _check_optional_identifier(name: str) -> str | None:
    return None if not name else _check_identifier(name)


@dataclass(frozen=True, slots=True, kw_only=True)
class IssuerConfig:
    """One remote issuer: the BINs routed to it and the ISO 8583 link the
    switch opens to it (interface section 7). Checked at load and at start;
    the links themselves are not wired to this yet (see the docs)."""

    id: str = field(metadata=_check(_check_issuer_id))
    #: Card number prefixes routed to this issuer.
    bins: tuple[str, ...] = field(metadata=_check(_check_bins))
    #: ``host:port`` of each endpoint (IPv6 in brackets).
    endpoints: tuple[str, ...] = field(metadata=_check(_check_endpoints))
    dialect: str = field(default="ascii87-hex", metadata=_check(_check_dialect))
    framing: str = field(
        default=FramingKind.BINARY2.value, metadata=_choices(*(k.value for k in FramingKind))
    )
    #: Key-store names: the zone PIN key (usage P0) and the zone MAC key
    #: (usage M3; empty: no MACs on this link). Checked against the key
    #: store at start (iso_switch.bootstrap).
    pin_key: str = field(metadata=_check(_check_identifier))
    mac_key: str = field(metadata=_check(_check_optional_identifier))
    #: Wait for an answer; below ``timeouts.decision_deadline_s``.
    timeout_s: float = field(default=4.0, metadata=_bounded(0.001, _MAX_TIMEOUT_S))
    echo_interval_s: float = field(default=30.0, metadata=_bounded(0.1, _MAX_TIMEOUT_S))
    max_outstanding: int = field(default=256, metadata=_bounded(1, 65536))
    stand_in: str = field(default="decline", metadata=_choices("decline", "limits"))
    stand_in_max_minor: int = field(default=0, metadata=_bounded(0, 10**15))
    stand_in_day_count: int = field(default=3, metadata=_bounded(0, 1_000_000))
    stand_in_day_minor: int = field(default=0, metadata=_bounded(0, 10**15))
    saf_retry_s: float = field(default=10.0, metadata=_bounded(0.1, _MAX_TIMEOUT_S))
    saf_expiry_h: int = field(default=72, metadata=_bounded(1, 8760))


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    format: str = field(default="json", metadata=_choices("json", "console"))
    level: str = field(
        default="info", metadata=_choices("debug", "info", "warning", "error", "critical")
    )


@dataclass(frozen=True, slots=True)
class TraceConfig:
    """Message trace for debugging sessions (off by default)."""

    enabled: bool = False
    path: str = field(default="trace.jsonl", metadata=_check(_check_not_empty))
    masked: bool = False


@dataclass(frozen=True, slots=True)
class Config:
    """The effective configuration of one switch process."""

    #: Demo mode: seed the demo data and allow the demo key store and master
    #: key. The embedded defaults are the demo; a configuration file is not,
    #: unless it says ``demo = true``. Off, demo keys are refused at start.
    demo: bool = True
    data_dir: str = field(default="./var", metadata=_check(_check_not_empty))
    #: DE32 on issuer links.
    institution_id: str = field(default="00000099901", metadata=_check(_check_institution_id))
    listeners: tuple[ListenerConfig, ...] = DEFAULT_LISTENERS
    #: Remote issuers (none by default).
    issuers: tuple[IssuerConfig, ...] = ()
    limits: LimitsConfig = LimitsConfig()
    timeouts: TimeoutsConfig = TimeoutsConfig()
    ledger: LedgerConfig = LedgerConfig()
    keys: KeysConfig = KeysConfig()
    risk: RiskConfig = RiskConfig()
    logging: LoggingConfig = LoggingConfig()
    trace: TraceConfig = TraceConfig()

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def remote_routes(self) -> dict[str, str]:
        """Every remote issuer prefix -> its issuer id (for
        :meth:`iso_switch.routing.BinTable.over`)."""
        return {prefix: issuer.id for issuer in self.issuers for prefix in issuer.bins}

    def resolve_path(self, path: str) -> Path:
        """``path`` as given when absolute, else relative to ``data_dir``."""
        candidate = Path(path)
        return candidate if candidate.is_absolute() else self.data_path / candidate


# -- loading -------------------------------------------------------------------


def load_config(path: Path | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """The configuration from ``path`` (or the embedded defaults) plus ``overrides``.

    ``overrides`` maps dotted key paths to values (``{"data_dir": "/srv",
    "logging.level": "debug"}``), applied over the file; ``None`` values are
    skipped so a CLI can pass its optional flags straight through.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError("", f"cannot read {path}: {error.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError("", f"{path} is not UTF-8 text") from None
        raw = _parse_toml(text, str(path))
        # A file is a real deployment unless it asks for the demo.
        raw.setdefault("demo", False)
    return parse_config(raw, overrides)


def parse_config(raw: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> Config:
    """A :class:`Config` from already-parsed TOML data (a dict)."""
    data = _deep_copy(raw)
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _apply_override(data, dotted, value)
    config: Config = _build(Config, data, "")
    _check_config(config)
    return config


def _parse_toml(text: str, origin: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError("", f"{origin} is not valid TOML: {error}") from None


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _deep_copy(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_deep_copy(item) for item in value]
    return value


def _apply_override(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(".".join(parts[: depth + 1]), "is not a table")
        node = child
    node[parts[-1]] = _deep_copy(value)


def _build(cls: type[Any], raw: Any, key_path: str) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(key_path, f"must be a table, got {_describe(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            raise ConfigError(_join(key_path, str(key)), "unknown key")
    values: dict[str, Any] = {}
    for name, spec in fields.items():
        path = _join(key_path, name)
        if name in raw:
            values[name] = _convert(hints[name], raw[name], path, spec.metadata)
        elif spec.default is dataclasses.MISSING:
            raise ConfigError(path, "is required")
    return cls(**values)


def _convert(kind: Any, value: Any, key_path: str, metadata: Mapping[str, Any]) -> Any:
    if dataclasses.is_dataclass(kind):
        return _build(kind, value, key_path)  # type: ignore[arg-type]
    if typing.get_origin(kind) is tuple:
        (item_kind, _ellipsis) = typing.get_args(kind)
        if not isinstance(value, list | tuple):
            what = "an array of tables" if dataclasses.is_dataclass(item_kind) else "an array"
            raise ConfigError(key_path, f"must be {what}, got {_describe(value)}")
        items = tuple(
            _convert(item_kind, item, f"{key_path}[{index}]", {})
            for index, item in enumerate(value)
        )
        _validate(items, key_path, metadata)
        return items
    converted = _scalar(kind, value, key_path)
    _validate(converted, key_path, metadata)
    return converted


def _scalar(kind: Any, value: Any, key_path: str) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(key_path, f"must be true or false, got {_describe(value)}")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(key_path, f"must be an integer, got {_describe(value)}")
    if kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
            if math.isfinite(number):
                return number
        raise ConfigError(key_path, f"must be a finite number, got {_describe(value)}")
    if kind is str:
        if isinstance(value, str):
            return value
        raise ConfigError(key_path, f"must be a string, got {_describe(value)}")
    raise AssertionError(f"unsupported config type {kind!r} at {key_path}")  # a bug here


def _validate(value: Any, key_path: str, metadata: Mapping[str, Any]) -> None:
    if "min" in metadata and not metadata["min"] <= value <= metadata["max"]:
        raise ConfigError(
            key_path,
            f"must be between {_number(metadata['min'])} and {_number(metadata['max'])}, "
            f"got {_describe(value)}",
        )
    if "choices" in metadata and value not in metadata["choices"]:
        allowed = ", ".join(repr(choice) for choice in metadata["choices"])
        raise ConfigError(key_path, f"must be one of {allowed}, got {_describe(value)}")
    if "check" in metadata:
        problem = metadata["check"](value)
        if problem is not None:
            raise ConfigError(key_path, problem)


def _check_config(config: Config) -> None:
    """Rules that span several keys."""
    _check_listeners(config)
    _check_issuers(config)


def _check_listeners(config: Config) -> None:
    if not config.listeners:
        raise ConfigError("listeners", "at least one listener is required")
    names: set[str] = set()
    addresses: set[tuple[str, int]] = set()
    for index, listener in enumerate(config.listeners):
        path = f"listeners[{index}]"
        if listener.name in names:
            raise ConfigError(f"{path}.name", f"duplicate listener name {listener.name!r}")
        names.add(listener.name)
        address = (listener.host, listener.port)
        if listener.port and address in addresses:
            raise ConfigError(f"{path}.port", f"{listener.host}:{listener.port} is already used")
        addresses.add(address)
        capacity = max_length_for(listener.framing)
        if config.limits.max_frame_bytes > capacity:
            raise ConfigError(
                "limits.max_frame_bytes",
                f"{config.limits.max_frame_bytes} does not fit the {listener.framing!r} "
                f"length header of {path} (at most {capacity})",
            )


def _check_issuers(config: Config) -> None:
    """Issuer ids unique, answers awaited within the decision deadline, and
    no PAN claimed by two issuers (one prefix beginning with another)."""
    if len(config.issuers) > MAX_ISSUERS:
        raise ConfigError("issuers", f"at most {MAX_ISSUERS} issuers, got {len(config.issuers)}")
    deadline_s = config.timeouts.decision_deadline_s
    ids: set[str] = set()
    owner: dict[str, int] = {}
    for index, issuer in enumerate(config.issuers):
        path = f"issuers[{index}]"
        if issuer.id in ids:
            raise ConfigError(f"{path}.id", f"duplicate issuer id {issuer.id!r}")
        ids.add(issuer.id)
        if issuer.timeout_s >= deadline_s:
            raise ConfigError(
                f"{path}.timeout_s",
                f"must be below timeouts.decision_deadline_s ({_number(deadline_s)}), "
                f"got {_number(issuer.timeout_s)}",
            )
        for prefix, claimed in route_overlaps(issuer.bins, owner):
            raise ConfigError(f"{path}.bins", f"{prefix!r} overlaps {claimed!r} of "
                              f"issuers[{owner[claimed]}]")
        owner.update(dict.fromkeys(issuer.bins, index))


def check_issuer_routes(config: Config, routes: Mapping[str, str]) -> None:
    """Refuse issuer BINs that overlap the ledger's own route table
    (``routes``: prefix -> issuer id), and issuer ids the ledger routes
    to: a PAN would have two routes. Called once the ledger is open."""
    routed_ids = set(routes.values())
    for index, issuer in enumerate(config.issuers):
        path = f"issuers[{index}]"
        if issuer.id in routed_ids:
            raise ConfigError(f"{path}.id", f"{issuer.id!r} is an issuer of the ledger's own "
                              "route table")
        for prefix, routed in route_overlaps(issuer.bins, routes):
            raise ConfigError(f"{path}.bins", f"{prefix!r} overlaps {routed!r}, routed to "
                              f"{routes[routed]!r} in the ledger's route table")


def _join(key_path: str, key: str) -> str:
    return f"{key_path}.{key}" if key_path else key


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > _MAX_QUOTED_VALUE_CHARS:
        text = text[: _MAX_QUOTED_VALUE_CHARS - 3] + "..."
    return f"{text} ({type(value).__name__})"


# -- reloading -----------------------------------------------------------------

#: Settings a reload (SIGHUP) cannot change: they are bound to what the
#: process opened or sized at start (sockets, the ledger file and its
#: process, structures sized by limits, the log and trace outputs, demo
#: seeding). A dotted prefix covers everything under it.
RESTART_ONLY: Final = (
    "demo", "data_dir", "listeners", "limits", "logging", "trace",
    # Remote issuers take effect at start until their links are reloadable.
    "institution_id", "issuers",
    "ledger.synchronous", "ledger.timezone", "ledger.worker",
    "ledger.housekeeping_interval_s", "ledger.reply_timeout_s",
)


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """What a reload applies: ``config`` is the file's configuration with
    every restart-only setting kept as it runs; ``changed`` lists the key
    paths it changes, ``ignored`` those the file changes that wait for a
    restart (paths only: never values)."""

    config: Config
    changed: tuple[str, ...]
    ignored: tuple[str, ...]


def reload_plan(running: Config, loaded: Config) -> ReloadPlan:
    """How a configuration read again at runtime applies to the running one."""
    changed: list[str] = []
    ignored: list[str] = []
    for path in _differences(running, loaded, ""):
        restart = any(path == prefix or path.startswith(f"{prefix}.")
                      or path.startswith(f"{prefix}[") for prefix in RESTART_ONLY)
        (ignored if restart else changed).append(path)
    config = loaded
    for prefix in RESTART_ONLY:
        config = _with_value(config, prefix.split("."), _value_at(running, prefix.split(".")))
    return ReloadPlan(config, tuple(changed), tuple(ignored))


def _differences(old: Any, new: Any, key_path: str) -> list[str]:
    """The key paths whose values differ (tables walked, arrays whole)."""
    if dataclasses.is_dataclass(old) and type(old) is type(new):
        found: list[str] = []
        for spec in dataclasses.fields(old):
            found.extend(_differences(getattr(old, spec.name), getattr(new, spec.name),
                                      _join(key_path, spec.name)))
        return found
    return [] if old == new else [key_path]


def _value_at(config: Any, parts: list[str]) -> Any:
    for part in parts:
        config = getattr(config, part)
    return config


def _with_value(config: Any, parts: list[str], value: Any) -> Any:
    if len(parts) == 1:
        return dataclasses.replace(config, **{parts[0]: value})
    inner = _with_value(getattr(config, parts[0]), parts[1:], value)
    return dataclasses.replace(config, **{parts[0]: inner})


# -- dumping -------------------------------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def dump_config(config: Config) -> str:
    """``config`` as TOML text that :func:`load_config` reads back unchanged.

    Top-level scalars first, then ``[[listeners]]`` and ``[[issuers]]``,
    then one table per section, in field order.
    """
    lines: list[str] = ["# iso-switch configuration"]
    scalars, arrays, tables = _partition(config)
    lines.extend(f"{_toml_key(name)} = {_toml_value(value)}" for name, value in scalars)
    for name, items in arrays:
        for item in items:
            lines.extend(["", f"[[{_toml_key(name)}]]"])
            lines.extend(_table_body(item))
    for name, table in tables:
        lines.extend(["", f"[{_toml_key(name)}]"])
        inner_scalars, inner_arrays, inner_tables = _partition(table)
        # Sections hold scalars and arrays of flat tables, nothing deeper.
        assert not inner_tables, "nested config tables are not supported by the emitter"
        lines.extend(f"{_toml_key(key)} = {_toml_value(value)}" for key, value in inner_scalars)
        for key, items in inner_arrays:
            for item in items:
                lines.extend(["", f"[[{_toml_key(name)}.{_toml_key(key)}]]"])
                lines.extend(_table_body(item))
    return "\n".join(lines) + "\n"


def _partition(
    instance: Any,
) -> tuple[list[tuple[str, Any]], list[tuple[str, tuple[Any, ...]]], list[tuple[str, Any]]]:
    scalars: list[tuple[str, Any]] = []
    arrays: list[tuple[str, tuple[Any, ...]]] = []
    tables: list[tuple[str, Any]] = []
    hints = typing.get_type_hints(type(instance))
    for spec in dataclasses.fields(instance):
        value = getattr(instance, spec.name)
        if dataclasses.is_dataclass(value):
            tables.append((spec.name, value))
        elif isinstance(value, tuple) and _holds_tables(hints[spec.name]):
            arrays.append((spec.name, value))
        else:
            scalars.append((spec.name, value))
    return scalars, arrays, tables


def _holds_tables(kind: Any) -> bool:
    """Whether a ``tuple[X, ...]`` field is an array of tables (else of scalars)."""
    (item_kind, _ellipsis) = typing.get_args(kind)
    return dataclasses.is_dataclass(item_kind)


def _table_body(instance: Any) -> list[str]:
    scalars, arrays, tables = _partition(instance)
    # Sections are one level deep; a nested table would need [a.b] headers.
    assert not arrays and not tables, "nested config tables are not supported by the emitter"
    return [f"{_toml_key(name)} = {_toml_value(value)}" for name, value in scalars]


def _toml_key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else _toml_string(name)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        assert math.isfinite(value), "config floats are validated finite"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise AssertionError(f"no TOML form for {type(value).__name__}")


def _toml_string(text: str) -> str:
    # JSON's escapes (\" \\ \b \f \n \r \t \uXXXX) are all valid in a TOML
    # basic string; DEL is the one control character JSON leaves raw and
    # TOML forbids.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")
