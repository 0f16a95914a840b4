"""An async (trio) connection to the switch with pipelined request/response
matching.

Interface.md section 1: many messages may be in flight on one connection
and each answer comes back as soon as it is ready, so answers can overtake
each other. :class:`SwitchClient` therefore runs one reader task that cuts
frames with our :class:`~iso_switch.protocol.Framer` and hands each answer
to whoever waits for its *match key*: the response MTI class (``021`` for
an 0200 or 0201), DE11 and DE41. Answers nobody waits for (after
:meth:`SwitchClient.send`) queue for :meth:`SwitchClient.receive`, bounded.

Use it as ``async with open_switch_client(host, port) as client:``; the
context owns the reader (and optional keep-alive) task.
"""

from __future__ import annotations

import argparse
import math
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from typing import Final, NamedTuple

import trio

from iso_switch.codec import Codec, CodecError
from iso_switch.protocol.errors import ProtocolError
from iso_switch.protocol.framing import (
    RECEIVE_CHUNK_BYTES,
    TPDU_BYTES,
    Frame,
    Framer,
    FramingKind,
    max_length_for,
)
from simulators._device import DEFAULT_DIALECT, Sealed, codec_for

#: A terminal gives up on an answer after about 30 s.
DEFAULT_TIMEOUT_S: Final = 30.0
#: Answers nobody asked for, kept for :meth:`SwitchClient.receive`.
UNCLAIMED_MAX: Final = 1024
#: Requests awaiting an answer on one connection (the switch's default
#: in-flight bound is 64; waiting beyond it only queues in the kernel).
MAX_IN_FLIGHT_DEFAULT: Final = 256
#: The switch accepts frames of up to 8 KiB by default; ours are smaller,
#: but answers are read with room to spare.
MAX_FRAME_BYTES: Final = 65535


class SwitchClientError(Exception):
    """The connection failed (closed, broken, or a bad frame from the switch)."""


class ConnectionClosed(SwitchClientError):
    """The switch closed the connection before answering."""


class ResponseTimeout(SwitchClientError):
    """No answer within the timeout (the request may still be decided)."""


class Response(NamedTuple):
    """A decoded answer and its bytes (MAC checks need the bytes)."""

    fields: dict[str, str]
    raw: bytes

    def __repr__(self) -> str:
        return (f"Response({self.fields.get('t', '?')}, rc={self.fields.get('39')}, "
                f"<{len(self.raw)} bytes>)")


MatchKey = tuple[str, str, str]


def response_class(mti: str) -> str:
    """First three digits of the response MTI: ``0200``/``0201`` -> ``021``."""
    return mti[:2] + str(int(mti[2]) + 1 if mti[2].isdigit() else 0)


def request_key(fields: Mapping[str, str]) -> MatchKey:
    """What pairs a request with its answer: response MTI class, DE11, DE41."""
    return (response_class(fields.get("t", "0000")), fields.get("11", ""), fields.get("41", ""))


def response_key(fields: Mapping[str, str]) -> MatchKey:
    return (fields.get("t", "")[:3], fields.get("11", ""), fields.get("41", ""))


class _Waiter:
    __slots__ = ("event", "response")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.response: Response | None = None


