"""The trio switch: listeners, connection tasks, the ledger pump, shutdown.

The only package that imports trio. Everything it calls is sans-I/O:
``Framer`` cuts frames, ``Codec`` decodes, the ``Hsm`` checks MACs, the
``Processor`` decides in group-committed batches. This module only moves
bytes and values between them and bounds everything:

- connections: ``limits.max_connections`` (over it: accepted, logged, closed);
- requests in flight per connection: ``limits.max_in_flight_per_connection``
  (at the bound the connection is not read until answers go out);
- outgoing frames per connection: there is no task per request. The read
  loop decodes, verifies the MAC and queues; each decided batch comes back
  in one callback that encodes, MACs, logs and writes every answer straight
  to its socket (non-blocking). What a socket does not take waits, in
  order, in that connection's outbox for a flusher task; a request's
  in-flight slot is freed only when its answer is written, so a client that
  never reads stops its own reading, never anyone else's;
- the writer queue: ``WRITER_QUEUE_REQUESTS`` slots (queued or being
  decided); the ledger pump thread takes batches of at most ``limits.max_batch``;
- time: idle timeout (no byte), no-request timeout (keep-alives alone do
  not keep a connection), per-frame read timeout (from the first byte of a
  frame to its last), decision deadline (one task answers 91 to requests
  still queued at theirs, nothing posted; the queue is in deadline order).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
import trio

from iso_switch.acquirer.mac import (
    KSN_FIELD,
    MacLayout,
    encode_response,
    mac_status,
    response_maced,
    verify_request_mac,
)
from iso_switch.codec import Codec, CodecError, load_spec
from iso_switch.codes import ResponseCode
from iso_switch.config import Config, ListenerConfig, TimeoutsConfig
from iso_switch.logs import flush_logs, transaction_line
from iso_switch.processor import CommitFailed, Outcome, Processor, Request
from iso_switch.processor.fields import plain_response
from iso_switch.protocol import (
    RECEIVE_CHUNK_BYTES,
    Framer,
    KeepAlive,
    RemoteProtocolError,
    Session,
    max_length_for,
    swap_tpdu,
)
from iso_switch.protocol.admission import AdmissionLimits, PeerGuard
from iso_switch.security.hsm import Hsm
from iso_switch.server.ledger_worker import BatchInDoubt, InThreadLedger, LedgerWorker
from iso_switch.server.reload import PreparedReload, refusal_reason
from iso_switch.server.trace import TraceRecorder, open_trace

log = structlog.get_logger("iso_switch.server")

#: Prepares a reload (blocking) from the running configuration and HSM.
Reloader = Callable[[Config, Hsm], PreparedReload]

# Requests queued for the ledger writer before connections wait.
WRITER_QUEUE_REQUESTS = 8192
# Batched logging: the longest a line logged outside a batch of answers waits.
LOG_FLUSH_INTERVAL_S = 0.1
KSN_HEX_CHARS = 20
KSN_COUNTER_BITS = 21  # ANSI X9.24-1 TDES DUKPT transaction counter


@dataclass(slots=True, eq=False)
class _Pending:
    """One request on its way through the ledger pump, with what its
    answer needs (there is no task per request: see ``Switch._answer``)."""

    request: Request
    conn: _Conn
    tpdu: bytes | None
    started: float  # perf_counter when its frame was taken
    deadline: float  # trio time: past it, still queued, it is answered 91
    seq: int = 0  # [trace]


@dataclass(frozen=True, slots=True)
class _Dialect:
    """What a listener needs to read and write its messages."""

    codec: Codec
    mac: MacLayout
    mti_binary: bool


def _dialect(name: str) -> _Dialect:
    codec = Codec(load_spec(name))
    return _Dialect(codec, MacLayout.of(codec), codec.fields["t"].binary)


@dataclass(slots=True, eq=False)
class _Conn:
    """One connection's state, shared by its reader and the answer path."""

    lc: ListenerConfig
    dialect: _Dialect
    peer: str
    session: Session
    address: str
    in_flight: trio.Semaphore
    stream: trio.SocketStream
    nursery: trio.Nursery | None = None
    # Answers are written straight to the socket (non-blocking) in the
    # order they are ready; what the kernel does not take waits here, in
    # order, for a flusher task. A client that does not read fills it, its
    # in-flight slots stay taken and its reads stop; nobody else waits.
    outbox: deque[bytes] | None = None
    flushing: bool = False
    # Set before the socket is closed: no answer may be written after it
    # (its file descriptor number could already belong to a new connection).
    closed: bool = False
    read_scope: trio.CancelScope | None = None
    conn_id: int = 0  # [trace]


