"""Where the processor runs: a thread of the switch, or a process of its own.

The trio thread (framing, codec, MACs, logging) and the processor (SQLite,
PIN checks, business rules) are both CPU-bound Python. In one process they
share one GIL, so the switch uses one core however many the machine has
(the writer thread only runs in parallel while SQLite fsyncs). With
``ledger.worker = "process"`` (the default for ``iso-switch serve``) the
processor runs in a child process and the two halves use two cores; batches
cross a pipe as ``marshal``-ed tuples of plain values (see ``pack_requests``:
about a third of what pickling the dataclasses cost, on both sides).
``"thread"`` keeps everything in one process (tests that reach into the
processor use it).

Both are driven the same way, by the server's ledger pump thread, one
batch at a time: ``process_batch(requests)``.

Faults of the child (``SubprocessLedger``):

- Every wait on the pipe is bounded: sending a batch and waiting for its
  answer by ``ledger.reply_timeout_s`` (socket timeouts on the switch's end,
  set once: nothing is added per batch), starting by :data:`START_TIMEOUT_S`.
- A child that certainly never read a batch (gone when it was sent, or
  dead with it unread in its pipe) decided nothing of it: another is started
  and the batch goes to it.
- A child lost with a batch (it died, hung past the timeout, or answered
  nonsense) is killed and reaped, so it can commit nothing more; another is
  started and asked only to read back the batch's keys (``recall``). Each
  request gets the decision stored under its key, exactly what a repeat of
  it would get (DE37, DE38, DE39, DE54), or nothing: the server answers
  those 91 (inoperative), never 96, which would promise that nothing was
  posted. The batch is not decided again: a batch that killed or hung one
  child would do it to the next.
- A child that cannot be started leaves the ledger down, not broken: each
  later batch (the idle housekeeping batch included) tries again, at most
  once per backoff interval (:data:`RESTART_BACKOFF_FIRST_S`, doubling up to
  :data:`RESTART_BACKOFF_MAX_S`); until one starts, batches are answered 91
  without being sent anywhere.
"""

from __future__ import annotations

import contextlib
import logging
import marshal
import multiprocessing
import os
import pickle
import signal
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Protocol

from iso_switch.config import Config
from iso_switch.processor import CommitFailed, Outcome, Processor, Request
from iso_switch.server.reload import ReloadRefused

if TYPE_CHECKING:
    from iso_switch.security.hsm import SoftwareHsm

log = logging.getLogger(__name__)

# Seconds a child may take to open the ledger (migrations, demo seed).
START_TIMEOUT_S = 120.0
# Seconds a child gets to finish and close on shutdown before it is killed.
STOP_TIMEOUT_S = 30.0
# After a failed start, the next try waits this long; each failure doubles
# the wait, up to the max (a switch that cannot open its ledger does not
# spin on it, and tries again at least this often).
RESTART_BACKOFF_FIRST_S = 0.5
RESTART_BACKOFF_MAX_S = 30.0
READY = "ready"
# First byte of a batch message: marshal (plain values) or pickle (the
# fallback when a value marshal cannot write turns up, e.g. a log field of
# another type). The pipe joins the switch to its own child only.
_MARSHAL = b"m"
_PICKLE = b"p"
# First byte of a recall: the batch of a lost child, to be read back only.
_RECALL = b"r"
# First byte of a reload: the pickled configuration to install (or None:
# re-read the reference data only), between two batches.
_RELOAD = b"h"
_FAILED = "failed"


def _dumps(value: object) -> bytes:
    try:
        return _MARSHAL + marshal.dumps(value)  # type: ignore[arg-type]
    except ValueError:
        return _PICKLE + pickle.dumps(value, pickle.HIGHEST_PROTOCOL)


def _loads(data: bytes) -> object:
    # Only ever bytes our own process pair wrote, over a socketpair no one
    # else can reach: never a client's input.
    if data[:1] == _MARSHAL:
        return marshal.loads(memoryview(data)[1:])  # noqa: S302
    return pickle.loads(memoryview(data)[1:])  # noqa: S301


def pack_requests(requests: Sequence[Request]) -> bytes:
    """A batch for the pipe: per request ``(fields, mac_status, received_at
    as UTC (y, m, d, H, M, S, us), listener, pin_zone)``. Exact: the child rebuilds
    equal ``Request`` values (tested)."""
    rows = []
    for r in requests:
        at = r.received_at
        if at.tzinfo is not UTC:
            at = at.astimezone(UTC)
        fields = r.fields if type(r.fields) is dict else dict(r.fields)
        rows.append((fields, r.mac_status,
                     (at.year, at.month, at.day, at.hour, at.minute, at.second,
                      at.microsecond), r.listener, r.pin_zone))
    return _dumps(rows)


