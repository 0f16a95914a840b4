"""The switch's trace recorder: the trio shell over :mod:`iso_switch.trace`.

The format (sealing, masking, lines, parsing) lives in :mod:`iso_switch.trace`
and does no I/O; this module owns the file and the flusher task. The hot path
(:meth:`TraceRecorder.record_in` / :meth:`TraceRecorder.record_out`) only
appends raw bytes to a bounded list: decoding, sealing and JSON happen in a
worker thread every :data:`TRACE_FLUSH_INTERVAL_S` or
:data:`TRACE_FLUSH_LINES` frames.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
import trio

from iso_switch.config import Config
from iso_switch.security.keystore import KeyStore
from iso_switch.trace import (
    FieldSealer,
    Frame,
    TracedListener,
    TraceEncoder,
    TraceError,
    new_trace_id,
    sealer_from_store,
)

log = structlog.get_logger("iso_switch.server")

# Frames held in memory before the writer thread catches up; beyond it
# frames are dropped (and counted), never the switch slowed.
TRACE_BUFFER_LINES_MAX = 65_536
# The flusher wakes when this many frames are waiting, or every interval.
TRACE_FLUSH_LINES = 1_024
TRACE_FLUSH_INTERVAL_S = 0.1
TRACE_FILE_MODE = 0o600


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
        self.trace_id = sealer.trace_id if sealer is not None else new_trace_id()
        self.masked = sealer is None
        self._key_name = key_name
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
        # Used only by the writer thread.
        self._encoder = TraceEncoder(self.trace_id, datetime.now(UTC), sealer=sealer,
                                     key_name=key_name, key_kcv=key_kcv, listeners=listeners)
        self._wake = trio.Event()
        self._closing = False
        self._file: Any = None

    def __repr__(self) -> str:
        return (f"TraceRecorder(path={str(self.path)!r}, trace_id={self.trace_id!r}, "
                f"masked={self.masked})")

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

    def _write(self, batch: list[Frame], dropped: int) -> None:
        lines = self._encoder.lines(batch, dropped)
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                                 TRACE_FILE_MODE)
            self._file = os.fdopen(descriptor, "a", encoding="utf-8")
            lines.insert(0, self._encoder.header())
        if lines:
            self._file.write("\n".join(lines) + "\n")
            self._file.flush()
        self.dropped_total += dropped
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



__all__ = ["TRACE_BUFFER_LINES_MAX", "TRACE_FILE_MODE", "TRACE_FLUSH_INTERVAL_S",
           "TRACE_FLUSH_LINES", "TraceRecorder", "open_trace"]