@dataclass(slots=True)
class _ReadClock:
    """The deadlines of one connection's next read, in trio time.

    Three bounds, the nearest wins: no byte at all for ``idle_timeout_s``;
    a frame begun and not ended ``frame_read_timeout_s`` after its first
    byte (counted from the first byte, not the latest chunk, or a client
    dribbling a byte at a time would never be cut off); no request (a whole
    frame other than a keep-alive) for ``no_request_timeout_s``, so that
    keep-alives alone cannot hold a connection slot for ever."""

    timeouts: TimeoutsConfig
    now: float
    request_by: float = 0.0
    frame_by: float | None = None
    reason: str = "idle timeout"
    timeout_s: float = 0.0

    def __post_init__(self) -> None:
        self.request_seen()

    def request_seen(self) -> None:
        """A request arrived (in the chunk read at ``now``)."""
        self.request_by = self.now + self.timeouts.no_request_timeout_s

    def next_deadline(self, now: float, partial_frame: bool) -> float:
        """The next read's deadline; ``reason`` and ``timeout_s`` say which."""
        self.now = now
        timeouts = self.timeouts
        if partial_frame:
            if self.frame_by is None:
                self.frame_by = now + timeouts.frame_read_timeout_s
            deadline, self.reason = self.frame_by, "frame read timeout"
            self.timeout_s = timeouts.frame_read_timeout_s
        else:
            self.frame_by = None
            deadline, self.reason = now + timeouts.idle_timeout_s, "idle timeout"
            self.timeout_s = timeouts.idle_timeout_s
        if self.request_by < deadline:
            deadline, self.reason = self.request_by, "no request timeout"
            self.timeout_s = timeouts.no_request_timeout_s
        return deadline


def _readable_mti(raw: bytes, mti_binary: bool) -> str | None:
    """The MTI of an undecodable message, if its first bytes are one."""
    if mti_binary:
        text = raw[:2].hex()
    else:
        try:
            text = raw[:4].decode("ascii")
        except UnicodeDecodeError:
            return None
    if len(text) == 4 and text.isdigit() and text[0] == "0" and int(text[2]) % 2 == 0:
        return text
    return None


