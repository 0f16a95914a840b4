"""The processor: decides each decoded request and moves the money.

Sans-I/O: the server (#5) hands in :class:`Request` values (decoded fields
plus its MAC verdict) and gets :class:`Outcome` values back; nothing here
opens a socket. :meth:`Processor.process_batch` is the group commit: one
durable transaction per batch, one savepoint per request.

Public API: :class:`Processor`, :class:`Request`, :class:`Outcome`,
:class:`ProcessorConfig`, :class:`CommitFailed`, :func:`answer_0800`,
:func:`open_default`, :func:`open_store`.
"""

from __future__ import annotations

from pathlib import Path

from iso_switch.ledger import SqliteLedgerStore
from iso_switch.processor.core import Processor, answer_0800
from iso_switch.processor.model import (
    CommitFailed,
    Outcome,
    PinHsm,
    ProcessorConfig,
    Request,
    utc_now,
)
from iso_switch.processor.seed import seed_demo

LEDGER_FILE_NAME = "ledger.sqlite3"

LedgerStore = SqliteLedgerStore


def open_store(data_dir: Path, config: ProcessorConfig | None = None) -> SqliteLedgerStore:
    """The SQLite store under ``data_dir`` (created), migrated."""
    config = config or ProcessorConfig()
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    return SqliteLedgerStore(data_dir / LEDGER_FILE_NAME, synchronous=config.synchronous)


def open_default(
    data_dir: Path, hsm: PinHsm, config: ProcessorConfig | None = None
) -> Processor:
    """A processor on SQLite under ``data_dir``, seeded with the demo data of
    interface.md section 6 on first start (idempotent)."""
    config = config or ProcessorConfig()
    store = open_store(data_dir, config)
    seed_demo(store, hsm, config, utc_now())
    return Processor(store, hsm, config)


__all__ = [
    "CommitFailed",
    "LedgerStore",
    "Outcome",
    "PinHsm",
    "Processor",
    "ProcessorConfig",
    "Request",
    "answer_0800",
    "config_from",
    "open_default",
    "open_store",
    "seed_demo",
]


def config_from(config: object) -> ProcessorConfig:
    """A :class:`ProcessorConfig` from the switch's :class:`iso_switch.config.Config`
    (its ``ledger`` table); other fields keep their defaults."""
    from datetime import timedelta

    ledger = config.ledger  # type: ignore[attr-defined]
    return ProcessorConfig(
        timezone=ledger.timezone,
        hold_expiry=timedelta(days=ledger.hold_expiry_days),
        retention=timedelta(days=ledger.retention_days),
        review_threshold_minor=ledger.review_threshold_minor,
        synchronous=ledger.synchronous,
    )
