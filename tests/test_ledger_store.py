"""The ledger's double-entry rules, two-phase holds, migrations and invariants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iso_switch.ledger import (
    AccountClosed,
    AccountKind,
    CurrencyMismatch,
    Entry,
    HoldNotPending,
    HoldState,
    InsufficientFunds,
    InvalidAmount,
    SqliteLedgerStore,
    TransferKind,
)
from iso_switch.ledger.schema import SCHEMA_VERSION

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
CNY = 156


def make_store(path: Path) -> tuple[SqliteLedgerStore, int, int, int]:
    store = SqliteLedgerStore(path / "ledger.sqlite3", synchronous="OFF")
    with store.write():
        equity = store.create_account("EQ", CNY, AccountKind.EQUITY, NOW)
        card = store.create_account("C1", CNY, AccountKind.CARDHOLDER, NOW)
        merchant = store.create_account("M1", CNY, AccountKind.SETTLEMENT, NOW)
        store.transfer(equity, card, 10_000, CNY, "opening", NOW)
    return store, equity, card, merchant


def test_migrations_are_versioned_and_idempotent(tmp_path: Path) -> None:
    store, *_ = make_store(tmp_path)
    assert store.schema_version == SCHEMA_VERSION
    store.close()
    again = SqliteLedgerStore(tmp_path / "ledger.sqlite3")
    assert again.migrate() == SCHEMA_VERSION
    assert again.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert again.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert len(again.list_accounts()) == 3


def test_cardholder_cannot_go_below_zero(tmp_path: Path) -> None:
    store, _, card, merchant = make_store(tmp_path)
    with store.write():
        store.transfer(card, merchant, 10_000, CNY, "all of it", NOW)
        with pytest.raises(InsufficientFunds):
            store.transfer(card, merchant, 1, CNY, "one more", NOW)
        # the merchant's settlement account may go negative (refunds)
        store.transfer(merchant, card, 15_000, CNY, "refund", NOW)
    assert store.get_account(merchant).ledger_balance_minor == -5_000
    assert store.check_invariants(NOW) == []


def test_hold_post_partial_releases_the_rest(tmp_path: Path) -> None:
    store, _, card, merchant = make_store(tmp_path)
    with store.write():
        hold = store.hold(card, merchant, 6_000, CNY, NOW + timedelta(days=7), "auth", NOW)
        assert store.get_account(card).available_balance_minor == 4_000
        with pytest.raises(InsufficientFunds):
            store.hold(card, merchant, 4_001, CNY, NOW + timedelta(days=7), "auth2", NOW)
        store.post_hold(hold, 2_500, "completion", NOW)
        with pytest.raises(HoldNotPending):
            store.void_hold(hold, "late void", NOW)
    account = store.get_account(card)
    assert (account.ledger_balance_minor, account.available_balance_minor) == (7_500, 7_500)
    held = store.get_hold(hold)
    assert held is not None and held.state == HoldState.POSTED and held.posted_minor == 2_500
    assert store.check_invariants(NOW) == []


def test_void_and_expire(tmp_path: Path) -> None:
    store, _, card, merchant = make_store(tmp_path)
    with store.write():
        first = store.hold(card, merchant, 100, CNY, NOW + timedelta(days=7), "a", NOW)
        second = store.hold(card, merchant, 200, CNY, NOW + timedelta(hours=1), "b", NOW)
        store.void_hold(first, "void", NOW)
        later = NOW + timedelta(hours=2)
        assert store.check_invariants(later) != []  # overdue hold is reported
        due = store.due_holds(later)
        assert due == [second]
        store.expire_holds(due, later)
    assert store.get_account(card).available_balance_minor == 10_000
    assert store.check_invariants(NOW + timedelta(days=30)) == []


def test_linked_group_fails_together(tmp_path: Path) -> None:
    store, _, card, merchant = make_store(tmp_path)
    with store.write(), pytest.raises(InsufficientFunds):
        store.move([
            Entry(TransferKind.POSTED, card, merchant, 9_000, CNY, ref="transfer"),
            Entry(TransferKind.POSTED, card, merchant, 2_000, CNY, ref="fee"),
        ], NOW)
    assert store.get_account(card).ledger_balance_minor == 10_000
    assert store.conn.execute("SELECT count(*) FROM transfers").fetchone()[0] == 1


def test_refusals(tmp_path: Path) -> None:
    store, equity, card, merchant = make_store(tmp_path)
    with store.write():
        usd = store.create_account("U1", 840, AccountKind.CARDHOLDER, NOW)
        with pytest.raises(CurrencyMismatch):
            store.transfer(equity, usd, 1, CNY, "x", NOW)
        with pytest.raises(InvalidAmount):
            store.transfer(equity, card, 0, CNY, "x", NOW)
        store.set_account_closed(merchant, True)
        with pytest.raises(AccountClosed):
            store.transfer(card, merchant, 1, CNY, "x", NOW)
    assert store.check_invariants(NOW) == []


operations = st.lists(
    st.tuples(
        st.sampled_from(["transfer", "refund", "hold", "post", "void", "expire"]),
        st.integers(min_value=1, max_value=4_000),
        st.integers(min_value=0, max_value=10),
    ),
    max_size=30,
)


@given(ops=operations)
def test_invariants_hold_after_any_sequence(tmp_path_factory: pytest.TempPathFactory,
                                            ops: list[tuple[str, int, int]]) -> None:
    store, _, card, merchant = make_store(tmp_path_factory.mktemp("ledger"))
    holds: list[int] = []
    balance = 10_000
    held = 0
    with store.write():
        for op, amount, pick in ops:
            try:
                if op == "transfer":
                    store.transfer(card, merchant, amount, CNY, op, NOW)
                    balance -= amount
                elif op == "refund":
                    store.transfer(merchant, card, amount, CNY, op, NOW)
                    balance += amount
                elif op == "hold":
                    holds.append(store.hold(card, merchant, amount, CNY, NOW, op, NOW))
                    held += amount
                elif holds:
                    hold_id = holds.pop(pick % len(holds))
                    hold = store.get_hold(hold_id)
                    assert hold is not None
                    if op == "post":
                        posted = min(amount, hold.amount_minor)
                        store.post_hold(hold_id, posted, op, NOW)
                        balance -= posted
                    elif op == "void":
                        store.void_hold(hold_id, op, NOW)
                    else:
                        store.expire_holds([hold_id], NOW)
                    held -= hold.amount_minor
            except InsufficientFunds:
                pass
            assert store.check_invariants() == []
            account = store.get_account(card)
            assert account.ledger_balance_minor == balance
            assert account.available_balance_minor == balance - held >= 0
    store.close()


@pytest.mark.parametrize(
    ("corruption", "reported"),
    [
        ("UPDATE accounts SET credits_posted = credits_posted + 1 WHERE number = 'M1'",
         ["currency 156: posted debits 10000 != credits 10001",
          "account id 3: totals differ from its transfers"]),
        ("UPDATE accounts SET debits_pending = 20000 WHERE number = 'C1'",
         ["currency 156: pending debits 20000 != credits 100",
          "account id 2: cardholder account below zero",
          "account id 2: totals differ from its transfers"]),
        ("UPDATE holds SET state = 'lost'",
         ["account id 2: totals differ from its transfers",
          "account id 3: totals differ from its transfers",
          "hold 2: unknown state", "hold 2: 0 resolving transfers for lost"]),
        ("DELETE FROM transfers WHERE kind = 'pending'", ["hold 2: no pending transfer"]),
    ],
)
def test_check_invariants_names_each_violation(
    tmp_path: Path, corruption: str, reported: list[str]
) -> None:
    store, _, card, merchant = make_store(tmp_path)
    with store.write():
        store.hold(card, merchant, 100, CNY, NOW + timedelta(days=1), "h", NOW)
    assert store.check_invariants(NOW) == []
    store.conn.execute(corruption)
    assert store.check_invariants(NOW) == reported
