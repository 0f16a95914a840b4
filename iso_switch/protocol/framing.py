"""Length-prefixed framing of ISO 8583 messages over a byte stream, sans-I/O.

TCP splits and joins what the peer wrote: one ``recv`` is never one message.
A :class:`Framer` per connection reassembles frames from whatever chunks the
server receives, the way h11's ``ReceiveBuffer`` does for HTTP: the server
calls :meth:`Framer.feed` with each chunk and then drains
:meth:`Framer.events` (or calls :meth:`Framer.next_frame` until it returns
:data:`NEED_DATA`). The framer never touches a socket or a clock, so it is
tested and benchmarked by feeding bytes.

Wire format (interface section 1 and the configurable framings)::

    length header | [TPDU, 5 bytes] | message
    <-- kind -->    <------ length counts these ------>

- ``binary2``: 2-byte unsigned big-endian length (the default listeners).
- ``bcd2``: 2-byte packed BCD length, 0-9999.
- ``ascii4``: 4 ASCII decimal digits, 0-9999.

The length never counts the header itself. A zero-length frame is a
keep-alive and surfaces as :data:`KEEP_ALIVE`, never as an error. On a TPDU
listener a frame holding only the TPDU is a keep-alive too (some terminals
send their heartbeats that way); it surfaces as a :class:`KeepAlive` with
that TPDU.

Limits: a length header above ``max_frame_bytes`` raises
:class:`~iso_switch.protocol.errors.FrameTooLarge` as soon as the header is
read, before any of the body is buffered; the unread buffer is bounded by
``max_buffer_bytes`` (one maximal frame plus one receive chunk), so a caller
that drains between feeds can never trip it.

Speed: the buffer is one ``bytearray`` with a read offset; consumed bytes are
dropped once per :meth:`Framer.feed`, not once per frame, and each message is
copied out into the ``bytes`` it is returned as (through a ``memoryview``
for large messages; smaller ones take a slice, which is cheaper there). There
is no quadratic copying however the stream is split.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, NamedTuple

from iso_switch.protocol.errors import (
    BadLengthHeader,
    BufferOverflow,
    FrameTooLarge,
    FrameTooShort,
    LocalProtocolError,
    MessageTooLarge,
    RemoteProtocolError,
)

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "KEEP_ALIVE",
    "MIN_MAX_FRAME_BYTES",
    "NEED_DATA",
    "RECEIVE_CHUNK_BYTES",
    "TPDU_BYTES",
    "Frame",
    "Framer",
    "FramingKind",
    "KeepAlive",
    "NeedData",
    "max_length_for",
    "swap_tpdu",
]

#: Default upper bound on the length a header may announce (TPDU included),
#: interface section 1: "larger than the configured maximum (default 8 KiB)".
DEFAULT_MAX_FRAME_BYTES: Final = 8192

#: The receive size the server should ask the socket for. It is part of the
#: framer's buffer bound: one maximal frame still incomplete plus one chunk.
RECEIVE_CHUNK_BYTES: Final = 65536

#: A TPDU is 1 byte of ID (usually 0x60) + 2 bytes destination + 2 bytes
#: source address.
TPDU_BYTES: Final = 5

#: A frame of at least this many bytes is the smallest the server is
#: expected to limit to; a smaller maximum could not hold an 0800.
MIN_MAX_FRAME_BYTES: Final = 64


# Up to this size a message is copied out with a plain slice (two copies,
# but both in C with no view object to create); above it through a
# memoryview (one copy). Measured on CPython 3.11: a slice is faster up to
# about 4 KiB, a memoryview ~10% faster at 8 KiB.
_SLICE_COPY_MAX_BYTES: Final = 4096
_new_tuple: Final = tuple.__new__


def _copy_out(buffer: bytearray, start: int, end: int) -> bytes:
    """``bytes(buffer[start:end])`` with the cheapest copy for its size."""
    if end - start <= _SLICE_COPY_MAX_BYTES:
        return bytes(buffer[start:end])
    # The temporary view is released as soon as bytes() returns, before
    # the buffer can be resized again.
    return bytes(memoryview(buffer)[start:end])


class FramingKind(enum.StrEnum):
    """How the length header is written; the value is the config spelling."""

    BINARY2 = "binary2"
    BCD2 = "bcd2"
    ASCII4 = "ascii4"


_HEADER_BYTES: Final[dict[FramingKind, int]] = {
    FramingKind.BINARY2: 2,
    FramingKind.BCD2: 2,
    FramingKind.ASCII4: 4,
}

_MAX_LENGTH: Final[dict[FramingKind, int]] = {
    FramingKind.BINARY2: 0xFFFF,
    FramingKind.BCD2: 9999,
    FramingKind.ASCII4: 9999,
}

# Packed-BCD byte -> 0..99, or -1 for a nibble above 9. A table lookup per
# header byte is the cheapest check-and-decode in pure Python.
_BCD_VALUE: Final[tuple[int, ...]] = tuple(
    (b >> 4) * 10 + (b & 0x0F) if (b >> 4) <= 9 and (b & 0x0F) <= 9 else -1 for b in range(256)
)


def max_length_for(kind: FramingKind | str) -> int:
    """The largest length a header of ``kind`` can express (65535 or 9999)."""
    return _MAX_LENGTH[FramingKind(kind)]


def swap_tpdu(tpdu: bytes) -> bytes:
    """The TPDU of a reply: same ID, destination and source swapped.

    A terminal addresses the host in the destination and itself in the
    source; the reply must travel back the other way.
    """
    if len(tpdu) != TPDU_BYTES:
        raise LocalProtocolError(f"a TPDU is {TPDU_BYTES} bytes, got {len(tpdu)}")
    return tpdu[0:1] + tpdu[3:5] + tpdu[1:3]


class Frame(NamedTuple):
    """One complete message as received (length header and TPDU removed).

    Immutable like every event; a ``NamedTuple`` rather than a frozen
    dataclass because it is built once per message on the hot path and
    builds in half the time. The repr shows the size only: the message may
    hold a PAN, track data or a PIN block, and a repr ends up in logs and
    tracebacks.
    """

    message: bytes
    tpdu: bytes | None = None

    def __repr__(self) -> str:
        tpdu = "" if self.tpdu is None else f", tpdu={self.tpdu.hex().upper()}"
        return f"Frame(<{len(self.message)} bytes>{tpdu})"


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """A zero-length frame (or a TPDU-only frame): the peer is alive.

    The server ignores it apart from, perhaps, resetting an idle timer.
    """

    tpdu: bytes | None = None


class NeedData:
    """Sentinel type: no complete frame is buffered; feed more bytes."""

    _instance: NeedData | None = None

    def __new__(cls) -> NeedData:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NEED_DATA"


#: The single :class:`NeedData` value (compare with ``is``).
NEED_DATA: Final = NeedData()
#: The keep-alive event of listeners without TPDU (compare with ``==``).
KEEP_ALIVE: Final = KeepAlive()

Event = Frame | KeepAlive


class Framer:
    """Reassembles incoming frames and builds outgoing ones for one connection.

    Not thread-safe, no I/O: one per connection, driven by its task.
    After a :class:`RemoteProtocolError` the framer stays failed and raises
    the same error again: the connection must be closed.
    """

    __slots__ = (
        "_buffer",
        "_error",
        "_header_bytes",
        "_kind",
        "_max_buffer_bytes",
        "_max_frame_bytes",
        "_position",
        "_tpdu",
    )

    def __init__(
        self,
        kind: FramingKind | str = FramingKind.BINARY2,
        *,
        tpdu: bool = False,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_buffer_bytes: int | None = None,
    ) -> None:
        """Configure a framer; bad settings raise ``ValueError`` (config bugs).

        ``max_frame_bytes`` bounds the length a header may announce (TPDU
        included) and must fit the header kind (9999 for ``bcd2`` and
        ``ascii4``). ``max_buffer_bytes`` defaults to one maximal frame plus
        :data:`RECEIVE_CHUNK_BYTES`.
        """
        self._kind = FramingKind(kind)
        self._header_bytes = _HEADER_BYTES[self._kind]
        self._tpdu = tpdu
        if not MIN_MAX_FRAME_BYTES <= max_frame_bytes <= _MAX_LENGTH[self._kind]:
            raise ValueError(
                f"max_frame_bytes must be between {MIN_MAX_FRAME_BYTES} and "
                f"{_MAX_LENGTH[self._kind]} for {self._kind.value} framing, got {max_frame_bytes}"
            )
        self._max_frame_bytes = max_frame_bytes
        frame_bound = self._header_bytes + max_frame_bytes
        if max_buffer_bytes is None:
            max_buffer_bytes = frame_bound + RECEIVE_CHUNK_BYTES
        if max_buffer_bytes < frame_bound:
            raise ValueError(
                f"max_buffer_bytes must hold at least one maximal frame ({frame_bound} bytes)"
            )
        self._max_buffer_bytes = max_buffer_bytes
        self._buffer = bytearray()
        self._position = 0
        self._error: RemoteProtocolError | None = None

    # -- configuration, read-only -------------------------------------------

    @property
    def kind(self) -> FramingKind:
        return self._kind

    @property
    def tpdu(self) -> bool:
        """Whether every frame carries a 5-byte TPDU after the header."""
        return self._tpdu

    @property
    def max_frame_bytes(self) -> int:
        return self._max_frame_bytes

    @property
    def max_buffer_bytes(self) -> int:
        return self._max_buffer_bytes

    # -- state --------------------------------------------------------------

    @property
    def buffered_bytes(self) -> int:
        """Bytes received and not yet returned as a frame."""
        return len(self._buffer) - self._position

    @property
    def has_partial_frame(self) -> bool:
        """True when part of a frame is buffered (after draining all events).

        Drives the per-frame read deadline (``frame_read_timeout_s``): after
        each feed-and-drain, if events came out the deadline restarts (a new
        frame may have begun), if this is false there is none, and if no
        events came out it keeps running. So a peer sending one byte a second
        never completes a frame in time, while a busy pipelined stream, which
        nearly always ends a chunk mid-frame, is never cut off.
        """
        return len(self._buffer) > self._position

    # -- incoming -----------------------------------------------------------

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes. An empty ``data`` (EOF) is accepted and ignored;
        the caller decides what EOF with :attr:`has_partial_frame` means."""
        if self._error is not None:
            raise self._error
        buffer = self._buffer
        if self._position:
            # Drop everything already returned, once per feed: amortised
            # linear, and CPython deletes a bytearray prefix without moving
            # the rest when it can.
            del buffer[: self._position]
            self._position = 0
        if len(buffer) + len(data) > self._max_buffer_bytes:
            raise BufferOverflow(len(buffer) + len(data), self._max_buffer_bytes)
        buffer += data

    def next_frame(self) -> Frame | KeepAlive | NeedData:
        """The next complete event, or :data:`NEED_DATA`.

        Raises :class:`~iso_switch.protocol.errors.FrameTooLarge`,
        :class:`~iso_switch.protocol.errors.BadLengthHeader` or
        :class:`~iso_switch.protocol.errors.FrameTooShort` (all remote
        errors) as soon as the offending header is buffered.
        """
        if self._error is not None:
            raise self._error
        buffer = self._buffer
        position = self._position
        header_bytes = self._header_bytes
        if len(buffer) - position < header_bytes:
            return NEED_DATA
        if self._kind is FramingKind.BINARY2:
            length = (buffer[position] << 8) | buffer[position + 1]
        else:
            length = self._decode_slow_header(buffer, position)
        if length > self._max_frame_bytes:
            self._error = FrameTooLarge(length, self._max_frame_bytes)
            raise self._error
        start = position + header_bytes
        end = start + length
        if end > len(buffer):
            return NEED_DATA
        self._position = end
        if self._tpdu:
            return self._split_tpdu(buffer, start, end, length)
        if length == 0:
            return KEEP_ALIVE
        return Frame(_copy_out(buffer, start, end))

    def events(self) -> Iterator[Frame | KeepAlive]:
        """Every complete event buffered now, in order; stops at NEED_DATA.

        This is what the server loops over after each :meth:`feed`. A bad
        header is raised from the iteration right after the good frames
        before it were yielded (they are valid requests and get answers).
        """
        yield from self.drain()
        if self._error is not None:
            raise self._error

    def drain(self) -> list[Frame | KeepAlive]:
        """Every complete event buffered now, as a list (the fastest way).

        When a bad header follows some good frames, those frames are
        returned and the error is raised by the next call of any method;
        when nothing good precedes it, it is raised at once.
        """
        if self._error is not None:
            raise self._error
        if self._kind is FramingKind.BINARY2 and not self._tpdu:
            return self._drain_binary2()
        events: list[Frame | KeepAlive] = []
        next_frame = self.next_frame
        try:
            while (event := next_frame()) is not NEED_DATA:
                assert not isinstance(event, NeedData)
                events.append(event)
        except RemoteProtocolError:
            if not events:
                raise
        return events

    def _drain_binary2(self) -> list[Frame | KeepAlive]:
        # next_frame() inlined for the default framing, the hot path: one
        # list append per frame, the position written back once. Building
        # the Frame with tuple.__new__ skips NamedTuple's Python-level
        # __new__ (same object, a third of the cost).
        buffer = self._buffer
        buffered = len(buffer)
        position = self._position
        max_frame_bytes = self._max_frame_bytes
        events: list[Frame | KeepAlive] = []
        append = events.append
        while buffered - position >= 2:
            length = (buffer[position] << 8) | buffer[position + 1]
            if length > max_frame_bytes:
                self._error = FrameTooLarge(length, max_frame_bytes)
                if not events:
                    self._position = position
                    raise self._error
                break
            end = position + 2 + length
            if end > buffered:
                break
            if length == 0:
                append(KEEP_ALIVE)
            elif length <= _SLICE_COPY_MAX_BYTES:
                append(_new_tuple(Frame, (bytes(buffer[position + 2 : end]), None)))
            else:
                append(_new_tuple(Frame, (bytes(memoryview(buffer)[position + 2 : end]), None)))
            position = end
        self._position = position
        return events

    def _decode_slow_header(self, buffer: bytearray, position: int) -> int:
        if self._kind is FramingKind.BCD2:
            high = _BCD_VALUE[buffer[position]]
            low = _BCD_VALUE[buffer[position + 1]]
            if high < 0 or low < 0:
                self._error = BadLengthHeader(self._kind.value)
                raise self._error
            return high * 100 + low
        digits = bytes(buffer[position : position + 4])
        if not digits.isdigit():
            self._error = BadLengthHeader(self._kind.value)
            raise self._error
        return int(digits)

    def _split_tpdu(
        self, buffer: bytearray, start: int, end: int, length: int
    ) -> Frame | KeepAlive:
        if length == 0:
            return KEEP_ALIVE
        if length < TPDU_BYTES:
            self._error = FrameTooShort(length, TPDU_BYTES)
            raise self._error
        tpdu = bytes(buffer[start : start + TPDU_BYTES])
        if length == TPDU_BYTES:
            return KeepAlive(tpdu)
        return Frame(_copy_out(buffer, start + TPDU_BYTES, end), tpdu)

    # -- outgoing -----------------------------------------------------------

    def frame(self, message: bytes, tpdu: bytes | None = None) -> bytes:
        """Header (+ TPDU) + ``message``, ready to send.

        On a TPDU listener ``tpdu`` is required (usually
        ``swap_tpdu(request_frame.tpdu)``); elsewhere it must be ``None``.
        An empty ``message`` without TPDU builds a keep-alive. Raises
        :class:`~iso_switch.protocol.errors.MessageTooLarge` (a local error)
        when the frame would exceed ``max_frame_bytes``.
        """
        if self._tpdu:
            if tpdu is None or len(tpdu) != TPDU_BYTES:
                raise LocalProtocolError(f"this listener needs a {TPDU_BYTES}-byte TPDU")
            length = TPDU_BYTES + len(message)
        else:
            if tpdu is not None:
                raise LocalProtocolError("this listener sends no TPDU")
            length = len(message)
        if length > self._max_frame_bytes:
            raise MessageTooLarge(length, self._max_frame_bytes)
        header = self._encode_header(length)
        if tpdu is None:
            return header + message
        return b"".join((header, tpdu, message))

    def _encode_header(self, length: int) -> bytes:
        kind = self._kind
        if kind is FramingKind.BINARY2:
            return length.to_bytes(2, "big")
        if kind is FramingKind.BCD2:
            digits = f"{length:04d}"
            return bytes.fromhex(digits)
        return f"{length:04d}".encode("ascii")