class Switch:
    """One switch process: ``await Switch(...).run()``.

    ``run`` reports the bound listeners through ``task_status`` as a list of
    ``(name, host, port)`` (tests bind port 0 and read the real port there)
    and returns after a graceful shutdown (SIGINT/SIGTERM, or ``shutdown()``).
    """

    def __init__(
        self,
        config: Config,
        ledger: LedgerWorker | Processor,
        hsm: Hsm,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        handle_signals: bool = True,
        trace: TraceRecorder | None = None,
        reloader: Reloader | None = None,
    ) -> None:
        """``reloader``: what a reload (SIGHUP, :meth:`reload`) installs;
        without one a reload re-reads the ledger's reference data only."""
        self.config = config
        # A bare Processor runs in the writer thread (see ledger_worker).
        self.ledger: LedgerWorker = (
            InThreadLedger(ledger) if isinstance(ledger, Processor) else ledger
        )
        self.hsm = hsm
        self.clock = clock
        self.handle_signals = handle_signals
        self.dialects = {lc.name: _dialect(lc.dialect) for lc in config.listeners}
        # Outgoing framing is stateless: one framer per listener serves every
        # response; its bound is what the header can express, since an answer
        # is never refused for its size.
        self._out_framers = {
            lc.name: Framer(lc.framing, tpdu=lc.tpdu, max_frame_bytes=max_length_for(lc.framing))
            for lc in config.listeners
        }
        self.connections = 0
        limits = config.limits
        self.guard = PeerGuard(AdmissionLimits(
            max_connections_per_address=limits.max_connections_per_address,
            max_auth_failures=limits.max_auth_failures_per_address,
            max_new_devices=limits.max_new_devices_per_address,
            window_s=limits.admission_window_s,
        ))
        self.bound: list[tuple[str, str, int]] = []
        # Requests queued or in a batch: at the bound, request tasks wait.
        self._queue_slots = trio.Semaphore(WRITER_QUEUE_REQUESTS)
        self._pump = _LedgerPump(self.ledger, config.limits.max_batch,
                                 config.ledger.housekeeping_interval_s)
        self._expire_scope = trio.CancelScope()
        self._flush_scope = trio.CancelScope()
        self._stop = trio.Event()
        self._read_scopes: set[trio.CancelScope] = set()
        self._reloader = reloader
        self._reload_lock = trio.Lock()
        self._reload_scope = trio.CancelScope()
        # One reload waiting is enough: it re-reads everything when it runs.
        self._reload_wanted, self._reload_requests = trio.open_memory_channel[None](1)
        # [trace] message trace (off by default): see iso_switch/server/trace.py.
        self.trace = trace if trace is not None else open_trace(
            config, getattr(hsm, "key_store", None))

    @property
    def processor(self) -> Processor:
        """The processor, when it runs in this process (``ledger.worker =
        "thread"``): tests and tools that reach into it use this."""
        if isinstance(self.ledger, InThreadLedger):
            return self.ledger.processor
        raise AttributeError("the processor runs in the ledger process")

    # -- lifecycle ----------------------------------------------------------

    def shutdown(self) -> None:
        """Begin a graceful shutdown (what SIGINT/SIGTERM do)."""
        self._stop.set()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        limits = self.config.limits
        timeouts = self.config.timeouts
        async with trio.open_nursery() as root:
            self._pump.bind(self._deliver, trio.lowlevel.current_trio_token())
            root.start_soon(self._writer)
            root.start_soon(self._expire)
            root.start_soon(self._flush_logs)
            root.start_soon(self._reloads)
            if self.trace is not None:  # [trace] its file is open before we listen
                await root.start(self.trace.run)
            if self.handle_signals:
                root.start_soon(self._watch_signals)
            try:
                async with trio.open_nursery() as connections:
                    async with trio.open_nursery() as accepting:
                        for lc in self.config.listeners:
                            listeners = await trio.open_tcp_listeners(lc.port, host=lc.host)
                            for listener in listeners:
                                sockname = listener.socket.getsockname()
                                self.bound.append((lc.name, sockname[0], sockname[1]))
                                log.info("listening", listener=lc.name, host=sockname[0],
                                         port=sockname[1], dialect=lc.dialect, framing=lc.framing,
                                         tpdu=lc.tpdu, max_connections=limits.max_connections)
                                accepting.start_soon(self._accept, listener, lc, connections)
                        task_status.started(list(self.bound))
                        await self._stop.wait()
                        log.info("shutting down", grace_s=timeouts.shutdown_grace_s)
                        accepting.cancel_scope.cancel()
                        for scope in list(self._read_scopes):
                            scope.cancel()
                    # Connections finish what is in flight, then close; past the
                    # grace period they are cut.
                    grace_end = trio.current_time() + timeouts.shutdown_grace_s
                    connections.cancel_scope.deadline = grace_end
            finally:
                # Also when cancelled from outside: the pump thread decides
                # what is queued and stops, so the writer task can end.
                self._pump.close()
                self._expire_scope.cancel()
                self._flush_scope.cancel()
                self._reload_scope.cancel()
            if self.trace is not None:  # [trace] write what is left, then stop
                self.trace.close()
        log.info("stopped")
        flush_logs()

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            async for signum in signals:
                log.info("signal received", signal=signal.Signals(signum).name)
                if signum == signal.SIGHUP:
                    self.request_reload()
                    continue
                self.shutdown()
                break
        # Stopping: a hangup now must not kill the process (its default).
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    # -- reload -------------------------------------------------------------

    def request_reload(self) -> None:
        """Ask for a reload (what SIGHUP does); it runs in a task of its own,
        one at a time."""
        with contextlib.suppress(trio.WouldBlock):  # one is waiting already
            self._reload_wanted.send_nowait(None)

    async def _reloads(self) -> None:
        with self._reload_scope:
            async for _ in self._reload_requests:
                await self.reload()

    async def reload(self) -> bool:
        """Re-read the configuration file, the key store and the ledger's
        reference data, and install them without dropping a connection
        (see :mod:`iso_switch.server.reload`). The ledger installs its part
        between two batches, then the front swaps its HSM and configuration
        in one step of the trio thread, between two requests. Whether it
        applied: a reload that fails anywhere changes nothing, and says why
        in the log."""
        async with self._reload_lock:
            prepared = None
            if self._reloader is not None:
                try:
                    prepared = await trio.to_thread.run_sync(self._reloader, self.config,
                                                             self.hsm)
                except Exception as exc:
                    log.error("reload refused: the running configuration stays",
                              reason=refusal_reason(exc))
                    return False
            config = None if prepared is None else prepared.plan.config
            hsm = None if prepared is None else prepared.hsm
            tables = await self._between_batches(lambda: self.ledger.reload(config, hsm))
            if isinstance(tables, Exception):
                log.error("reload refused by the ledger: the running configuration stays",
                          reason=refusal_reason(tables))
                return False
            if prepared is not None:
                self.hsm, self.config = prepared.hsm, prepared.plan.config
            _log_reload(prepared, tables)
            return True

    async def _between_batches(self, action: Callable[[], object]) -> object:
        """``action``'s result (or exception), run by the ledger pump."""
        done = trio.Event()
        result: list[object] = []

        def finished(value: object) -> None:
            result.append(value)
            done.set()

        self._pump.between_batches(action, finished)
        await done.wait()
        return result[0]

    async def _accept(
        self, listener: trio.SocketListener, lc: ListenerConfig, nursery: trio.Nursery
    ) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:  # e.g. EMFILE: back off instead of dying
                log.warning("accept failed", listener=lc.name, error=type(exc).__name__)
                await trio.sleep(0.1)
                continue
            if self.connections >= self.config.limits.max_connections:
                log.warning("connection refused: at the connection cap", listener=lc.name,
                            max_connections=self.config.limits.max_connections)
                await stream.aclose()
                continue
            address = _address(stream)
            refusal = self.guard.connect(address, trio.current_time())
            if refusal is not None:
                log.warning("connection refused", listener=lc.name, address=address,
                            reason=refusal.value)
                await stream.aclose()
                continue
            self.connections += 1
            nursery.start_soon(self._connection, stream, lc, address)

    # -- one connection -----------------------------------------------------

    async def _connection(self, stream: trio.SocketStream, lc: ListenerConfig,
                          address: str) -> None:
        limits = self.config.limits
        peer = _peer(stream)
        framer = Framer(lc.framing, tpdu=lc.tpdu, max_frame_bytes=limits.max_frame_bytes)
        session = Session(max_in_flight=limits.max_in_flight_per_connection)
        conn = _Conn(
            lc=lc, dialect=self.dialects[lc.name], peer=peer, session=session, address=address,
            in_flight=trio.Semaphore(limits.max_in_flight_per_connection), stream=stream,
            conn_id=self.trace.next_connection_id() if self.trace is not None else 0,  # [trace]
        )
        log.debug("connection opened", listener=lc.name, peer=peer)
        reason = "closed by peer"
        try:
            async with trio.open_nursery() as nursery:
                conn.nursery = nursery
                reason = await self._read_loop(stream, framer, conn)
                # Finish what is in flight (answers included) before closing.
                for _ in range(limits.max_in_flight_per_connection):
                    await conn.in_flight.acquire()
        # Nursery errors arrive as exception groups: a plain ``except`` would
        # miss them and one bad connection would take the whole switch down.
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            reason = "peer reset"
        except* _CloseConnection:
            reason = "undecodable message"
        except* Exception as group:
            # A bug met by one connection closes that connection, not the switch.
            log.error("connection failed", listener=lc.name, peer=peer,
                      error=[type(e).__name__ for e in group.exceptions])
            reason = "internal error"
        finally:
            conn.closed = True
            self.connections -= 1
            self.guard.disconnect(address)
            with trio.CancelScope(shield=True):
                await stream.aclose()
            log.info("connection closed", listener=lc.name, peer=peer, reason=reason,
                     requests=session.requests_total)

    async def _read_loop(self, stream: trio.SocketStream, framer: Framer, conn: _Conn) -> str:
        """Read frames and take each request. Returns why it stopped."""
        lc, peer = conn.lc, conn.peer
        clock = _ReadClock(self.config.timeouts, trio.current_time())
        while not self._stop.is_set():
            deadline = clock.next_deadline(trio.current_time(), framer.has_partial_frame)
            # The scope is registered so that shutdown() can stop the read
            # (in-flight requests still finish), and so that a failed write
            # can end the connection: cheaper than a watcher task per receive.
            with trio.move_on_at(deadline) as scope:
                self._read_scopes.add(scope)
                conn.read_scope = scope
                if self._stop.is_set():  # set after the loop's check
                    scope.cancel()
                try:
                    data = await stream.receive_some(RECEIVE_CHUNK_BYTES)
                finally:
                    self._read_scopes.discard(scope)
                    conn.read_scope = None
            if scope.cancelled_caught:
                if self._stop.is_set():
                    return "shutdown"
                if conn.closed:
                    return "peer reset"
                log.info("connection timed out", listener=lc.name, peer=peer,
                         partial_frame=framer.has_partial_frame, timeout_s=clock.timeout_s,
                         reason=clock.reason)
                return clock.reason
            if not data:
                return "closed by peer"
            clock.now = trio.current_time()  # what a request in this chunk counts from
            framer.feed(data)
            try:
                for event in framer.events():
                    clock.frame_by = None  # a frame ended: the next one starts its own clock
                    if isinstance(event, KeepAlive):
                        continue  # keeps the connection from the idle timeout only
                    clock.request_seen()
                    # Without a checkpoint when a slot is free (the receive
                    # above is this loop's checkpoint); waits at the bound.
                    try:
                        conn.in_flight.acquire_nowait()
                    except trio.WouldBlock:
                        await conn.in_flight.acquire()
                    conn.session.begin_request()
                    await self._take(event.message, event.tpdu, conn)
            except RemoteProtocolError as exc:
                log.warning("protocol error: closing connection", listener=lc.name, peer=peer,
                            error=str(exc))
                return "protocol error"
            except _CloseConnection:
                return "undecodable message"
            if conn.closed:  # a write failed: the peer is gone
                return "peer reset"
        return "shutdown"

    # -- one request --------------------------------------------------------

    async def _take(self, message: bytes, tpdu: bytes | None, conn: _Conn) -> None:
        """Decode one request, answer it if it is network management, else
        verify its MAC and queue it for the ledger. Its in-flight slot (taken
        by the caller) is released when its answer is written."""
        started = time.perf_counter()
        lc, peer, dialect = conn.lc, conn.peer, conn.dialect
        trace = self.trace  # [trace] the message as received, its response as sent
        seq = (trace.record_in(conn.conn_id, lc.name, lc.dialect, message, tpdu)
               if trace is not None else 0)
        codec = dialect.codec
        try:
            fields = codec.decode(message)
        except CodecError as exc:
            mti = _readable_mti(message, dialect.mti_binary)
            log.warning("undecodable message", listener=lc.name, peer=peer, error=str(exc),
                        mti=mti)
            if mti is None:
                self._finished(conn)
                raise _CloseConnection from None
            # Answered like any other format error: 30, with DE37 on 01xx/02xx/04xx
            # responses (interface §3 "Responses"); the processor stores nothing.
            fields = {"t": mti}
        mti = fields["t"]
        if mti.startswith("08"):
            answer = conn.session.network_management(fields)
            transaction_line(log, mti=mti, stan=fields.get("11"), terminal=fields.get("41"),
                             processing_code=None, amount_minor=None, pan_masked=None,
                             rc=answer.get("39", ""), latency_ms=_ms(started),
                             listener=lc.name, network_code=fields.get("70"))
            self._write_answer(conn, codec.encode(answer), tpdu, seq)
            return
        device = _device_id(fields.get("62"))
        if device is not None:
            now_s = trio.current_time()
            refusal = self.guard.admit(conn.address, device, now_s)
            if refusal is not None:  # answered cheaply: no key is derived for it
                log.warning("request refused before authentication", listener=lc.name,
                            address=conn.address, reason=refusal.value)
                request = Request(fields=fields, mac_status="invalid",
                                  received_at=self.clock(), listener=lc.name)
                self._answer(_Pending(request, conn, tpdu, started, 0.0, seq),
                             _plain(request, ResponseCode.SECURITY_VIOLATION, "admission"))
                return
        status = mac_status(verify_request_mac(self.hsm, dialect.mac, message, fields))
        if device is not None:
            if status == "invalid":
                self.guard.failed(conn.address, now_s)
            else:  # a valid MAC, or a MAC-optional request: a device seen
                self.guard.authenticated(conn.address, device, now_s)
        # PIN translation at the edge: this thread derived the terminal's
        # DUKPT keys for the MAC; the ledger verifies under the zone PIN key.
        pin_block, ksn = fields.get("52"), fields.get("62")
        pin_zone = (self.hsm.rewrap_pin_block(ksn, pin_block)
                    if pin_block is not None and ksn is not None else None)
        request = Request(fields=fields, mac_status=status, received_at=self.clock(),
                          listener=lc.name, pin_zone=pin_zone)
        deadline = trio.current_time() + self.config.timeouts.decision_deadline_s
        pending = _Pending(request, conn, tpdu, started, deadline, seq)
        try:
            self._queue_slots.acquire_nowait()  # the usual case: room
        except trio.WouldBlock:
            with trio.move_on_at(deadline):
                await self._queue_slots.acquire()
                self._pump.submit(pending)
                return
            # Never queued: the deadline passed waiting for room.
            self._answer(pending, _plain(request, ResponseCode.ISSUER_INOPERATIVE, "deadline"))
            return
        self._pump.submit(pending)

    def _answer(self, pending: _Pending, outcome: Outcome) -> None:
        """Encode, MAC, log and write one decided request's answer."""
        conn = pending.conn
        try:
            response = self._encode_response(outcome, pending.request.fields, conn.dialect)
            transaction_line(log, latency_ms=_ms(pending.started), listener=conn.lc.name,
                             **_log_fields(outcome.log))
        except Exception as exc:
            self._answer_failed(conn, exc)
            return
        self._write_answer(conn, response, pending.tpdu, pending.seq)

    def _write_answer(self, conn: _Conn, response: bytes, tpdu: bytes | None,
                      seq: int) -> None:
        """Frame and write an answer without waiting: straight to the socket
        when nothing is waiting before it, else behind the rest (flushed by a
        task). Releases the request's in-flight slot once written."""
        lc = conn.lc
        if conn.closed:
            log.info("response dropped: connection gone", listener=lc.name, peer=conn.peer)
            self._finished(conn)
            return
        try:
            answer_tpdu = swap_tpdu(tpdu) if tpdu is not None else None
            if self.trace is not None:  # [trace]
                self.trace.record_out(conn.conn_id, seq, lc.name, lc.dialect, response,
                                      answer_tpdu)
            frame = self._out_framers[lc.name].frame(response, answer_tpdu)
        except Exception as exc:
            self._answer_failed(conn, exc)
            return
        if conn.outbox is None or not conn.outbox:
            try:
                written = os.write(conn.stream.socket.fileno(), frame)
            except BlockingIOError:
                written = 0
            except OSError:
                log.info("response dropped: connection gone", listener=lc.name, peer=conn.peer)
                self._finished(conn)
                self._connection_gone(conn)
                return
            if written == len(frame):
                self._finished(conn)
                return
            frame = frame[written:]
        if conn.outbox is None:
            conn.outbox = deque()
        conn.outbox.append(frame)
        if not conn.flushing and conn.nursery is not None:
            conn.flushing = True
            conn.nursery.start_soon(self._flush, conn)

    async def _flush(self, conn: _Conn) -> None:
        """Write what the socket did not take at once, in order; each
        answer's in-flight slot is released as it goes out."""
        outbox = conn.outbox
        assert outbox is not None
        try:
            while outbox:
                frame = outbox[0]
                try:
                    await conn.stream.send_all(frame)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    log.info("responses dropped: connection gone", listener=conn.lc.name,
                             peer=conn.peer, count=len(outbox))
                    while outbox:
                        outbox.popleft()
                        self._finished(conn)
                    self._connection_gone(conn)
                    return
                outbox.popleft()
                self._finished(conn)
        finally:
            conn.flushing = False

    def _answer_failed(self, conn: _Conn, exc: Exception) -> None:
        """A bug met while answering must not stop the answers of others:
        this answer is dropped and its connection ends."""
        log.error("answer failed: closing the connection", listener=conn.lc.name,
                  peer=conn.peer, error=type(exc).__name__)
        self._finished(conn)
        self._connection_gone(conn)

    def _finished(self, conn: _Conn) -> None:
        conn.session.end_request()
        conn.in_flight.release()

    def _connection_gone(self, conn: _Conn) -> None:
        """A write failed: stop reading, so the connection closes."""
        conn.closed = True
        if conn.read_scope is not None:
            conn.read_scope.cancel()

    def _encode_response(self, outcome: Outcome, request: Mapping[str, str],
                         dialect: _Dialect) -> bytes:
        if not outcome.mac_response:
            return dialect.codec.encode(outcome.response)
        return encode_response(self.hsm, dialect.mac, outcome.response,
                               request.get(KSN_FIELD, ""))

    # -- the ledger writer --------------------------------------------------

    async def _writer(self) -> None:
        """Run the ledger pump (a thread of its own) until shutdown closes it.

        The pump takes batches straight from a thread-safe queue and hands
        each result back to trio in one callback. Driving the ledger from a
        trio task instead cost a scheduler round (every answer task just
        woken runs first) between a batch's result and the next batch's
        start: about 2 ms of ledger idleness per batch at 50 terminals."""
        await trio.to_thread.run_sync(self._pump.run, abandon_on_cancel=False)

    def _deliver(self, live: list[_Pending], outcomes: list[Outcome]) -> None:
        """In the trio thread: a batch's decisions, answered in one go (no
        task per request, no scheduler round between them)."""
        release = self._queue_slots.release
        for pending, decided in zip(live, outcomes, strict=True):
            release()
            self._answer(pending, decided)
        flush_logs()  # the batch's canonical lines, in one write (batched logging)

    async def _flush_logs(self) -> None:
        """With batched logging (``iso-switch serve``), lines logged outside
        a batch's answers (sign-ons, closed connections, errors) are
        written at most :data:`LOG_FLUSH_INTERVAL_S` later."""
        with self._flush_scope:
            while True:
                await trio.sleep(LOG_FLUSH_INTERVAL_S)
                flush_logs()

    async def _expire(self) -> None:
        """Answer 91 to requests still queued (not taken into a batch) at
        their deadline: nothing of them is decided or posted. The queue is
        in arrival order, so its head has the earliest deadline."""
        pump = self._pump
        default_wait = self.config.timeouts.decision_deadline_s
        with self._expire_scope:
            while True:
                now = trio.current_time()
                for pending in pump.expire(now):
                    self._queue_slots.release()
                    self._answer(pending, _plain(pending.request,
                                                 ResponseCode.ISSUER_INOPERATIVE, "deadline"))
                following = pump.next_deadline()
                await trio.sleep_until(
                    following if following is not None else now + default_wait)

