"""Undo what a test's ``configure_logging`` did, so the next test starts
from structlog's defaults with no handler of ours on the root logger and
no batched stream held."""

from __future__ import annotations

import logging

import structlog

from iso_switch.logs import flush_logs
from iso_switch.logs import setup as log_setup


def reset_logging() -> None:
    flush_logs()
    log_setup._batched = None  # a batched test's stream is not kept past it
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if type(h).__name__ == "_SafeStdlibHandler"]:
        root.removeHandler(handler)
