"""Message trace: every frame the switch receives and sends, for debugging
sessions and for replay (``iso-switch-replay``).

A trace is JSON Lines. It never holds cardholder data in clear: a message
is stored as its decoded fields, and the fields that carry a PAN, track
data, an expiry date, a PIN block, chip data or an account number
(:data:`PROTECTED_FIELDS`) are either

- **sealed**: AES-256-GCM under the trace key from the key store (a D0 key
  named :data:`TRACE_KEY_NAME`, or the store's only AES D0 key), one random
  nonce per field, associated data = trace id + field id, so a replay with
  the key store can restore them and a value cannot be moved to another
  field or another trace unnoticed; or
- **masked** (``trace.masked``): PANs as first 6 + last 4, track 2 down to
  its masked PAN, everything else as ``*``. Nothing can restore them.

MACs and KSNs stay in clear: a MAC is not a key and a KSN is not secret.

The first line of each recording is a header::

    {"kind": "header", "v": 1, "trace": "<16 hex>", "started": "...Z",
     "masked": false, "key": "demo-trace", "key_kcv": "76B4F7B35F",
     "listeners": {"ascii87-hex": {"dialect": "ascii87-hex", "framing": "binary2",
                                   "tpdu": false}, ...}}

(``listeners``: how each listener frames its messages, so a replay speaks
the same framing; traces written before it existed replay as ``binary2``
without a TPDU), then one line per frame::

    {"kind": "message", "trace": "...", "at_s": 0.012345, "time": "...Z",
     "conn": 1, "seq": 1, "listener": "ascii87-hex", "dialect": "ascii87-hex",
     "dir": "in", "msg": {"t": "0200", "3": "000000", ...},
     "sealed": {"2": "<base64 nonce+ciphertext>", "52": "..."}, "masked": []}

On a TPDU listener a frame's line also has its TPDU (``"tpdu":
"6000010000"``, hex: it routes, it is not secret).
``at_s`` counts seconds from the recording's start (a monotonic clock, for
pacing a replay); ``seq`` numbers requests over the whole recording and an
``out`` line carries the ``seq`` of the request it answers; ``conn``
numbers connections. A frame that does not decode is recorded as
``"error": "undecodable"`` with its size only. When the buffer overflows
(the disk cannot keep up) frames are dropped, never the switch slowed, and a
``{"kind": "gap", "dropped": N}`` line says so.

The format logic (sealing, masking, line building and parsing) is
sans-I/O; only :class:`TraceRecorder` touches trio and the file, and the
hot path (:meth:`TraceRecorder.record`) only appends raw bytes to a bounded
list: decoding, sealing and JSON happen in a worker thread every
:data:`TRACE_FLUSH_INTERVAL_S` or :data:`TRACE_FLUSH_LINES` frames.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import structlog
import trio
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from iso_switch.codec import Codec, CodecError, load_spec
from iso_switch.codec.masking import MASK_CHAR, mask_pan, mask_track2
from iso_switch.config import Config
from iso_switch.security import tr31
from iso_switch.security.errors import SecurityError
from iso_switch.security.keystore import KeyStore

log = structlog.get_logger("iso_switch.server")

TRACE_FORMAT_VERSION = 1
TRACE_KEY_NAME = "trace"
# Fields that never reach a trace in clear: PAN, expiry, track 2 / 3 / 1,
# PIN block, chip data (holds track 2 equivalent and cryptograms), and the
# account numbers of transfers (they look like PANs and identify a person).
PROTECTED_FIELDS = frozenset({"2", "14", "35", "36", "45", "52", "55", "102", "103"})
_PAN_FIELDS = frozenset({"2", "102", "103"})
_TRACK2_FIELDS = frozenset({"35"})
# Frames held in memory before the writer thread catches up; beyond it
# frames are dropped (and counted), never the switch slowed.
TRACE_BUFFER_LINES_MAX = 65_536
# The flusher wakes when this many frames are waiting, or every interval.
TRACE_FLUSH_LINES = 1_024
TRACE_FLUSH_INTERVAL_S = 0.1
# A line longer than this is not one the switch wrote (frames are <= 64 KiB).
TRACE_LINE_CHARS_MAX = 1_048_576
TRACE_FILE_MODE = 0o600
TRACE_ID_BYTES = 8
NONCE_BYTES = 12
AES_256_KEY_BYTES = 32

Direction = Literal["in", "out"]
DIRECTIONS: tuple[Direction, ...] = ("in", "out")


class TraceError(Exception):
    """A trace cannot be written or read: a missing or wrong trace key, a
    malformed line (named by number, never by content), a field that fails
    its authentication."""


# -- sealing and masking (sans-I/O) ------------------------------------------


class FieldSealer:
    """AES-256-GCM per field under the trace key. Its repr shows the trace
    id, never the key."""

    __slots__ = ("_aead", "trace_id")

    def __init__(self, key: bytes, trace_id: str) -> None:
        if len(key) != AES_256_KEY_BYTES:
            raise TraceError("the trace key must be an AES-256 key")
        self._aead = AESGCM(key)
        self.trace_id = trace_id

    def __repr__(self) -> str:
        return f"FieldSealer(trace_id={self.trace_id!r})"

    def _aad(self, field_id: str) -> bytes:
        return f"iso-switch trace {self.trace_id} field {field_id}".encode("ascii")

    def seal(self, field_id: str, value: str) -> str:
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, value.encode("utf-8"), self._aad(field_id))
        return base64.b64encode(nonce + sealed).decode("ascii")

    def open(self, field_id: str, token: str) -> str:
        try:
            raw = base64.b64decode(token, validate=True)
            clear = self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:],
                                       self._aad(field_id))
            return clear.decode("utf-8")
        except (binascii.Error, ValueError, InvalidTag, UnicodeDecodeError):
            raise TraceError(f"field {field_id} of trace {self.trace_id} fails its "
                             "authentication (wrong trace key, or an edited trace)") from None

    def for_trace(self, trace_id: str) -> FieldSealer:
        """The same key for another recording (a file may hold several)."""
        other = object.__new__(FieldSealer)
        other._aead = self._aead
        other.trace_id = trace_id
        return other


def mask_value(field_id: str, value: str) -> str:
    """What a masked trace keeps of a protected field: a PAN's first 6 and
    last 4, track 2's masked PAN, nothing of the rest but its length."""
    if field_id in _PAN_FIELDS:
        return mask_pan(value)
    if field_id in _TRACK2_FIELDS:
        return mask_track2(value)
    return MASK_CHAR * len(value)


