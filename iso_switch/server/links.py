"""The trio shell around one remote issuer's link machine
(:class:`iso_switch.links.IssuerLink`).

The machine decides; this module does the I/O it asks for: opens TCP
connections, frames and encodes what it sends, decodes what arrives, keeps
time, and hands each request's ending to the task waiting for it. One task
per open connection (reader and writer under one nursery) and one timer
task that sleeps until the machine's next deadline.

Not wired into the switch yet: nothing builds an :class:`IssuerLinkShell`
from the configuration, link MACs and PIN translation are not applied, and
DE11 comes from a per-process counter until the persisted, shared sequence
exists (see docs/links.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

import structlog
import trio

from iso_switch.codec import Codec, CodecError, load_spec
from iso_switch.codec.masking import mask_pan
from iso_switch.links import (
    Answered,
    Close,
    Connect,
    ConnId,
    IssuerDown,
    IssuerLink,
    IssuerUp,
    LinkConfig,
    Output,
    RequestHandle,
    Send,
    StandIn,
    Unmatched,
)
from iso_switch.protocol import (
    RECEIVE_CHUNK_BYTES,
    Frame,
    Framer,
    FramingKind,
    RemoteProtocolError,
    max_length_for,
)

__all__ = ["SEND_QUEUE_MARGIN", "WRITE_FLUSH_TIMEOUT_S", "CountingStan", "IssuerLinkShell"]

log = structlog.get_logger("iso_switch.server.links")

#: Frames queued for one connection's writer beyond its request limit (its
#: own 0800s and the answers to the issuer's). A writer that falls this far
#: behind has a dead peer: the connection is dropped, nothing waits unbounded.
SEND_QUEUE_MARGIN: Final = 8
#: How long a closing connection may take to flush what was queued (its
#: sign-off at shutdown) before it is cut.
WRITE_FLUSH_TIMEOUT_S: Final = 1.0


class CountingStan:
    """DE11 from a per-process counter (000001-999999, wrapping).

    A stand-in for the persisted, cluster-wide sequence that interface
    section 7.2 requires; it is not safe across restarts or nodes.
    """

    def __init__(self, start: int = 0) -> None:
        self._last = start

    def __call__(self) -> str:
        self._last = self._last % 999_999 + 1
        return f"{self._last:06d}"


def wall_clock_de7(_now_s: float) -> str:
    """DE7 is the switch's transmission time in UTC (MMDDhhmmss); the
    machine's ``now_s`` is monotonic, so the shell reads the wall clock."""
    return datetime.now(UTC).strftime("%m%d%H%M%S")


@dataclass(slots=True)
class _Waiter:
    done: trio.Event = field(default_factory=trio.Event)
    outcome: Answered | StandIn | None = None


@dataclass(slots=True)
class _Conn:
    scope: trio.CancelScope
    outbox: trio.MemorySendChannel[bytes] | None = None