class _LedgerPump:
    """Group commit in a thread of its own: wait for queued requests, take
    up to ``max_batch`` of them, have the ledger decide them in one
    transaction, hand the decisions to trio, repeat. Idle for
    ``housekeeping_interval_s``, it sends an empty batch: housekeeping
    (expiring due holds, pruning) runs with every batch, so it must not
    wait for traffic.

    ``lock`` guards the queue. A request leaves it exactly once, under the
    lock: taken into a batch here (then always decided), or expired by its
    deadline in the trio thread (then answered 91, never decided)."""

    def __init__(self, ledger: LedgerWorker, max_batch: int,
                 housekeeping_interval_s: float = 30.0) -> None:
        self.ledger = ledger
        self.max_batch = max_batch
        self.housekeeping_interval_s = housekeeping_interval_s
        self.lock = threading.Lock()
        self._ready = threading.Condition(self.lock)
        self._queue: deque[_Pending] = deque()
        self._closing = False
        self._deliver: Callable[[list[_Pending], list[Outcome]], None] | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        # Work for the ledger between two batches (a reload), with the
        # callback that gets its result in the trio thread.
        self._actions: deque[tuple[Callable[[], object], Callable[[object], None]]] = deque()

    def bind(self, deliver: Callable[[list[_Pending], list[Outcome]], None],
             token: trio.lowlevel.TrioToken) -> None:
        self._deliver, self._token = deliver, token

    def submit(self, pending: _Pending) -> None:
        with self._ready:
            self._queue.append(pending)
            self._ready.notify()

    def expire(self, now: float) -> list[_Pending]:
        """Remove and return the queued requests whose deadline is past
        (arrival order = deadline order); they will never be decided."""
        expired: list[_Pending] = []
        with self.lock:
            queue = self._queue
            while queue and queue[0].deadline <= now:
                expired.append(queue.popleft())
        return expired

    def between_batches(self, action: Callable[[], object],
                        done: Callable[[object], None]) -> None:
        """Run ``action`` in the pump's thread after the batch being decided
        and before the next (the ledger is never used by two threads);
        ``done`` gets its result, or the exception it raised, in the trio
        thread. Run even when closing, so ``done`` is always called."""
        with self._ready:
            self._actions.append((action, done))
            self._ready.notify()

    def next_deadline(self) -> float | None:
        with self.lock:
            return self._queue[0].deadline if self._queue else None

    def close(self) -> None:
        """Decide what is queued, then stop (and close the ledger)."""
        with self._ready:
            self._closing = True
            self._ready.notify()

    def run(self) -> None:
        assert self._deliver is not None and self._token is not None
        deliver, token = self._deliver, self._token
        try:
            while True:
                with self._ready:
                    idle = False
                    while not self._queue and not self._closing and not self._actions:
                        if not self._ready.wait(self.housekeeping_interval_s):
                            idle = True
                            break
                    queue, actions = self._queue, self._take_actions()
                    if not queue and not idle and not actions:
                        break
                    live = [queue.popleft() for _ in range(min(len(queue), self.max_batch))]
                for action, done in actions:
                    token.run_sync_soon(done, _outcome_of(action))
                if not live:
                    if idle:
                        # Idle: an empty batch, so due holds expire and old
                        # keys are pruned without waiting for the next request.
                        self.housekeep()
                    continue
                outcomes = self.decide([p.request for p in live])
                token.run_sync_soon(deliver, live, outcomes)
        finally:
            self.ledger.close()

    def _take_actions(self) -> list[tuple[Callable[[], object], Callable[[object], None]]]:
        """The work waiting for the gap between batches (under the lock)."""
        if not self._actions:
            return []  # the usual case: nothing to copy
        actions = list(self._actions)
        self._actions.clear()
        return actions

    def housekeep(self) -> None:
        """An empty batch (housekeeping only); a failure is retried at the
        next one, and nobody is answered 96 for it."""
        try:
            self.ledger.process_batch([])
        except Exception as exc:
            log.warning("idle housekeeping failed; retried later", error=type(exc).__name__)
            self._recover()

    def decide(self, requests: list[Request]) -> list[Outcome]:
        """One batch. Never raises: a failed commit or a processor bug
        answers the whole batch 96 (nothing of it posted) and the pump,
        with the switch, goes on. A batch in doubt (the ledger process lost
        with it, or not running) answers each request its stored decision
        where the ledger has one, else 91: not 96, which would promise that
        nothing was posted."""
        try:
            return self.ledger.process_batch(requests)
        except BatchInDoubt as doubt:
            log.error("batch in doubt: answering stored decisions, 91 for the rest",
                      size=len(requests), reason=str(doubt),
                      recalled=sum(o is not None for o in doubt.recalled))
            return [_plain(r, ResponseCode.ISSUER_INOPERATIVE, "in doubt") if o is None else o
                    for r, o in zip(requests, doubt.recalled, strict=True)]
        except CommitFailed:
            log.error("batch commit failed: answering 96, nothing posted", size=len(requests))
            return [_plain(r, ResponseCode.SYSTEM_MALFUNCTION, "commit failed") for r in requests]
        except Exception as exc:
            log.error("batch failed unexpectedly: answering 96", size=len(requests),
                      error=type(exc).__name__)
            self._recover()
            return [_plain(r, ResponseCode.SYSTEM_MALFUNCTION, "processor error") for r in requests]

    def _recover(self) -> None:
        """Roll back whatever a failed batch left open before the next one."""
        try:
            self.ledger.recover()
        except Exception as again:
            log.error("recovery after a failed batch failed", error=type(again).__name__)


