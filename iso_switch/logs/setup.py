"""structlog configuration: JSON lines by default, masking no path can skip.

The processor chain is::

    merge_contextvars -> add_log_level -> TimeStamper(UTC, ISO) ->
    StackInfoRenderer -> SafeRenderer( exceptions -> mask -> render )

:class:`SafeRenderer` is the one final callable: it turns ``exc_info`` into a
traceback *without locals* (locals hold PANs, PIN blocks and keys; structlog
shows them by default), then masks the whole event
(:func:`~iso_switch.logs.masking.mask_event_dict`), then renders. Because
the masking lives inside the renderer, no processor can be inserted between
masking and rendering, and no exception can reach the renderer unmasked.
The console renderer's own exception formatter is replaced too (plain
traceback, masked) so even an ``exc_info`` smuggled past us cannot show
locals. Records from the standard ``logging`` module (libraries) go through
the same :class:`SafeRenderer`.
"""

from __future__ import annotations

import atexit
import io
import logging
import sys
import threading
from collections.abc import MutableMapping
from typing import Any, Final, Literal, TextIO

import structlog
from structlog.processors import ExceptionRenderer
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import ExcInfo, Processor

from iso_switch.logs.masking import mask_event_dict, mask_text

__all__ = [
    "LEVELS",
    "LOG_FORMATS",
    "BatchedStream",
    "LogFormat",
    "SafeRenderer",
    "configure_logging",
    "flush_logs",
    "safe_plain_traceback",
]

LogFormat = Literal["json", "console"]
LOG_FORMATS: Final[tuple[LogFormat, ...]] = ("json", "console")

#: Level names accepted by :func:`configure_logging` and the config file.
LEVELS: Final[dict[str, int]] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

#: Frames kept per traceback: enough to find a bug, bounded for a log line.
MAX_TRACEBACK_FRAMES: Final = 50
#: Batched output (the server): characters held before they are written
#: whatever the caller's flush rhythm (bounds memory and loss on a crash).
LOG_BATCH_CHARS_MAX: Final = 256 * 1024


def safe_plain_traceback(sio: TextIO, exc_info: ExcInfo) -> None:
    """A console exception formatter: the stdlib traceback (no locals), masked."""
    buffer = io.StringIO()
    structlog.dev.plain_traceback(buffer, exc_info)
    sio.write(mask_text(buffer.getvalue()))


class SafeRenderer:
    """Exceptions to a locals-free form, then masking, then ``renderer``.

    The last processor of every chain this package builds.
    """

    def __init__(self, renderer: Processor, exceptions: Processor) -> None:
        self._renderer = renderer
        self._exceptions = exceptions

    def __call__(self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> Any:
        with_exceptions = self._exceptions(logger, method_name, event_dict)
        assert isinstance(with_exceptions, MutableMapping)
        masked = mask_event_dict(logger, method_name, with_exceptions)
        return self._renderer(logger, method_name, masked)

    @classmethod
    def for_format(cls, fmt: LogFormat, *, colors: bool = False) -> SafeRenderer:
        if fmt == "json":
            # Structured tracebacks (a list of frames) without locals.
            transformer = ExceptionDictTransformer(
                show_locals=False, max_frames=MAX_TRACEBACK_FRAMES
            )
            return cls(structlog.processors.JSONRenderer(), ExceptionRenderer(transformer))
        if fmt == "console":
            renderer = structlog.dev.ConsoleRenderer(
                colors=colors, exception_formatter=safe_plain_traceback
            )
            # The default ExceptionRenderer formats a plain traceback string.
            return cls(renderer, ExceptionRenderer())
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {fmt!r}")


class BatchedStream:
    """A text stream that holds lines until :meth:`write_out` writes them
    all at once to ``output``.

    Why: the server writes one canonical line per transaction; written and
    flushed one by one (structlog's ``WriteLogger`` and stdlib handlers
    flush after every line) that is a ``write`` system call per
    transaction in the busiest thread. The server calls
    :func:`flush_logs` after each batch of answers and on a short timer, so
    lines reach the file in order, a few milliseconds later, in one call.
    ``flush()`` (what loggers call after every line) therefore does
    nothing; past :data:`LOG_BATCH_CHARS_MAX` held characters a write
    writes everything out. Thread-safe: the ledger pump thread logs too.
    """

    def __init__(self, output: TextIO, max_chars: int = LOG_BATCH_CHARS_MAX) -> None:
        self.output = output
        self._max_chars = max_chars
        self._pending: list[str] = []
        self._chars = 0
        self._lock = threading.Lock()
        #: Write-outs that failed (output closed or broken).
        self.lost_writes = 0

    def write(self, text: str) -> int:
        with self._lock:
            self._pending.append(text)
            self._chars += len(text)
            full = self._chars >= self._max_chars
        if full:
            self.write_out()
        return len(text)

    def flush(self) -> None:
        """A logger's per-line flush: deliberately nothing (see the class)."""

    def write_out(self) -> None:
        """Write every held line to ``output`` in one call, and flush it.
        A broken or closed output loses the lines, as a stdlib handler
        would: logging must never take the server down."""
        with self._lock:
            if not self._pending:
                return
            text = "".join(self._pending)
            self._pending.clear()
            self._chars = 0
            try:
                self.output.write(text)
                self.output.flush()
            except (OSError, ValueError):
                self.lost_writes += 1

    def isatty(self) -> bool:
        return _isatty(self.output)


# The batched stream of the current configuration, if any (flush_logs).
_batched: BatchedStream | None = None


def flush_logs() -> None:
    """Write out what a batched configuration holds (no-op otherwise)."""
    batched = _batched
    if batched is not None:
        batched.write_out()


atexit.register(flush_logs)


class _SafeStdlibHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler we install on the root logger, to replace it later."""


def configure_logging(
    fmt: LogFormat = "json",
    level: str = "info",
    stream: TextIO | None = None,
    *,
    cache_loggers: bool = True,
    batched: bool = False,
) -> None:
    """Configure structlog (and route stdlib ``logging``) for the process.

    ``stream`` defaults to ``sys.stderr`` as it is at call time. ``level``
    is one of :data:`LEVELS`. ``cache_loggers`` caches each logger's
    configuration on first use (fast; call this before creating loggers);
    tests that reconfigure loggers they already used pass ``False``.
    ``batched`` holds lines (structlog's and stdlib's, in order) in a
    :class:`BatchedStream` until :func:`flush_logs` (or process exit): for
    a process that calls it on a rhythm of its own, as the server does.
    """
    global _batched
    level_number = LEVELS.get(level.lower()) if isinstance(level, str) else None
    if level_number is None:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}")
    output: TextIO = sys.stderr if stream is None else stream
    colors = fmt == "console" and _isatty(output)
    flush_logs()  # lines held under the previous configuration go first
    _batched = BatchedStream(output) if batched else None
    if _batched is not None:
        output = _batched  # type: ignore[assignment]
    safe_renderer = SafeRenderer.for_format(fmt, colors=colors)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    structlog.configure(
        processors=[*shared, safe_renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level_number),
        logger_factory=structlog.WriteLoggerFactory(file=output),
        cache_logger_on_first_use=cache_loggers,
    )
    _route_stdlib_logging(output, level_number, shared, safe_renderer)


def _route_stdlib_logging(
    output: TextIO, level_number: int, shared: list[Processor], safe_renderer: SafeRenderer
) -> None:
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, safe_renderer],
    )
    handler = _SafeStdlibHandler(output)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _SafeStdlibHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level_number)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