def unpack_requests(data: bytes) -> list[Request]:
    rows = _loads(data)
    assert isinstance(rows, list)
    return [Request(fields, status, datetime(at[0], at[1], at[2], at[3], at[4], at[5], at[6],
                                             tzinfo=UTC), listener, pin_zone)
            for fields, status, at, listener, pin_zone in rows]


def pack_outcomes(outcomes: Sequence[Outcome]) -> bytes:
    return _dumps([(o.response, o.mac_response,
                    o.log if type(o.log) is dict else dict(o.log)) for o in outcomes])


def unpack_outcomes(data: bytes) -> list[Outcome] | _Failed:
    rows = _loads(data)
    if isinstance(rows, tuple) and rows[:1] == (_FAILED,):
        return _Failed(str(rows[1]))
    if not isinstance(rows, list):
        raise LedgerProcessError("the ledger process answered a batch with something else")
    return [Outcome(response, mac, log) for response, mac, log in rows]


def pack_recalled(outcomes: Sequence[Outcome | None]) -> bytes:
    return _dumps([None if o is None else (o.response, o.mac_response, dict(o.log))
                   for o in outcomes])


def unpack_recalled(data: bytes) -> list[Outcome | None]:
    rows = _loads(data)
    if not isinstance(rows, list):
        raise LedgerProcessError("the ledger process answered a recall with something else")
    return [None if row is None else Outcome(*row) for row in rows]


class LedgerWorker(Protocol):
    """What the server's writer needs from wherever the processor runs."""

    def process_batch(self, requests: Sequence[Request]) -> list[Outcome]:
        """Decide and commit a batch. Raises ``CommitFailed`` when nothing
        of it was posted, ``BatchInDoubt`` when that is not known."""
        ...

    def recover(self) -> None:
        """After an unexpected error: leave no transaction open."""

    def reload(self, config: Config | None, hsm: SoftwareHsm | None) -> list[str]:
        """Between batches: install a reloaded configuration and HSM (None:
        keep them) and re-read the reference data. Returns the reference
        tables that changed; raises when the reload was refused, leaving the
        running configuration in place."""
        ...

    def close(self) -> None: ...


class InThreadLedger:
    """The processor in the switch's own process (called from one thread)."""

    def __init__(self, processor: Processor) -> None:
        self.processor = processor

    def process_batch(self, requests: Sequence[Request]) -> list[Outcome]:
        return self.processor.process_batch(requests)

    def recover(self) -> None:
        self.processor.store.rollback()

    def reload(self, config: Config | None, hsm: SoftwareHsm | None) -> list[str]:
        """The very HSM the front swaps to, so that the keys a KSN derives
        for its MAC are found again for its PIN."""
        from iso_switch.server.reload import reload_processor

        return reload_processor(self.processor, config, hsm)

    def close(self) -> None:
        self.processor.store.close()


@dataclass(frozen=True, slots=True)
class _Failed:
    """The child's answer when a batch failed: ``commit`` or an error type."""

    kind: str


class LedgerProcessError(RuntimeError):
    """The ledger process could not be started or answered nonsense."""


class BatchInDoubt(RuntimeError):
    """The ledger process was lost with a batch, or none is running.

    ``recalled`` has, per request of the batch, its stored decision (a
    repeat's answer), or None where nothing is known to be stored: the
    caller answers those 91, never 96, since what it cannot see it cannot
    promise was not posted."""

    def __init__(self, recalled: list[Outcome | None], reason: str) -> None:
        super().__init__(reason)
        self.recalled = recalled


# What a child lost with a batch looks like from the switch's end of the
# pipe: it died (EOF), did not answer in time (BlockingIOError, an OSError),
# or answered bytes that are no answer.
_LOST = (EOFError, OSError, LedgerProcessError, ValueError, TypeError)


