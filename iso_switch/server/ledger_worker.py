"""Where the processor runs: a thread of the switch, or a process of its own.

The trio thread (framing, codec, MACs, logging) and the processor (SQLite,
PIN checks, business rules) are both CPU-bound Python. In one process they
share one GIL, so the switch uses one core however many the machine has
(the writer thread only runs in parallel while SQLite fsyncs). With
``ledger.worker = "process"`` (the default for ``iso-switch serve``) the
processor runs in a child process and the two halves use two cores; batches
cross a pipe as pickled ``Request`` / ``Outcome`` values (a few
microseconds per request). ``"thread"`` keeps everything in one process
(tests that reach into the processor use it).

Both are driven the same way, from a worker thread of the server
(``trio.to_thread``), one batch at a time: ``process_batch(requests)``.

A child that dies (killed, out of memory) is started again and the batch it
had is sent again, once. That is safe because a batch is idempotent:
decisions are stored under their keys in the same transaction as their
postings, so a batch that committed before the crash answers with its
stored decisions, and one that did not is decided afresh.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
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
        self._conn.send(batch)
        return self._conn.recv()

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
                self._conn.send(None)
        if self._process is not None:
            self._process.join(STOP_TIMEOUT_S)
        self._reap()


def ledger_main(config: Config, conn: Connection) -> None:
    """The child: open the ledger, then decide batches until told to stop."""
    # Signals go to the parent, which stops us in order (close()).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from iso_switch.logs import configure_logging
    from iso_switch.processor import config_from, open_default
    from iso_switch.server import build_hsm

    configure_logging(config.logging.format, config.logging.level)  # type: ignore[arg-type]
    try:
        processor = open_default(config.data_path, build_hsm(config, warn=False),
                                 config_from(config))
    except Exception as exc:  # the parent reports it; no key material in the type name
        conn.send(f"{type(exc).__name__}")
        return
    conn.send(READY)
    try:
        while True:
            try:
                batch = conn.recv()
            except EOFError:  # the parent is gone
                break
            if batch is None:
                break
            try:
                conn.send(processor.process_batch(batch))
            except CommitFailed:
                conn.send(_Failed("commit"))
            except Exception as exc:
                log.error("batch failed in the ledger process: %s", type(exc).__name__)
                processor.store.rollback()
                conn.send(_Failed(type(exc).__name__))
    finally:
        processor.store.close()
        conn.close()
        log.debug("ledger process %s stopped", os.getpid())
