"""The ledger store implementations the contract tests run against, and the
rows those tests store.

Each :class:`StoreFactory` opens a store at a location (a fresh temporary
directory per test), opens it again there (the durability tests), and
opens a second, independent writer on the same data (the tests of what one
writer sees of another's commits). A PostgreSQL store adds one factory to
:data:`IMPLEMENTATIONS` and runs every contract test unchanged. The
accounts are ``tests.helpers_ledger``'s small ledger, seeded through the
Protocol (``seed_small_ledger``).

The fixtures ``factory`` and ``store`` (one store per implementation, per
test) are registered for every test module by ``tests/conftest.py``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from iso_switch.codes import ResponseCode, TxnState
from iso_switch.ledger import (
    AdminLedgerStore,
    CardRow,
    SqliteLedgerStore,
    TxnRow,
    ts,
)
from tests.helpers_ledger import CNY
from tests.helpers_ledger import LEDGER_NOW as NOW


@dataclass(frozen=True)
class StoreFactory:
    """How to reach one implementation: ``open(location)`` opens (or opens
    again) the store kept at ``location``; ``duplicate_key`` is the error its
    driver raises when a key is stored twice."""

    name: str
    open: Callable[[Path], AdminLedgerStore]
    duplicate_key: type[Exception]


def _sqlite(location: Path) -> AdminLedgerStore:
    return SqliteLedgerStore(location / "ledger.sqlite3", synchronous="FULL")


SQLITE = StoreFactory("sqlite", _sqlite, sqlite3.IntegrityError)

#: Every implementation of :class:`iso_switch.ledger.LedgerStore`.
IMPLEMENTATIONS = [SQLITE]


def card_row(account_id: int, pan_hash: bytes = b"h" * 32, last4: str = "0010") -> CardRow:
    """A card at rest (a hash stands for the PAN; no PIN data)."""
    return CardRow(
        id=0, pan_hash=pan_hash, pan_masked="476173******" + last4, last4=last4,
        expiry="3012", state="active", account_id=account_id, pvd_method="pvv", pvd_pvki=1,
        pvd_value="1234", pvd_key_name="pvk", pin_tries=0, pin_blocked=False,
        limit_txn_minor=500_000, limit_day_minor=2_000_000, limit_day_count=20,
    )


def txn_row(key: str, **changes: object) -> TxnRow:
    """A stored approved purchase under ``key``; ``changes`` override fields."""
    row = TxnRow(
        key=key, content=b"fields", mti="0200", rc=ResponseCode.APPROVED, rrn="000000000001",
        auth_code="A00001", de54="", created_at=ts(NOW),
        terminal="TERM0003", stan="000001", pan_masked="476173******0010", card_id=None,
        code="000000", amount_minor=1000, currency=CNY, debit_account_id=None,
        credit_account_id=None, hold_id=None, state=TxnState.POSTED, effective_minor=1000,
        business_day="2025-03-01", counts_daily=True, orig_key="", seq=1,
    )
    return replace(row, **changes)  # type: ignore[arg-type]


@pytest.fixture(params=IMPLEMENTATIONS, ids=lambda factory: factory.name)
def factory(request: pytest.FixtureRequest) -> StoreFactory:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def store(factory: StoreFactory, tmp_path: Path) -> Iterator[AdminLedgerStore]:
    opened = factory.open(tmp_path)
    yield opened
    opened.rollback()
    opened.close()
