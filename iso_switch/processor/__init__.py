"""The processor: decides each decoded request and moves the money.

Sans-I/O: the server (#5) hands in :class:`Request` values (decoded fields
plus its MAC verdict) and gets :class:`Outcome` values back; nothing here
opens a socket. :meth:`Processor.process_batch` is the group commit: one
durable transaction per batch, one savepoint per request.

Public API: :class:`Processor`, :class:`Request`, :class:`Outcome`,
:class:`ProcessorConfig`, :class:`CommitFailed`, :func:`open_default`,
:func:`open_store`. An 0800 is answered by
:func:`iso_switch.protocol.answer_network_management`.
"""

from __future__ import annotations

from pathlib import Path

from iso_switch.acquirer.devices import NO_BINDINGS, DeviceBindings
from iso_switch.issuer import RiskRules
from iso_switch.ledger import AdminLedgerStore, LedgerStore, SqliteLedgerStore
from iso_switch.processor.core import Processor
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
DATA_DIR_MODE = 0o700

def open_store(data_dir: Path, config: ProcessorConfig | None = None) -> SqliteLedgerStore:
    """The SQLite store under ``data_dir`` (created), migrated."""
    config = config or ProcessorConfig()
    data_dir = Path(data_dir)
    data_dir.mkdir(mode=DATA_DIR_MODE, parents=True, exist_ok=True)
    if data_dir.stat().st_mode & 0o077:
        data_dir.chmod(DATA_DIR_MODE)  # keys, ledger and traces: the owner's alone
    return SqliteLedgerStore(data_dir / LEDGER_FILE_NAME, synchronous=config.synchronous)


PAN_HASH_KCV_META = "pan_hash_kcv"


class PanHashKeyMismatch(RuntimeError):
    """The ledger's cards are hashed under another PAN hash key: with this
    one no card on file would be found. Names both check values only."""


def check_pan_hash_kcv(store: AdminLedgerStore, kcv: str) -> None:
    """Record the PAN hash key's check value on first use; refuse another."""
    recorded = store.get_meta(PAN_HASH_KCV_META)
    if recorded is None:
        with store.write():
            store.set_meta(PAN_HASH_KCV_META, kcv)
    elif recorded != kcv:
        raise PanHashKeyMismatch(
            f"the ledger's cards are hashed under the PAN hash key with KCV {recorded}, "
            f"but this switch's key has KCV {kcv}: configure keys.pan_hash_key to that key")


def open_default(
    data_dir: Path, hsm: PinHsm, config: ProcessorConfig | None = None, *,
    seed_demo_data: bool, pan_hash_kcv: str | None = None,
) -> Processor:
    """A processor on SQLite under ``data_dir``. ``seed_demo_data``: insert
    the demo data of docs/interface.md section 6 where absent (demo mode only).
    ``pan_hash_kcv``: the check value of ``config.pan_hash_key``, recorded in
    the ledger on first start and required to match after."""
    config = config or ProcessorConfig()
    store = open_store(data_dir, config)
    if pan_hash_kcv is not None:
        check_pan_hash_kcv(store, pan_hash_kcv)
    if seed_demo_data:
        seed_demo(store, hsm, config, utc_now())
    return Processor(store, hsm, config)


__all__ = [
    "PAN_HASH_KCV_META",
    "CommitFailed",
    "LedgerStore",
    "Outcome",
    "PanHashKeyMismatch",
    "PinHsm",
    "Processor",
    "ProcessorConfig",
    "Request",
    "check_pan_hash_kcv",
    "config_from",
    "open_default",
    "open_store",
    "seed_demo",
]


def config_from(config: object, *, pan_hash_key: bytes,
                device_bindings: DeviceBindings = NO_BINDINGS) -> ProcessorConfig:
    """A :class:`ProcessorConfig` from the switch's :class:`iso_switch.config.Config`
    (its ``ledger`` and ``risk`` tables) and the key store's PAN hash key;
    other fields keep their defaults."""
    from datetime import timedelta

    ledger = config.ledger  # type: ignore[attr-defined]
    risk = config.risk  # type: ignore[attr-defined]
    return ProcessorConfig(
        timezone=ledger.timezone,
        hold_expiry=timedelta(days=ledger.hold_expiry_days),
        retention=timedelta(days=ledger.retention_days),
        review_threshold_minor=ledger.review_threshold_minor,
        synchronous=ledger.synchronous,
        pan_hash_key=pan_hash_key,
        device_bindings=device_bindings,
        risk=RiskRules(
            velocity_count=risk.velocity_count,
            velocity_window=timedelta(seconds=risk.velocity_window_s),
            velocity_action=risk.velocity_action,
            amount_factor=risk.amount_factor,
            amount_min_history=risk.amount_min_history,
            amount_action=risk.amount_action,
            blacklist_action=risk.blacklist_action,
        ),
    )
