"""The store's read caches never disagree with the database.

Within a batch's transaction the store keeps the account rows it has read
or written (so a batch reads its merchant account once) and each device's
KSN replay state; every rollback drops them, and a commit by another
connection drops the KSN states at the next ``begin``. These tests compare
every cached read with a plain SELECT on the same connection, through any
sequence of transfers, refusals and rolled-back requests."""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iso_switch.ledger import LedgerError, SqliteLedgerStore
from iso_switch.ledger.model import Account
from tests.helpers_ledger import CNY, small_ledger
from tests.helpers_ledger import LEDGER_NOW as NOW

ACCOUNTS = 5  # see small_ledger: 1 closed, 2 equity, 3 cardholder, 4 settlement, 5 USD

# One request of a batch: an operation on accounts (and on the holds placed
# so far), whether it is rolled back afterwards, and whether the test
# compares every account with the database after it (random points, so
# the cache is sometimes partly filled when the next request reads it).
KINDS = ("transfer", "hold", "post", "void", "expire", "close", "reopen")
OPS = st.lists(
    st.tuples(st.sampled_from(KINDS), st.integers(1, ACCOUNTS), st.integers(1, ACCOUNTS),
              st.integers(-5, 40_000), st.booleans(), st.booleans()),
    max_size=20,
)


def _apply(store: SqliteLedgerStore, holds: list[int],
           op: tuple[str, int, int, int, bool, bool]) -> None:
    kind, first, second, amount, _undo, _compare = op
    if kind == "transfer":
        store.transfer(first, second, amount, CNY, "t", NOW)
    elif kind == "hold":
        holds.append(store.hold(first, second, amount, CNY, NOW + timedelta(days=7), "h", NOW))
    elif kind == "close" or kind == "reopen":
        store.set_account_closed(first, kind == "close")
    elif holds:
        hold_id = holds[first % len(holds)]
        if kind == "post":
            store.post_hold(hold_id, amount, "p", NOW)
        elif kind == "void":
            store.void_hold(hold_id, "v", NOW)
        else:
            store.expire_holds([hold_id], NOW + timedelta(days=8))


def _truth(store: SqliteLedgerStore, account_id: int) -> tuple[int, int, int, int]:
    row = store.conn.execute(
        "SELECT debits_pending, debits_posted, credits_pending, credits_posted "
        "FROM accounts WHERE id = ?", (account_id,)).fetchone()
    return tuple(row)  # type: ignore[return-value]


def _closed(store: SqliteLedgerStore, account_id: int) -> bool:
    row = store.conn.execute("SELECT closed FROM accounts WHERE id = ?", (account_id,))
    return bool(row.fetchone()[0])


def _totals(account: Account) -> tuple[int, int, int, int]:
    return (account.debits_pending, account.debits_posted, account.credits_pending,
            account.credits_posted)


@given(ops=OPS)
def test_cached_accounts_match_the_database_through_rollbacks(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, int, int, int, bool, bool]]
) -> None:
    store = small_ledger(tmp_path_factory.mktemp("cache") / "ledger.sqlite3")
    holds: list[int] = []
    try:
        store.begin()
        for op in ops:
            store.savepoint()
            # A refusal writes nothing and leaves the cached rows unchanged.
            with contextlib.suppress(LedgerError):
                _apply(store, holds, op)
            if op[4]:  # the request failed: rolled back alone
                store.rollback_to()
            else:
                store.release()
            if op[5]:
                for account_id in range(1, ACCOUNTS + 1):
                    assert _totals(store.get_account(account_id)) == _truth(store, account_id)
                    assert store.get_account(account_id).closed == _closed(store, account_id)
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
        store.put_ksn_state("DEV", 8, 0b1, NOW)
        store.commit()

        # A write that fails leaves the cache as the database is.
        store.conn.execute("CREATE TEMP TRIGGER refuse BEFORE UPDATE ON ksn_state "
                           "BEGIN SELECT RAISE(ABORT, 'refused'); END")
        store.begin()
        assert store.get_ksn_state("DEV") == (8, 0b1)
        with pytest.raises(sqlite3.DatabaseError):
            store.put_ksn_state("DEV", 12, 0b11, NOW)
        assert store.get_ksn_state("DEV") == (8, 0b1)
        store.commit()
        store.conn.execute("DROP TRIGGER refuse")

        # Pruning old decisions keeps replay states, cached or not.
        store.begin()
        assert store.get_ksn_state("DEV") == (8, 0b1)
        store.prune(NOW + timedelta(days=1))
        assert store.get_ksn_state("DEV") == (8, 0b1)
        store.commit()
        store.begin()
        assert store.get_ksn_state("DEV") == (8, 0b1)
        store.commit()
    finally:
        other.close()
        store.close()