def _log_reload(prepared: PreparedReload | None, tables: object) -> None:
    """One line per reload: what it changed (key paths, key names, the
    reference tables), and the settings that wait for a restart."""
    fields: dict[str, object] = {"reference_changed": tables}
    if prepared is None:
        log.info("reloaded", **fields)
        return
    plan = prepared.plan
    # Key names under field names the masking processor lets through (it
    # redacts any field named like a key).
    fields.update(changed=list(plan.changed), store_added=list(prepared.keys_added),
                  store_removed=list(prepared.keys_removed),
                  store_changed=list(prepared.keys_changed))
    if plan.ignored:
        log.warning("reloaded; some changed settings are ignored until restart",
                    ignored_until_restart=list(plan.ignored), **fields)
    else:
        log.info("reloaded", **fields)


def _outcome_of(action: Callable[[], object]) -> object:
    """What ``action`` returns, or the exception it raised."""
    try:
        return action()
    except Exception as exc:
        return exc


class _CloseConnection(Exception):
    """An undecodable message without a readable MTI: close the connection."""


_server_rrns = itertools.count(1)


def _server_rrn() -> str:
    """A DE37 for answers the switch gives without the ledger (91, 96):
    seconds of the day (5) + '9' + a per-process counter (6), 12 digits."""
    return f"{int(time.time()) % 86_400:05d}9{next(_server_rrns) % 1_000_000:06d}"