class SubprocessLedger:
    """The processor in a child process (``multiprocessing``, spawn).

    ``target`` is the child's entry point, ``ledger_main`` unless a test
    starts children with faults of its own."""

    def __init__(self, config: Config, *,
                 target: Callable[[Config, Connection], None] | None = None) -> None:
        self._config = config
        self._target = ledger_main if target is None else target
        self._reply_timeout_s = config.ledger.reply_timeout_s
        self._context = multiprocessing.get_context("spawn")
        self._conn: Connection | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self.restarts = 0
        self._backoff_s = RESTART_BACKOFF_FIRST_S
        self._next_start = 0.0  # time.monotonic() before which no start is tried
        self._start()

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def _start(self) -> None:
        """Start a child and wait (bounded) for it to say it is ready; on any
        failure leave nothing behind: no child, no pipe."""
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=self._target, args=(self._config, child), name="iso-switch-ledger",
            daemon=True,
        )
        try:
            process.start()
            child.close()
            self._await_ready(parent, process)
            _bound_waits(parent, self._reply_timeout_s)
        except BaseException:
            child.close()
            parent.close()
            if process.pid is not None:
                process.kill()
                process.join(STOP_TIMEOUT_S)
            raise
        self._conn, self._process = parent, process

    @staticmethod
    def _await_ready(parent: Connection, process: multiprocessing.process.BaseProcess) -> None:
        if not parent.poll(START_TIMEOUT_S):
            raise LedgerProcessError("the ledger process did not start in time")
        try:
            ready = parent.recv()
        except EOFError:
            process.join(STOP_TIMEOUT_S)
            raise LedgerProcessError(
                f"the ledger process exited at start (code {process.exitcode})"
            ) from None
        if ready != READY:
            raise LedgerProcessError(f"the ledger process failed to start: {ready}")

    def _restart(self) -> bool:
        """Start a child in place of a lost one, unless the backoff after a
        failed start has not passed. Whether one is running now."""
        if time.monotonic() < self._next_start:
            return False
        try:
            self._start()
        except Exception as exc:  # whatever stops a start, the ledger stays down
            # Counted from the failure: a slow failing start is no pause.
            self._next_start = time.monotonic() + self._backoff_s
            log.error("ledger process did not start; next try in %.1f s: %s",
                      self._backoff_s, exc if isinstance(exc, LedgerProcessError)
                      else type(exc).__name__)
            self._backoff_s = min(self._backoff_s * 2, RESTART_BACKOFF_MAX_S)
            return False
        self._backoff_s = RESTART_BACKOFF_FIRST_S
        self.restarts += 1
        log.warning("ledger process restarted (pid %s)", self.pid)
        return True

    def process_batch(self, requests: Sequence[Request]) -> list[Outcome]:
        batch = list(requests)
        message = pack_requests(batch)
        try:
            data = self._exchange(message)
            if data is None:
                data = self._exchange_again(message, len(batch))
            reply = unpack_outcomes(data)
            if not isinstance(reply, _Failed) and len(reply) != len(batch):
                raise LedgerProcessError("the ledger process answered a batch of another size")
        except _LOST as exc:
            raise BatchInDoubt(self._recall_lost(batch, exc),
                               "the ledger process was lost with a batch") from exc
        if isinstance(reply, _Failed):  # rolled back in the child: nothing posted
            raise CommitFailed(f"the batch failed in the ledger process ({reply.kind})")
        return reply

    def _exchange(self, message: bytes) -> bytes | None:
        """Send a batch, return the child's answer; None when the child
        certainly never read the batch: none was running, the batch never
        got whole into the pipe, or the child died with it unread (a socket
        closed with unread data resets its peer: ``ConnectionResetError``).
        A child that read it and then died or did not answer raises."""
        conn = self._conn
        if conn is None:
            return None
        try:
            conn.send_bytes(message)
        except OSError:
            return None
        try:
            return conn.recv_bytes()
        except ConnectionResetError:
            return None

    def _exchange_again(self, message: bytes, size: int) -> bytes:
        """The batch never reached a child, so nothing of it was decided:
        start another child (unless backing off) and send it there."""
        if self._conn is not None:
            log.error("ledger process gone; restarting it and sending it the batch")
            self._reap()
        if not self._restart():
            raise BatchInDoubt([None] * size, "the ledger process is not running")
        data = self._exchange(message)
        if data is None:
            self._reap()
            raise BatchInDoubt([None] * size, "the ledger process died at once")
        return data

    def _recall_lost(self, batch: list[Request], error: BaseException
                     ) -> list[Outcome | None]:
        """The child may have committed the batch: kill it (once reaped it
        commits nothing more), start another, and read back what is stored
        under the batch's keys."""
        log.error("ledger process lost with a batch (%s); restarting it to read back the "
                  "batch's decisions",
                  "no answer in time" if isinstance(error, BlockingIOError)
                  else type(error).__name__)
        self._reap()
        unknown: list[Outcome | None] = [None] * len(batch)
        if not self._restart():
            return unknown
        conn = self._conn
        assert conn is not None
        try:
            conn.send_bytes(_RECALL + pack_requests(batch))
            recalled = unpack_recalled(conn.recv_bytes())
            if len(recalled) != len(batch):
                raise LedgerProcessError("the ledger process answered a recall of another size")
        except _LOST as exc:
            log.error("ledger process lost again reading back a batch: %s", type(exc).__name__)
            self._reap()
            return unknown
        return recalled

    def recover(self) -> None:
        """The child rolls back on its own; nothing to do here."""

    def reload(self, config: Config | None, hsm: SoftwareHsm | None) -> list[str]:
        """A reload message on the pipe, between two batches: the child
        builds its own HSM from ``config`` and installs it (``hsm`` belongs
        to this process). Once applied, a child started later starts on
        ``config`` too. With no child running, ``config`` is what the next
        one starts on."""
        conn = self._conn
        if conn is None:
            if config is not None:
                self._config = config
            return []
        try:
            conn.send_bytes(_RELOAD + pickle.dumps(config, pickle.HIGHEST_PROTOCOL))
            reply = _loads(conn.recv_bytes())
        except _LOST as exc:
            # Whether it applied is unknown: the next batch starts another
            # child on the configuration it had.
            self._reap()
            raise ReloadRefused("the ledger process was lost during the reload") from exc
        if isinstance(reply, tuple) and reply[:1] == (_FAILED,):
            raise ReloadRefused(f"the ledger process refused the reload: {reply[1]}")
        if not isinstance(reply, list):
            raise ReloadRefused("the ledger process answered a reload with something else")
        if config is not None:
            self._config = config
        return [str(name) for name in reply]

    def _reap(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._process is not None:
            if self._process.is_alive():
                self._process.kill()
            self._process.join(STOP_TIMEOUT_S)
            self._process = None

    def close(self) -> None:
        """Ask the child to close the ledger and exit; kill it past the timeout."""
        if self._conn is not None:
            with contextlib.suppress(OSError):  # already gone or stuck: nothing to ask
                self._conn.send_bytes(b"")
        if self._process is not None:
            self._process.join(STOP_TIMEOUT_S)
        self._reap()


def _bound_waits(conn: Connection, timeout_s: float) -> None:
    """Bound every blocking send and receive on the switch's end of the
    pipe by ``timeout_s`` (``SO_SNDTIMEO``/``SO_RCVTIMEO``): a read or write
    that waits longer fails with ``BlockingIOError``. Set once per child, on
    the socket itself, so a batch costs no extra system call."""
    seconds = int(timeout_s)
    micros = int((timeout_s - seconds) * 1_000_000)
    timeval = struct.pack("ll", seconds, micros)
    # A second socket object on the same socket: options belong to the
    # socket, and closing the duplicate leaves the connection's own open.
    with socket.socket(fileno=os.dup(conn.fileno())) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)


