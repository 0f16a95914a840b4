"""Logging: structlog JSON lines, one canonical line per transaction, and a
masking step that every event (structlog or stdlib ``logging``) passes
through right before it is rendered.

Use::

    from iso_switch.logs import configure_logging, transaction_line
    configure_logging("json", "info")
    log = structlog.get_logger("iso_switch.server")
    transaction_line(log, mti="0200", stan="000001", ...)
"""

from iso_switch.logs.masking import (
    MAX_MASK_DEPTH,
    REDACTED,
    mask_event_dict,
    mask_text,
    mask_value,
)
from iso_switch.logs.setup import (
    LEVELS,
    LOG_FORMATS,
    BatchedStream,
    LogFormat,
    SafeRenderer,
    configure_logging,
    flush_logs,
    safe_plain_traceback,
)
from iso_switch.logs.transaction import TRANSACTION_EVENT, transaction_line

__all__ = [
    "LEVELS",
    "LOG_FORMATS",
    "MAX_MASK_DEPTH",
    "REDACTED",
    "TRANSACTION_EVENT",
    "BatchedStream",
    "LogFormat",
    "SafeRenderer",
    "configure_logging",
    "flush_logs",
    "mask_event_dict",
    "mask_text",
    "mask_value",
    "safe_plain_traceback",
    "transaction_line",
]