@dataclass(frozen=True, slots=True)
class Protected:
    """A message split for the trace: clear fields, sealed fields, and the
    ids of fields that were masked (their masked value is in ``clear``)."""

    clear: dict[str, str]
    sealed: dict[str, str]
    masked: tuple[str, ...]


def protect(fields: Mapping[str, str], sealer: FieldSealer | None) -> Protected:
    """Seal (``sealer`` given) or mask (``None``) every protected field."""
    clear: dict[str, str] = {}
    sealed: dict[str, str] = {}
    masked: list[str] = []
    for key, value in fields.items():
        if key not in PROTECTED_FIELDS:
            clear[key] = value
        elif sealer is not None:
            sealed[key] = sealer.seal(key, value)
        else:
            clear[key] = mask_value(key, value)
            masked.append(key)
    return Protected(clear, sealed, tuple(masked))


def trace_key(store: KeyStore) -> tuple[str, bytes, str]:
    """``(name, key, kcv)`` of the trace key: the key named
    :data:`TRACE_KEY_NAME`, else the store's only AES data key (D0)."""
    if TRACE_KEY_NAME in store:
        name = TRACE_KEY_NAME
    else:
        names = [n for n in store.names_with_usage(tr31.USAGE_DATA_ENCRYPTION)
                 if store.info(n).algorithm == "A"]
        if len(names) != 1:
            raise TraceError(
                "no trace key in the key store: create one with `iso-switch keys generate "
                f"{TRACE_KEY_NAME} --usage D0 --algorithm A --length 32 --mode B`, or set "
                "trace.masked = true"
            )
        name = names[0]
    try:
        key = store.key_for(name, (tr31.USAGE_DATA_ENCRYPTION,), tr31.MODE_ENCRYPT)
        store.key_for(name, (tr31.USAGE_DATA_ENCRYPTION,), tr31.MODE_DECRYPT)
    except SecurityError as exc:
        raise TraceError(f"key {name!r} cannot serve as the trace key: {exc}") from None
    if len(key) != AES_256_KEY_BYTES or store.info(name).algorithm != "A":
        raise TraceError(f"key {name!r} cannot serve as the trace key: it must be AES-256")
    return name, key, store.info(name).kcv


# -- lines (sans-I/O) ----------------------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class TracedListener:
    """How a recorded listener spoke: what a replay needs to speak it too."""

    dialect: str
    framing: str = "binary2"
    tpdu: bool = False