def _reload_child(processor: Processor, data: bytes) -> object:
    """A reload in the ledger process: the changed reference tables, or
    why it was refused (the processor keeps what it had)."""
    from iso_switch.bootstrap import build_hsm
    from iso_switch.server.reload import refusal_reason, reload_processor

    config = pickle.loads(data)  # noqa: S301 (our own parent's bytes, see _loads)
    try:
        hsm = None if config is None else build_hsm(config, warn=False)
        return reload_processor(processor, config, hsm)
    except Exception as exc:
        return (_FAILED, refusal_reason(exc))


def ledger_main(config: Config, conn: Connection) -> None:
    """The child: open the ledger, then decide batches until told to stop."""
    # Signals go to the parent, which stops us in order (close()).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the switch reloads us itself
    from iso_switch.bootstrap import build_hsm
    from iso_switch.logs import configure_logging
    from iso_switch.server import open_processor

    configure_logging(config.logging.format, config.logging.level)  # type: ignore[arg-type]
    try:
        processor = open_processor(config, build_hsm(config, warn=False))
    except Exception as exc:  # the parent reports it; no key material in the type name
        conn.send(f"{type(exc).__name__}")
        return
    conn.send(READY)
    try:
        while True:
            try:
                message = conn.recv_bytes()
            except EOFError:  # the parent is gone
                break
            if not message:  # asked to stop
                break
            try:
                if message[:1] == _RELOAD:
                    conn.send_bytes(_dumps(_reload_child(processor, message[1:])))
                    continue
                if message[:1] == _RECALL:
                    conn.send_bytes(pack_recalled(
                        processor.recall(unpack_requests(message[1:]))))
                    continue
                conn.send_bytes(pack_outcomes(processor.process_batch(unpack_requests(message))))
            except CommitFailed:
                conn.send_bytes(_dumps((_FAILED, "commit")))
            except Exception as exc:
                log.error("batch failed in the ledger process: %s", type(exc).__name__)
                processor.store.rollback()
                conn.send_bytes(_dumps((_FAILED, type(exc).__name__)))
    finally:
        processor.store.close()
        conn.close()
        log.debug("ledger process %s stopped", os.getpid())