class IssuerLinkShell:
    """Runs one issuer's :class:`IssuerLink` over TCP.

    ``await shell.run()`` (usually under ``nursery.start``) until
    :meth:`shutdown` has finished; meanwhile :meth:`forward` sends a request
    and returns its ending, which is never later than ``timeout_s``.
    """

    def __init__(self, config: LinkConfig, *, dialect: str = "ascii87-hex",
                 framing: FramingKind | str = FramingKind.BINARY2,
                 allocate_stan: Callable[[], str] | None = None) -> None:
        self.config = config
        self._link = IssuerLink(config, allocate_stan or CountingStan(), wall_clock_de7)
        self._codec = Codec(load_spec(dialect))
        self._framing = FramingKind(framing)
        self._conns: dict[ConnId, _Conn] = {}
        self._waiters: dict[RequestHandle, _Waiter] = {}
        self._changed = trio.Event()
        self._nursery: trio.Nursery | None = None

    @property
    def link(self) -> IssuerLink:
        """The machine (read it, do not drive it: its outputs must be carried out)."""
        return self._link

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._carry_out(self._link.start(trio.current_time()))
            task_status.started()
            await self._keep_time()
            # Every connection is closed or closing: the nursery ends when
            # their writers have flushed (at most WRITE_FLUSH_TIMEOUT_S).

    async def forward(self, fields: Mapping[str, str]) -> Answered | StandIn:
        """Send one request to the issuer and wait for how it ends."""
        handle, outputs = self._link.submit(fields, trio.current_time())
        waiter = self._waiters[handle] = _Waiter()
        try:
            self._carry_out(outputs)
            await waiter.done.wait()
        finally:
            self._waiters.pop(handle, None)
        assert waiter.outcome is not None
        return waiter.outcome

    def shutdown(self) -> None:
        """Stop forwarding; :meth:`run` returns once every connection signed off."""
        self._carry_out(self._link.shutdown(trio.current_time()))

    def mark_down(self, down: bool) -> None:
        self._link.mark_down(down)

    # --- time ------------------------------------------------------------------

    async def _keep_time(self) -> None:
        while not self._link.finished:
            deadline = self._link.next_deadline()
            with trio.move_on_at(math.inf if deadline is None else deadline):
                await self._changed.wait()
            self._changed = trio.Event()
            self._carry_out(self._link.tick(trio.current_time()), wake=False)

    # --- carrying out the machine's outputs --------------------------------------

    def _carry_out(self, outputs: list[Output], *, wake: bool = True) -> None:
        for out in outputs:
            if isinstance(out, Send):
                self._send(out)
            elif isinstance(out, Answered | StandIn):
                waiter = self._waiters.get(out.handle)
                if waiter is not None:
                    waiter.outcome = out
                    waiter.done.set()
            elif isinstance(out, Connect):
                assert self._nursery is not None
                self._conns[out.conn] = _Conn(trio.CancelScope())
                self._nursery.start_soon(self._connection, out.conn, out.endpoint)
            elif isinstance(out, Close):
                self._close(out)
            elif isinstance(out, Unmatched):
                log.warning("issuer message dropped", issuer=self.config.issuer_id,
                            why=out.why.value, **_summary(out.fields))
            elif isinstance(out, IssuerUp | IssuerDown):
                log.info("issuer up" if isinstance(out, IssuerUp) else "issuer down",
                         issuer=self.config.issuer_id)
        if wake:
            self._changed.set()

    def _send(self, out: Send) -> None:
        conn = self._conns.get(out.conn)
        if conn is None or conn.outbox is None:
            return
        try:
            conn.outbox.send_nowait(self._codec.encode(out.fields))
        except (trio.WouldBlock, trio.ClosedResourceError):
            log.warning("issuer connection not writing: dropped", issuer=self.config.issuer_id,
                        conn=out.conn)
            conn.scope.cancel()

    def _close(self, out: Close) -> None:
        log.info("issuer connection closed", issuer=self.config.issuer_id, conn=out.conn,
                 reason=out.reason.value)
        conn = self._conns.get(out.conn)
        if conn is None:
            return
        if conn.outbox is None:
            conn.scope.cancel()  # still connecting
            return
        conn.outbox.close()  # the writer flushes what is queued (a sign-off), then ends
        conn.scope.deadline = min(conn.scope.deadline,
                                  trio.current_time() + WRITE_FLUSH_TIMEOUT_S)

    # --- one connection ------------------------------------------------------------------

    async def _connection(self, conn: ConnId, endpoint: str) -> None:
        """Connect, then read and write until either side ends the connection.

        However it ends (refused, closed by the issuer, a stuck writer, a
        Close from the machine), the machine hears of it once; for a
        connection it already forgot, that report is ignored.
        """
        state = self._conns[conn]
        try:
            with state.scope:
                host, _, port = endpoint.rpartition(":")
                try:
                    stream = await trio.open_tcp_stream(host, int(port))
                except OSError as exc:
                    log.info("issuer connection refused", issuer=self.config.issuer_id,
                             endpoint=endpoint, error=str(exc))
                else:
                    async with stream:
                        await self._connected(conn, state, stream)
            self._carry_out(self._link.connection_lost(conn, trio.current_time()))
        finally:
            del self._conns[conn]

    async def _connected(self, conn: ConnId, state: _Conn, stream: trio.SocketStream) -> None:
        limit = self.config.max_outstanding_per_connection + SEND_QUEUE_MARGIN
        outbox, inbox = trio.open_memory_channel[bytes](limit)
        state.outbox = outbox
        framer = Framer(self._framing, max_frame_bytes=max_length_for(self._framing))
        self._carry_out(self._link.connected(conn, trio.current_time()))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._write, stream, inbox, framer, nursery.cancel_scope)
            await self._read(conn, stream, framer)
            nursery.cancel_scope.cancel()

    @staticmethod
    async def _write(stream: trio.SocketStream, inbox: trio.MemoryReceiveChannel[bytes],
                     framer: Framer, done: trio.CancelScope) -> None:
        try:
            async for message in inbox:
                await stream.send_all(framer.frame(message))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the connection is gone: ending the reader reports it
        done.cancel()

    async def _read(self, conn: ConnId, stream: trio.SocketStream, framer: Framer) -> None:
        """Feed what arrives to the machine until the connection ends."""
        while True:
            try:
                data = await stream.receive_some(RECEIVE_CHUNK_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                log.info("issuer closed the connection", issuer=self.config.issuer_id,
                         conn=conn)
                return
            try:
                framer.feed(data)
                for event in framer.events():
                    if isinstance(event, Frame):
                        self._received(conn, event.message)
            except RemoteProtocolError as exc:
                log.warning("issuer framing error: closing", issuer=self.config.issuer_id,
                            error=str(exc))
                return

    def _received(self, conn: ConnId, message: bytes) -> None:
        try:
            fields = self._codec.decode(message)
        except CodecError as exc:
            log.warning("issuer message undecodable: dropped", issuer=self.config.issuer_id,
                        error=str(exc))
            return
        self._carry_out(self._link.received(conn, fields, trio.current_time()))


def _summary(fields: Mapping[str, str]) -> dict[str, str]:
    """What may be logged of a dropped message: MTI, trace, RRN, code, masked PAN."""
    summary = {name: fields[key] for name, key in
               (("mti", "t"), ("stan", "11"), ("rrn", "37"), ("rc", "39")) if key in fields}
    if "2" in fields:
        summary["pan"] = mask_pan(fields["2"])
    return summary