class SwitchClient:
    """One TCP connection to a listener; safe for many tasks at once.

    ``call`` sends and waits for the matching answer; ``send`` only sends
    (its answer goes to ``receive``). Counters: ``sent``, ``received``,
    ``unmatched`` (answers nobody waited for, dropped beyond
    :data:`UNCLAIMED_MAX`), ``undecodable``.
    """

    def __init__(self, stream: trio.abc.Stream, codec: Codec, *,
                 framing: FramingKind | str = FramingKind.BINARY2,
                 max_in_flight: int = MAX_IN_FLIGHT_DEFAULT,
                 timeout_s: float = DEFAULT_TIMEOUT_S, echo_target: bool = False,
                 tpdu: bytes | None = None) -> None:
        self.stream = stream
        # Against an echo server (benchmarks.echo_server) the answer to a
        # request is the request itself: its key is its own MTI class.
        self._request_key = response_key if echo_target else request_key
        self.codec = codec
        self.timeout_s = timeout_s
        # On a TPDU listener every request carries this TPDU (answers come
        # back with it swapped, and are matched by their fields alone).
        self.tpdu = tpdu
        # As large as the header can say (9999 for ascii4/bcd2).
        max_frame_bytes = min(MAX_FRAME_BYTES, max_length_for(framing))
        self._framer = Framer(framing, tpdu=tpdu is not None, max_frame_bytes=max_frame_bytes)
        self._keep_alive = Framer(framing, max_frame_bytes=max_frame_bytes).frame(b"")
        self._send_lock = trio.StrictFIFOLock()
        self._in_flight = trio.Semaphore(max_in_flight)
        self._waiters: dict[MatchKey, deque[_Waiter]] = {}
        self._unclaimed: deque[Response] = deque(maxlen=UNCLAIMED_MAX)
        self._unclaimed_event = trio.Event()
        self._closed: SwitchClientError | None = None
        self._closed_event = trio.Event()
        self.sent = 0
        self.received = 0
        self.unmatched = 0
        self.undecodable = 0

    # -- sending --------------------------------------------------------------

    async def send(self, raw: bytes | Sealed, tpdu: bytes | None = None) -> None:
        """Frame and send one message; do not wait for its answer. ``tpdu``
        (TPDU listeners only) replaces the client's own for this message."""
        message = raw.raw if isinstance(raw, Sealed) else raw
        await self._send_frame(self._frame(message, tpdu))

    def _frame(self, message: bytes, tpdu: bytes | None = None) -> bytes:
        return self._framer.frame(message, tpdu if tpdu is not None else self.tpdu)

    async def send_keep_alive(self) -> None:
        """A zero-length frame: tells the switch this connection is alive
        (no TPDU either: a TPDU listener takes length 0 as a keep-alive)."""
        await self._send_frame(self._keep_alive)

    async def _send_frame(self, data: bytes) -> None:
        if self._closed is not None:
            raise self._closed
        async with self._send_lock:
            await self._send_locked(data)

    async def _send_locked(self, data: bytes) -> None:
        """Send with the send lock already held."""
        if self._closed is not None:
            raise self._closed
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._close(ConnectionClosed("the connection to the switch broke"))
            raise ConnectionClosed("the connection to the switch broke") from exc
        self.sent += 1

    async def call(self, request: bytes | Sealed | Callable[[], Sealed],
                   timeout_s: float | None = None) -> Response:
        """Send ``request`` and return its answer (matched by response MTI
        class + DE11 + DE41, so pipelined answers may come in any order).

        ``request`` may be a function that builds and seals it: it is then
        called under the send lock, so requests pipelined on one connection
        leave in the order their DUKPT counters were taken (the switch
        refuses a counter more than 64 below the highest it accepted).
        Raises :class:`ResponseTimeout` or :class:`ConnectionClosed`."""
        waiter = _Waiter()
        key: MatchKey | None = None
        async with self._in_flight:
            try:
                with trio.move_on_after(self.timeout_s if timeout_s is None else timeout_s):
                    if callable(request):
                        async with self._send_lock:
                            built = request()
                            key = self._register(built.fields, waiter)
                            await self._send_locked(self._frame(built.raw))
                    else:
                        if isinstance(request, Sealed):
                            fields: Mapping[str, str] = request.fields
                            raw = request.raw
                        else:
                            raw = request
                            fields = self.codec.decode(raw)
                        key = self._register(fields, waiter)
                        await self.send(raw)
                    await waiter.event.wait()
            finally:
                if key is not None:
                    self._forget(key, waiter)
        if waiter.response is not None:
            return waiter.response
        if self._closed is not None:
            raise self._closed
        raise ResponseTimeout("no answer from the switch in time")

    def _register(self, fields: Mapping[str, str], waiter: _Waiter) -> MatchKey:
        key = self._request_key(fields)
        self._waiters.setdefault(key, deque()).append(waiter)
        return key

    def _forget(self, key: MatchKey, waiter: _Waiter) -> None:
        queue = self._waiters.get(key)
        if queue is None:
            return
        with suppress(ValueError):  # already answered and popped
            queue.remove(waiter)
        if not queue:
            del self._waiters[key]

    async def receive(self, timeout_s: float | None = None) -> Response:
        """The oldest answer no ``call`` claimed (e.g. after ``send``)."""
        with trio.move_on_after(self.timeout_s if timeout_s is None else timeout_s):
            while not self._unclaimed:
                if self._closed is not None:
                    raise self._closed
                self._unclaimed_event = trio.Event()
                await self._unclaimed_event.wait()
            return self._unclaimed.popleft()
        raise ResponseTimeout("no answer from the switch in time")

    # -- receiving ------------------------------------------------------------

    async def run_reader(self) -> None:
        """Read answers until the connection ends (the context runs this)."""
        try:
            while True:
                try:
                    chunk = await self.stream.receive_some(RECEIVE_CHUNK_BYTES)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    break
                if not chunk:
                    break
                self._framer.feed(chunk)
                for event in self._framer.drain():
                    if isinstance(event, Frame):
                        self._dispatch(event.message)
        except ProtocolError as exc:
            self._close(SwitchClientError(f"bad frame from the switch: {exc}"))
        finally:
            self._close(ConnectionClosed("the switch closed the connection"))

    def _dispatch(self, raw: bytes) -> None:
        try:
            fields = self.codec.decode(raw)
        except CodecError:
            self.undecodable += 1
            return
        self.received += 1
        response = Response(fields, raw)
        queue = self._waiters.get(response_key(fields))
        if queue:
            waiter = queue.popleft()
            waiter.response = response
            waiter.event.set()
            return
        self.unmatched += 1
        self._unclaimed.append(response)
        self._unclaimed_event.set()

    def _close(self, error: SwitchClientError) -> None:
        if self._closed is not None:
            return
        self._closed = error
        self._closed_event.set()
        self._unclaimed_event.set()
        for queue in self._waiters.values():
            for waiter in queue:
                waiter.event.set()

    @property
    def closed(self) -> bool:
        return self._closed is not None

    async def keep_alive(self, interval_s: float) -> None:
        """Send a keep-alive frame every ``interval_s`` until closed."""
        while self._closed is None:
            with trio.move_on_after(interval_s):
                await self._closed_event.wait()
            if self._closed is None:
                await self.send_keep_alive()

    async def aclose(self) -> None:
        self._close(ConnectionClosed("the client closed the connection"))
        await self.stream.aclose()


