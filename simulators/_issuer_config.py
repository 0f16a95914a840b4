"""The issuer simulator's configuration: its listener, link keys, cards and
rules, read from a TOML or JSON file (sans-I/O apart from reading files).

The file is **test data**: it holds the cards' PINs in clear, because the
simulator plays a bank whose PIN verification would otherwise need a PIN
verification key and offsets for every card. Nothing else ever holds them:
they are never logged, never in a repr or an error message, and never
written anywhere by the simulator.

Keys are not in the file: it names a key store directory (relative to the
file) and the names of the zone PIN and zone MAC keys in it. The master
key comes from ``$ISO_SWITCH_MASTER_KEY`` or ``keys.master_key_file``; with
``demo = true`` the published demo master key may stand in. Outside demo
mode a demo key (by name or published KCV) is refused, as the switch does.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from iso_switch.codes import ResponseCode
from iso_switch.protocol.framing import DEFAULT_MAX_FRAME_BYTES, FramingKind
from iso_switch.security import tr31
from iso_switch.security.demo import demo_keys_in
from iso_switch.security.errors import SecurityError
from iso_switch.security.keystore import KeyStore, resolve_master_key

CARD_STATES: Final = ("active", "lost", "stolen", "blocked")
ACTIONS: Final = ("approve", "decline", "delay", "drop", "close", "bad_mac", "twice")
CONNECTIONS_MAX_DEFAULT: Final = 64
IN_FLIGHT_MAX_DEFAULT: Final = 64
#: Bounds on what a configuration may hold (a test tool, but bounded).
CARDS_MAX: Final = 100_000
RULES_MAX: Final = 1_000
DELAY_MS_MAX: Final = 600_000
CONFIG_BYTES_MAX: Final = 16 * 1024 * 1024


class IssuerConfigError(ValueError):
    """The configuration is wrong; the message names the key (never a PIN)."""


@dataclass(frozen=True, slots=True)
class CardConfig:
    """One card and the account behind it. ``pin`` is test data (repr hides it)."""

    pan: str
    expiry: str  # YYMM
    pin: str = field(repr=False)
    state: str
    account: str
    balance_minor: int
    currency: str

    def __repr__(self) -> str:
        return f"CardConfig(pan={self.pan[:6]}..{self.pan[-4:]}, state={self.state})"


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule: when ``bin`` (a PAN prefix), ``pan``, the amount range and
    ``mtis`` all match (unset ones match anything), ``action`` applies."""

    action: str
    bin: str = ""
    pan: str = ""
    amount_min_minor: int | None = None
    amount_max_minor: int | None = None
    mtis: tuple[str, ...] = ()
    code: str = ResponseCode.DO_NOT_HONOUR
    delay_ms: int = 0

    def matches(self, mti: str, pan: str, amount_minor: int | None) -> bool:
        if self.mtis and mti not in self.mtis:
            return False
        if (self.bin and not pan.startswith(self.bin)) or (self.pan and pan != self.pan):
            return False
        if self.amount_min_minor is not None and (amount_minor is None
                                                  or amount_minor < self.amount_min_minor):
            return False
        return self.amount_max_minor is None or (amount_minor is not None
                                                 and amount_minor <= self.amount_max_minor)


@dataclass(frozen=True, slots=True)
class IssuerConfig:
    """Everything the simulator runs with (keys loaded separately)."""

    id: str = "bank-b"
    demo: bool = False
    host: str = "127.0.0.1"
    port: int = 9583
    dialect: str = "ascii87-hex"
    framing: str = FramingKind.BINARY2.value
    max_connections: int = CONNECTIONS_MAX_DEFAULT
    max_in_flight: int = IN_FLIGHT_MAX_DEFAULT
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    keys_dir: Path | None = None
    pin_key: str = ""
    mac_key: str = ""
    master_key_file: Path | None = None
    cards: tuple[CardConfig, ...] = ()
    rules: tuple[Rule, ...] = ()
    record: Path | None = None


