"""The admin actions that open the ledger themselves (see :mod:`iso_switch.admin`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from iso_switch.admin.cards import CardImport, ImportReport, check_pin, import_into
from iso_switch.ledger import AdminLedgerStore
from iso_switch.ledger.audit import os_user
from iso_switch.processor import ProcessorConfig, check_pan_hash_kcv, open_store, seed_demo
from iso_switch.security.demo import pan_hash_key
from iso_switch.security.hsm import SoftwareHsm


@contextmanager
def _ledger(data_dir: Path, hsm: SoftwareHsm,
            pan_hash_key_name: str) -> Iterator[tuple[AdminLedgerStore, ProcessorConfig]]:
    """The ledger under ``data_dir`` and the settings to write cards with:
    the key store's PAN hash key, checked against the one the ledger
    records (a card hashed under another key would never be found)."""
    store = open_store(Path(data_dir))
    try:
        key, kcv = pan_hash_key(hsm.key_store, pan_hash_key_name)
        check_pan_hash_kcv(store, kcv)
        yield store, ProcessorConfig(pan_hash_key=key)
    finally:
        store.close()


def import_cards(data_dir: Path, hsm: SoftwareHsm, cards: Iterable[CardImport], *, pin: str,
                 actor: str | None = None, pan_hash_key_name: str = "",
                 now: datetime | None = None) -> ImportReport:
    """Create ``cards`` in the ledger under ``data_dir``, in one transaction,
    each with the initial ``pin`` (held in memory only: the HSM makes its
    PIN verification data). Idempotent: a card already on file is counted
    as existing and left unchanged. ``actor``: who, for the audit log (the
    OS user by default); ``pan_hash_key_name``: ``keys.pan_hash_key``.
    Raises :class:`CardImportError` for a bad card or PIN (nothing written)."""
    check_pin(pin)
    with _ledger(data_dir, hsm, pan_hash_key_name) as (store, defaults), store.write():
        return import_into(store, hsm, defaults, cards, pin=pin, actor=actor or os_user(),
                           now=now or datetime.now(UTC))


def seed_demo_data(data_dir: Path, hsm: SoftwareHsm, *, pan_hash_key_name: str = "",
                   now: datetime | None = None) -> bool:
    """Insert the demo data (cards, accounts, terminals, merchant, on-us
    route) where absent, as a demo-mode switch does at start; True when
    anything was. The caller decides whether the demo belongs there."""
    with _ledger(data_dir, hsm, pan_hash_key_name) as (store, defaults):
        return seed_demo(store, hsm, defaults, now or datetime.now(UTC))


__all__ = ["import_cards", "seed_demo_data"]