def _plain(request: Request, code: ResponseCode, decision: str) -> Outcome:
    """An answer that stores nothing (91, 96): echo, DE37 on 01xx/02xx/04xx
    responses as interface section 3 asks, DE39; MACed per
    :func:`~iso_switch.acquirer.mac.response_maced`."""
    fields = request.fields
    rc = str(code)  # plain strings on the wire and in log lines
    response = plain_response(fields, rc, _server_rrn)
    amount = fields.get("4", "")
    return Outcome(response, response_maced(request.mac_status == "valid", rc), {
        "mti": fields.get("t", ""), "stan": fields.get("11"), "terminal": fields.get("41"),
        "processing_code": fields.get("3"),
        "amount_minor": int(amount) if amount.isdigit() else None,
        "pan_masked": None, "rc": rc, "decision": decision,
    })


def _log_fields(entry: Mapping[str, object]) -> dict[str, Any]:
    fields = dict(entry)
    fields.setdefault("mti", "")
    fields.setdefault("rc", "")
    for name in ("stan", "terminal", "processing_code", "amount_minor", "pan_masked"):
        fields.setdefault(name, None)
    return fields


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def _device_id(ksn: str | None) -> str | None:
    """The KSN without its 21-bit transaction counter (key set + device),
    or None when there is no usable KSN (the processor answers it)."""
    if ksn is None or len(ksn) != KSN_HEX_CHARS:
        return None
    try:
        return f"{int(ksn, 16) >> KSN_COUNTER_BITS:x}"
    except ValueError:
        return None


def _address(stream: trio.SocketStream) -> str:
    """The peer's host address (no port): what admission bounds count by."""
    try:
        return str(stream.socket.getpeername()[0])
    except OSError:
        return "?"


def _peer(stream: trio.SocketStream) -> str:
    try:
        host, port = stream.socket.getpeername()[:2]
        return f"{host}:{port}"
    except OSError:
        return "?"


__all__ = ["Switch"]