@dataclass(frozen=True, slots=True)
class LinkKeys:
    """The clear link keys, for the simulator's process only (never shown)."""

    pin_key: bytes | None = field(default=None, repr=False)
    mac_key: bytes | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return f"LinkKeys(pin_key={self.pin_key is not None}, mac_key={self.mac_key is not None})"


def _digits(value: object, what: str, lengths: Sequence[int]) -> str:
    text = str(value)
    if not (text.isascii() and text.isdigit() and len(text) in lengths):
        raise IssuerConfigError(f"{what} must be {'/'.join(map(str, lengths))} digits")
    return text


def _int(value: object, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise IssuerConfigError(f"{what} must be an integer {low}..{high}")
    return value


def _card(raw: Mapping[str, Any], index: int) -> CardConfig:
    where = f"cards[{index}]"
    state = str(raw.get("state", "active"))
    if state not in CARD_STATES:
        raise IssuerConfigError(f"{where}.state must be one of {', '.join(CARD_STATES)}")
    try:
        return CardConfig(
            pan=_digits(raw["pan"], f"{where}.pan", range(12, 20)),
            expiry=_digits(raw["expiry"], f"{where}.expiry (YYMM)", (4,)),
            pin=_digits(raw["pin"], f"{where}.pin", range(4, 13)),
            state=state,
            account=str(raw["account"]),
            balance_minor=_int(raw.get("balance_minor", 0), f"{where}.balance_minor",
                               -(10**12), 10**12),
            currency=_digits(raw.get("currency", "156"), f"{where}.currency", (3,)),
        )
    except KeyError as missing:
        raise IssuerConfigError(f"{where} needs {missing.args[0]}") from None


def _rule(raw: Mapping[str, Any], index: int) -> Rule:
    where = f"rules[{index}]"
    action = str(raw.get("action", ""))
    if action not in ACTIONS:
        raise IssuerConfigError(f"{where}.action must be one of {', '.join(ACTIONS)}")
    limits = {key: _int(raw[key], f"{where}.{key}", 0, 10**12 - 1)
              for key in ("amount_min_minor", "amount_max_minor") if key in raw}
    if "amount_minor" in raw:
        exact = _int(raw["amount_minor"], f"{where}.amount_minor", 0, 10**12 - 1)
        limits = {"amount_min_minor": exact, "amount_max_minor": exact}
    return Rule(
        action=action,
        bin=_digits(raw["bin"], f"{where}.bin", range(1, 20)) if "bin" in raw else "",
        pan=_digits(raw["pan"], f"{where}.pan", range(12, 20)) if "pan" in raw else "",
        mtis=tuple(_digits(m, f"{where}.mtis", (4,)) for m in raw.get("mtis", ())),
        code=_digits(raw.get("code", ResponseCode.DO_NOT_HONOUR), f"{where}.code", (2,)),
        delay_ms=_int(raw.get("delay_ms", 0), f"{where}.delay_ms", 0, DELAY_MS_MAX),
        **limits,
    )


def _read(path: Path) -> dict[str, Any]:
    try:
        if path.stat().st_size > CONFIG_BYTES_MAX:
            raise IssuerConfigError(f"{path} is larger than {CONFIG_BYTES_MAX} bytes")
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except OSError as exc:
        raise IssuerConfigError(f"cannot read {path}: {type(exc).__name__}") from None
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        # The parsers' messages quote no values, only positions.
        raise IssuerConfigError(f"{path} does not parse: {exc}") from None
    if not isinstance(data, dict):
        raise IssuerConfigError(f"{path} must hold a table at the top")
    return data


def _relative(base: Path, value: object) -> Path | None:
    return None if not value else (base / str(value)).resolve()


def parse_config(data: Mapping[str, Any], base: Path) -> IssuerConfig:
    """A configuration from parsed TOML/JSON; paths relative to ``base``."""
    listen = dict(data.get("listen", {}))
    keys = dict(data.get("keys", {}))
    cards = list(data.get("cards", ()))
    rules = list(data.get("rules", ()))
    if len(cards) > CARDS_MAX or len(rules) > RULES_MAX:
        raise IssuerConfigError(f"at most {CARDS_MAX} cards and {RULES_MAX} rules")
    parsed = tuple(_card(c, i) for i, c in enumerate(cards))
    if len({c.pan for c in parsed}) != len(parsed):
        raise IssuerConfigError("cards: a PAN is listed twice")
    framing = str(listen.get("framing", FramingKind.BINARY2.value))
    if framing not in {k.value for k in FramingKind}:
        raise IssuerConfigError("listen.framing must be binary2, bcd2 or ascii4")
    return IssuerConfig(
        id=str(data.get("id", "bank-b")), demo=bool(data.get("demo", False)),
        host=str(listen.get("host", "127.0.0.1")),
        port=_int(listen.get("port", 9583), "listen.port", 0, 65535),
        dialect=str(listen.get("dialect", "ascii87-hex")), framing=framing,
        max_connections=_int(listen.get("max_connections", CONNECTIONS_MAX_DEFAULT),
                             "listen.max_connections", 1, 10_000),
        max_in_flight=_int(listen.get("max_in_flight", IN_FLIGHT_MAX_DEFAULT),
                           "listen.max_in_flight", 1, 10_000),
        max_frame_bytes=_int(listen.get("max_frame_bytes", DEFAULT_MAX_FRAME_BYTES),
                             "listen.max_frame_bytes", 64, 65535),
        keys_dir=_relative(base, keys.get("dir")), pin_key=str(keys.get("pin_key", "")),
        mac_key=str(keys.get("mac_key", "")),
        master_key_file=_relative(base, keys.get("master_key_file")),
        cards=parsed, rules=tuple(_rule(r, i) for i, r in enumerate(rules)),
        record=_relative(base, data.get("record")),
    )


def load_config(path: str | os.PathLike[str]) -> IssuerConfig:
    """Read and check a TOML (or ``.json``) configuration file."""
    file = Path(path)
    return parse_config(_read(file), file.resolve().parent)


def load_link_keys(config: IssuerConfig) -> LinkKeys:
    """The zone PIN key (decrypt) and zone MAC key (generate and verify)
    named by the configuration, from its key store. Raises
    :class:`IssuerConfigError` naming what is wrong (names and KCVs only)."""
    if not config.pin_key and not config.mac_key:
        return LinkKeys()
    if config.keys_dir is None:
        raise IssuerConfigError("keys.dir must name the key store holding the link keys")
    try:
        master = resolve_master_key(config.master_key_file, allow_demo=config.demo)
        if master.is_demo and not config.demo:
            raise IssuerConfigError("the DEMO master key is refused without demo = true")
        store = KeyStore(config.keys_dir, master)
        if not config.demo and demo_keys_in(store):
            raise IssuerConfigError("demo keys are refused without demo = true: "
                                    + ", ".join(demo_keys_in(store)))
        pin = (store.key_for(config.pin_key, (tr31.USAGE_PIN_ENCRYPTION,), tr31.MODE_DECRYPT)
               if config.pin_key else None)
        mac = None
        if config.mac_key:
            store.key_for(config.mac_key, (tr31.USAGE_MAC_ISO9797_ALG3,), tr31.MODE_VERIFY)
            mac = store.key_for(config.mac_key, (tr31.USAGE_MAC_ISO9797_ALG3,),
                                tr31.MODE_GENERATE)
    except SecurityError as exc:
        raise IssuerConfigError(f"link keys: {exc}") from None
    return LinkKeys(pin_key=pin, mac_key=mac)


__all__ = ["ACTIONS", "CARD_STATES", "CardConfig", "IssuerConfig", "IssuerConfigError",
           "LinkKeys", "Rule", "load_config", "load_link_keys", "parse_config"]
