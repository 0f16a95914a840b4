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

A child that dies (killed, out of memory) is started again and the batch it
had is sent again, once. That is safe because a batch is idempotent:
decisions are stored under their keys in the same transaction as their
postings, so a batch that committed before the crash answers with its
stored decisions, and one that did not is decided afresh.
"""

from __future__ import annotations

import contextlib
import logging
import marshal
import multiprocessing
import os
import pickle
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from typing import Protocol

from iso_switch.config import Config
from iso_switch.processor import CommitFailed, Outcome, Processor, Request

log = logging.getLogger(__name__)

# Seconds a child may take to open the ledger (migrations, demo seed).
START_TIMEOUT_S = 120.0
# Seconds a child gets to finish and close on shutdown before it is killed.
STOP_TIMEOUT_S = 30.0
READY = "ready"
# First byte of a batch message: marshal (plain values) or pickle (the
# fallback when a value marshal cannot write turns up, e.g. a log field of
# another type). The pipe joins the switch to its own child only.
_MARSHAL = b"m"
_PICKLE = b"p"
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
    assert isinstance(rows, list)
    return [Outcome(response, mac, log) for response, mac, log in rows]


class LedgerWorker(Protocol):
    """What the server's writer needs from wherever the processor runs."""

    def process_batch(self, requests: Sequence[Request]) -> list[Outcome]: ...

    def recover(self) -> None:
        """After an unexpected error: leave no transaction open."""

    def close(self) -> None: ...


class InThreadLedger:
    """The processor in the switch's own process (called from one thread)."""

    def __init__(self, processor: Processor) -> None:
        self.processor = processor

    def process_batch(self, requests: Sequence[Request]) -> list[Outcome]:
        return self.processor.process_batch(requests)

    def recover(self) -> None:
        self.processor.store.rollback()

    def close(self) -> None:
        self.processor.store.close()


@dataclass(frozen=True, slots=True)
class _Failed:
    """The child's answer when a batch failed: ``commit`` or an error type."""

    kind: str


class LedgerProcessError(RuntimeError):
    """The ledger process could not be started or answered nonsense."""


class SubprocessLedger:
    """The processor in a child process (``multiprocessing``, spawn)."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._context = multiprocessing.get_context("spawn")
        self._conn: Connection | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self.restarts = 0
        self._start()

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def _start(self) -> None:
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=ledger_main, args=(self._config, child), name="iso-switch-ledger",
            daemon=True,
        )
        process.start()
        child.close()
        if not parent.poll(START_TIMEOUT_S):
            process.kill()
            raise LedgerProcessError("the ledger process did not start in time")
        try:
            ready = parent.recv()
        except EOFError:
            process.join(1)
            raise LedgerProcessError(
                f"the ledger process exited at start (code {process.exitcode})"
            ) from None
        if ready != READY:
            process.kill()
            raise LedgerProcessError(f"the ledger process failed to start: {ready}")
        self._conn, self._process = parent, process

    def process_batch(self, requests: Sequence[Request]) -> list[Outcome]:
        batch = list(requests)
        try:
            reply = self._exchange(batch)
        except (EOFError, OSError):
            # The child died with the batch: start another, send it again.
            log.error("ledger process died; restarting it and resending the batch")
            self._reap()
            self.restarts += 1
            self._start()
            try:
                reply = self._exchange(batch)
            except (EOFError, OSError) as exc:
                self._reap()
                raise CommitFailed("the ledger process died twice on one batch") from exc
        if isinstance(reply, _Failed):
            raise CommitFailed(f"the batch failed in the ledger process ({reply.kind})")
        if not isinstance(reply, list) or len(reply) != len(batch):
            raise CommitFailed("the ledger process answered a batch with something else")
        return reply

    def _exchange(self, batch: list[Request]) -> object:
        assert self._conn is not None
        self._conn.send_bytes(pack_requests(batch))
        return unpack_outcomes(self._conn.recv_bytes())

    def recover(self) -> None:
        """The child rolls back on its own; nothing to do here."""

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
            with contextlib.suppress(OSError):  # already gone: nothing to ask
                self._conn.send_bytes(b"")
        if self._process is not None:
            self._process.join(STOP_TIMEOUT_S)
        self._reap()


def ledger_main(config: Config, conn: Connection) -> None:
    """The child: open the ledger, then decide batches until told to stop."""
    # Signals go to the parent, which stops us in order (close()).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
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