def parse_tpdu(text: str) -> bytes:
    """A ``--tpdu`` argument: 10 hex digits (ID, destination, source), e.g.
    ``6000120000``. Raises :class:`ValueError` (argparse shows it)."""
    try:
        value = bytes.fromhex(text)
    except ValueError:
        value = b""
    if len(value) != TPDU_BYTES:
        raise ValueError(f"a TPDU is {2 * TPDU_BYTES} hex digits, e.g. 6000120000")
    return value


def tpdu_argument(text: str) -> bytes:
    """:func:`parse_tpdu` as an argparse ``type`` (its message shown)."""
    try:
        return parse_tpdu(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


@asynccontextmanager
async def open_switch_client(
    host: str = "127.0.0.1", port: int = 8583, *, dialect: str = DEFAULT_DIALECT,
    framing: FramingKind | str = FramingKind.BINARY2, timeout_s: float = DEFAULT_TIMEOUT_S,
    keep_alive_s: float | None = None, max_in_flight: int = MAX_IN_FLIGHT_DEFAULT,
    echo_target: bool = False, tpdu: bytes | None = None,
) -> AsyncIterator[SwitchClient]:
    """Connect to a listener and run the reader (and, with
    ``keep_alive_s``, a keep-alive sender) until the block ends.
    ``echo_target``: the peer is an echo server returning each request
    unchanged (the end-to-end benchmark's baseline). ``tpdu``: the
    listener frames with a TPDU; every request carries this one."""
    if keep_alive_s is not None and not (0 < keep_alive_s < math.inf):
        raise ValueError("keep_alive_s must be a positive number of seconds")
    stream = await trio.open_tcp_stream(host, port)
    client = SwitchClient(stream, codec_for(dialect), framing=framing,
                          max_in_flight=max_in_flight, timeout_s=timeout_s,
                          echo_target=echo_target, tpdu=tpdu)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.run_reader)
        if keep_alive_s is not None:
            nursery.start_soon(client.keep_alive, keep_alive_s)
        try:
            yield client
        finally:
            await client.aclose()
            nursery.cancel_scope.cancel()