def header_line(trace_id: str, started: datetime, masked: bool, key_name: str | None,
                key_kcv: str | None,
                listeners: Mapping[str, TracedListener] | None = None) -> str:
    return json.dumps({
        "kind": "header", "v": TRACE_FORMAT_VERSION, "trace": trace_id,
        "started": _iso(started), "masked": masked, "key": key_name, "key_kcv": key_kcv,
        "listeners": {name: {"dialect": lc.dialect, "framing": lc.framing, "tpdu": lc.tpdu}
                      for name, lc in (listeners or {}).items()},
    }, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame as the hot path hands it over: raw bytes, not decoded yet."""

    at_s: float
    conn: int
    seq: int
    listener: str
    dialect: str
    direction: Direction
    message: bytes = field(repr=False)
    tpdu: bytes | None = None


def message_line(trace_id: str, started: datetime, frame: Frame, codec: Codec,
                 sealer: FieldSealer | None) -> str:
    """The JSON line of one frame: decoded, protected fields sealed or masked."""
    line: dict[str, Any] = {
        "kind": "message", "trace": trace_id, "at_s": round(frame.at_s, 6),
        "time": _iso(started + timedelta(seconds=frame.at_s)), "conn": frame.conn,
        "seq": frame.seq, "listener": frame.listener, "dialect": frame.dialect,
        "dir": frame.direction,
    }
    if frame.tpdu is not None:
        line["tpdu"] = frame.tpdu.hex().upper()
    try:
        fields = codec.decode(frame.message)
    except CodecError:
        line["error"] = "undecodable"
        line["bytes"] = len(frame.message)
        return json.dumps(line, separators=(",", ":"))
    protected = protect(fields, sealer)
    line["msg"] = protected.clear
    line["sealed"] = protected.sealed
    line["masked"] = list(protected.masked)
    return json.dumps(line, separators=(",", ":"))


def gap_line(trace_id: str, dropped: int) -> str:
    return json.dumps({"kind": "gap", "trace": trace_id, "dropped": dropped},
                      separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class TraceHeader:
    trace_id: str
    started: str
    masked: bool
    key_name: str | None
    key_kcv: str | None
    #: Listener name -> how it framed messages (empty in older traces).
    listeners: Mapping[str, TracedListener] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TraceEntry:
    """One recorded frame as read back. ``fields`` holds the clear (and,
    in a masked trace, the masked) fields; ``sealed`` the sealed ones."""

    trace_id: str
    at_s: float
    time: str
    conn: int
    seq: int
    listener: str
    dialect: str
    direction: Direction
    fields: dict[str, str] = field(repr=False)
    sealed: dict[str, str] = field(repr=False)
    masked: tuple[str, ...]
    error: str | None = None
    #: The frame's TPDU (hex) on a TPDU listener.
    tpdu: str | None = None

    def restored(self, sealer: FieldSealer | None) -> dict[str, str]:
        """Every field in clear (sealed ones opened). Raises
        :class:`TraceError` when sealed fields exist and no key is given."""
        if not self.sealed:
            return dict(self.fields)
        if sealer is None:
            raise TraceError("the trace holds sealed fields: the trace key is needed")
        opener = sealer.for_trace(self.trace_id)
        return {**self.fields, **{k: opener.open(k, v) for k, v in self.sealed.items()}}


@dataclass(frozen=True, slots=True)
class TraceGap:
    trace_id: str
    dropped: int


TraceItem = TraceHeader | TraceEntry | TraceGap


def parse_lines(lines: Iterable[str]) -> Iterator[TraceItem]:
    """Read a trace's lines back. A malformed line is a :class:`TraceError`
    naming its number (never its content: it could hold anything)."""
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        if len(text) > TRACE_LINE_CHARS_MAX:
            raise TraceError(f"trace line {number} is too long")
        try:
            yield _parse_line(json.loads(text))
        except (ValueError, KeyError, TypeError) as exc:
            raise TraceError(f"trace line {number} is malformed ({type(exc).__name__})") from None


def _str_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise TypeError("expected an object of strings")
    return dict(value)


def _parse_line(data: Any) -> TraceItem:
    kind = data["kind"]
    if kind == "header":
        if data["v"] != TRACE_FORMAT_VERSION:
            raise ValueError("unknown trace format version")
        return TraceHeader(str(data["trace"]), str(data["started"]), bool(data["masked"]),
                           data.get("key"), data.get("key_kcv"),
                           _listeners(data.get("listeners", {})))
    if kind == "gap":
        return TraceGap(str(data["trace"]), int(data["dropped"]))
    if kind != "message":
        raise ValueError("unknown line kind")
    direction = data["dir"]
    if direction not in DIRECTIONS:
        raise ValueError("unknown direction")
    error = data.get("error")
    return TraceEntry(
        trace_id=str(data["trace"]), at_s=float(data["at_s"]), time=str(data["time"]),
        conn=int(data["conn"]), seq=int(data["seq"]), listener=str(data["listener"]),
        dialect=str(data["dialect"]), direction=direction,
        fields=_str_map(data.get("msg", {})), sealed=_str_map(data.get("sealed", {})),
        masked=tuple(str(k) for k in data.get("masked", ())),
        error=None if error is None else str(error),
        tpdu=None if data.get("tpdu") is None else str(data["tpdu"]),
    )


def _listeners(value: Any) -> dict[str, TracedListener]:
    if not isinstance(value, dict):
        raise TypeError("expected an object of listeners")
    listeners = {}
    for name, info in value.items():
        if not isinstance(info["tpdu"], bool):
            raise TypeError("a listener's tpdu is true or false")
        listeners[str(name)] = TracedListener(str(info["dialect"]), str(info["framing"]),
                                              info["tpdu"])
    return listeners


def read_trace(path: str | os.PathLike[str]) -> list[TraceItem]:
    try:
        with open(path, encoding="utf-8") as handle:
            return list(parse_lines(handle))
    except OSError as exc:
        raise TraceError(f"cannot read trace {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise TraceError(f"trace {path} is not UTF-8 text") from None


# -- the recorder (trio shell) -------------------------------------------------


class TraceRecorder:
    """Records frames to a JSON Lines file without slowing the hot path.

    ``record_in`` / ``record_out`` append the raw frame to a bounded list
    (no decoding, no crypto, no I/O); :meth:`run`, a background task, hands
    the list to a worker thread every :data:`TRACE_FLUSH_INTERVAL_S` or
    :data:`TRACE_FLUSH_LINES` frames, which decodes, seals and appends the
    lines. :meth:`close` makes it write everything left and stop.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        sealer: FieldSealer | None,
        key_name: str | None = None,
        key_kcv: str | None = None,
        listeners: Mapping[str, TracedListener] | None = None,
        buffer_lines_max: int = TRACE_BUFFER_LINES_MAX,
        flush_lines: int = TRACE_FLUSH_LINES,
        flush_interval_s: float = TRACE_FLUSH_INTERVAL_S,
    ) -> None:
        """``sealer=None`` records a masked trace."""
        self.path = Path(path)
        self.trace_id = sealer.trace_id if sealer is not None else _new_trace_id()
        self._sealer = sealer
        self._key_name = key_name
        self._key_kcv = key_kcv
        self._listeners = dict(listeners or {})
        self._buffer_lines_max = buffer_lines_max
        self._flush_lines = flush_lines
        self._flush_interval_s = flush_interval_s
        self._buffer: list[Frame] = []
        self._dropped = 0
        self.dropped_total = 0
        self.written_total = 0
        self._connections = 0
        self._requests = 0
        self._started_mono = time.monotonic()
        self._started = datetime.now(UTC)
        self._wake = trio.Event()
        self._closing = False
        self._codecs: dict[str, Codec] = {}  # used only by the writer thread
        self._file: Any = None

    def __repr__(self) -> str:
        return (f"TraceRecorder(path={str(self.path)!r}, trace_id={self.trace_id!r}, "
                f"masked={self.masked})")

    @property
    def masked(self) -> bool:
        return self._sealer is None

    # -- the hot path ----------------------------------------------------

    def next_connection_id(self) -> int:
        self._connections += 1
        return self._connections

    def record_in(self, conn: int, listener: str, dialect: str, message: bytes,
                  tpdu: bytes | None = None) -> int:
        """Record a received message; returns its ``seq`` for :meth:`record_out`."""
        self._requests += 1
        self._append(Frame(time.monotonic() - self._started_mono, conn, self._requests,
                           listener, dialect, "in", message, tpdu))
        return self._requests

    def record_out(self, conn: int, seq: int, listener: str, dialect: str,
                   message: bytes, tpdu: bytes | None = None) -> None:
        """Record the response to request ``seq``."""
        self._append(Frame(time.monotonic() - self._started_mono, conn, seq, listener,
                           dialect, "out", message, tpdu))

    def _append(self, frame: Frame) -> None:
        if len(self._buffer) >= self._buffer_lines_max:
            self._dropped += 1
            return
        self._buffer.append(frame)
        if len(self._buffer) >= self._flush_lines:
            self._wake.set()

    # -- the flusher -----------------------------------------------------

    def close(self) -> None:
        """Write everything recorded so far, then stop :meth:`run`."""
        self._closing = True
        self._wake.set()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        # The header goes out at once: the file exists (and a path that
        # cannot be written fails) before the first frame arrives.
        try:
            await trio.to_thread.run_sync(self._write, [], 0)
        except OSError as exc:
            raise TraceError(f"cannot write the trace {self.path}: {exc.strerror}") from None
        log.info("recording a message trace", path=str(self.path), trace_id=self.trace_id,
                 masked=self.masked, key=self._key_name)
        task_status.started()
        try:
            while not self._closing:
                with trio.move_on_after(self._flush_interval_s):
                    await self._wake.wait()
                self._wake = trio.Event()
                await self._flush()
        finally:
            with trio.CancelScope(shield=True):
                await self._flush()
                await trio.to_thread.run_sync(self._close_file)

    async def _flush(self) -> None:
        batch, self._buffer = self._buffer, []
        dropped, self._dropped = self._dropped, 0
        if batch or dropped:
            await trio.to_thread.run_sync(self._write, batch, dropped)

    # -- the writer thread -----------------------------------------------

    def _codec(self, dialect: str) -> Codec:
        codec = self._codecs.get(dialect)
        if codec is None:
            codec = self._codecs[dialect] = Codec(load_spec(dialect))
        return codec

    def _write(self, batch: list[Frame], dropped: int) -> None:
        lines: list[str] = []
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                                 TRACE_FILE_MODE)
            self._file = os.fdopen(descriptor, "a", encoding="utf-8")
            lines.append(header_line(self.trace_id, self._started, self.masked,
                                     self._key_name, self._key_kcv, self._listeners))
        if dropped:
            lines.append(gap_line(self.trace_id, dropped))
            self.dropped_total += dropped
        for frame in batch:
            lines.append(message_line(self.trace_id, self._started, frame,
                                      self._codec(frame.dialect), self._sealer))
        if lines:
            self._file.write("\n".join(lines) + "\n")
            self._file.flush()
        self.written_total += len(batch)

    def _close_file(self) -> None:
        if self._file is not None:
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None


