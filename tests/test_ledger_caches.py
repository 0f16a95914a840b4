"""The store's read caches never disagree with the database.

Within a batch's transaction the store keeps the account rows it has read
or written (so a batch reads its merchant account once) and each device's
KSN replay state; every rollback drops them, and a commit by another
connection drops the KSN states at the next ``begin``. These tests compare
every cached read with a plain SELECT on the same connection, through any
sequence of transfers, refusals and rolled-back requests."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iso_switch.ledger import LedgerError, SqliteLedgerStore
from iso_switch.ledger.model import Account
from tests.helpers_ledger import CNY, small_ledger
from tests.helpers_ledger import LEDGER_NOW as NOW

ACCOUNTS = 5  # see small_ledger: 1 closed, 2 equity, 3 cardholder, 4 settlement, 5 USD

# (debit, credit, amount, roll this request back afterwards)
OPS = st.lists(
    st.tuples(st.integers(1, ACCOUNTS), st.integers(1, ACCOUNTS), st.integers(-5, 40_000),
              st.booleans()),
    max_size=16,
)


def _truth(store: SqliteLedgerStore, account_id: int) -> tuple[int, int, int, int]:
    row = store.conn.execute(
        "SELECT debits_pending, debits_posted, credits_pending, credits_posted "
        "FROM accounts WHERE id = ?", (account_id,)).fetchone()
    return tuple(row)  # type: ignore[return-value]


def _totals(account: Account) -> tuple[int, int, int, int]:
    return (account.debits_pending, account.debits_posted, account.credits_pending,
            account.credits_posted)


@given(ops=OPS)
def test_cached_accounts_match_the_database_through_rollbacks(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[int, int, int, bool]]
) -> None:
    store = small_ledger(tmp_path_factory.mktemp("cache") / "ledger.sqlite3")
    try:
        store.begin()
        for debit, credit, amount, undo in ops:
            store.savepoint()
            # A refusal writes nothing and leaves the cached rows unchanged.
            with contextlib.suppress(LedgerError):
                store.transfer(debit, credit, amount, CNY, "t", NOW)
            if undo:
                store.rollback_to()
            else:
                store.release()
            for account_id in range(1, ACCOUNTS + 1):
                assert _totals(store.get_account(account_id)) == _truth(store, account_id)
        store.commit()
        assert store.check_invariants() == []
    finally:
        store.close()


def test_a_refused_transfer_leaves_the_cached_balance_alone(tmp_path: Path) -> None:
    store = small_ledger(tmp_path / "ledger.sqlite3")
    try:
        store.begin()
        store.transfer(3, 4, 30_000, CNY, "first", NOW)
        with pytest.raises(LedgerError):  # 30,000 of 20,000 left: refused
            store.transfer(3, 4, 30_000, CNY, "second", NOW)
        assert store.get_account(3).available_balance_minor == 20_000
        store.transfer(3, 4, 20_000, CNY, "third", NOW)  # exactly what is left
        store.commit()
        assert _truth(store, 3) == (0, 50_000, 0, 50_000)
    finally:
        store.close()


def test_ksn_state_follows_rollbacks_and_other_connections(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    store = small_ledger(path)
    other = SqliteLedgerStore(path, synchronous="OFF")
    try:
        store.begin()
        assert store.get_ksn_state("DEV") is None
        store.put_ksn_state("DEV", 5, 0b1, NOW)
        store.savepoint()
        store.put_ksn_state("DEV", 9, 0b11, NOW)
        assert store.get_ksn_state("DEV") == (9, 0b11)
        store.rollback_to()  # the request failed: its replay state is undone
        assert store.get_ksn_state("DEV") == (5, 0b1)
        store.commit()

        # An admin command (another connection) resets the device.
        with other.write():
            other.conn.execute("DELETE FROM ksn_state WHERE device = 'DEV'")
        store.begin()
        assert store.get_ksn_state("DEV") is None
        store.put_ksn_state("DEV", 7, 0b1, NOW)
        store.rollback()  # the whole batch failed
        store.begin()
        assert store.get_ksn_state("DEV") is None
        store.commit()
    finally:
        other.close()
        store.close()
