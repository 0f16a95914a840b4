"""A trace's lines (sans-I/O): building them from frames, and reading them
back. The format is described in :mod:`iso_switch.trace`."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from iso_switch.codec import Codec, CodecError, load_spec
from iso_switch.trace._seal import FieldSealer, protect
from iso_switch.trace.errors import TraceError

TRACE_FORMAT_VERSION = 1
# A line longer than this is not one the switch wrote (frames are <= 64 KiB).
TRACE_LINE_CHARS_MAX = 1_048_576

Direction = Literal["in", "out"]
DIRECTIONS: tuple[Direction, ...] = ("in", "out")


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


class TraceEncoder:
    """Turns the frames of one recording into its lines: the header first,
    then a gap line for frames dropped and a message line per frame. It
    keeps one codec per dialect, so it belongs to one writer (the recorder's
    worker thread); the caller writes the lines wherever it likes."""

    def __init__(self, trace_id: str, started: datetime, *, sealer: FieldSealer | None,
                 key_name: str | None = None, key_kcv: str | None = None,
                 listeners: Mapping[str, TracedListener] | None = None) -> None:
        """``sealer=None`` encodes a masked trace."""
        self.trace_id = trace_id
        self.started = started
        self._sealer = sealer
        self._key_name = key_name
        self._key_kcv = key_kcv
        self._listeners = dict(listeners or {})
        self._codecs: dict[str, Codec] = {}

    def __repr__(self) -> str:
        return f"TraceEncoder(trace_id={self.trace_id!r}, masked={self._sealer is None})"

    def header(self) -> str:
        return header_line(self.trace_id, self.started, self._sealer is None,
                           self._key_name, self._key_kcv, self._listeners)

    def lines(self, frames: Iterable[Frame], dropped: int = 0) -> list[str]:
        """A gap line when ``dropped`` frames were lost, then one line per frame."""
        lines = [gap_line(self.trace_id, dropped)] if dropped else []
        lines.extend(message_line(self.trace_id, self.started, frame,
                                  self._codec(frame.dialect), self._sealer)
                     for frame in frames)
        return lines

    def _codec(self, dialect: str) -> Codec:
        codec = self._codecs.get(dialect)
        if codec is None:
            codec = self._codecs[dialect] = Codec(load_spec(dialect))
        return codec


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


__all__ = [
    "DIRECTIONS",
    "TRACE_FORMAT_VERSION",
    "Direction",
    "Frame",
    "TraceEncoder",
    "TraceEntry",
    "TraceGap",
    "TraceHeader",
    "TraceItem",
    "TracedListener",
    "gap_line",
    "header_line",
    "message_line",
    "parse_lines",
    "read_trace",
]