def _check_writable(path: Path) -> None:
    """Fail at startup, with a clear reason, when the trace cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, TRACE_FILE_MODE))
    except OSError as exc:
        raise TraceError(f"cannot write the trace {path}: {exc.strerror}") from None


def _new_trace_id() -> str:
    return secrets.token_hex(TRACE_ID_BYTES)


def sealer_from_store(store: KeyStore, trace_id: str | None = None
                      ) -> tuple[FieldSealer, str, str]:
    """``(sealer, key name, key kcv)`` over the store's trace key."""
    name, key, kcv = trace_key(store)
    return FieldSealer(key, trace_id or _new_trace_id()), name, kcv


def open_trace(config: Config, key_store: KeyStore | None) -> TraceRecorder | None:
    """The recorder ``config.trace`` asks for (``None`` when tracing is off).
    An unmasked trace needs the trace key: :class:`TraceError` without it."""
    settings = config.trace
    if not settings.enabled:
        return None
    path = config.resolve_path(settings.path)
    _check_writable(path)
    listeners = {lc.name: TracedListener(lc.dialect, str(lc.framing), lc.tpdu)
                 for lc in config.listeners}
    if settings.masked:
        return TraceRecorder(path, sealer=None, listeners=listeners)
    if key_store is None:
        raise TraceError("an unmasked trace needs the key store (or set trace.masked = true)")
    sealer, name, kcv = sealer_from_store(key_store)
    return TraceRecorder(path, sealer=sealer, key_name=name, key_kcv=kcv, listeners=listeners)


__all__ = [
    "PROTECTED_FIELDS",
    "TRACE_KEY_NAME",
    "FieldSealer",
    "Protected",
    "TraceEntry",
    "TraceError",
    "TraceGap",
    "TraceHeader",
    "TraceItem",
    "TraceRecorder",
    "TracedListener",
    "mask_value",
    "open_trace",
    "parse_lines",
    "protect",
    "read_trace",
    "sealer_from_store",
    "trace_key",
]
