"""The contract of :class:`iso_switch.ledger.LedgerStore` (and the admin
methods of :class:`~iso_switch.ledger.AdminLedgerStore`), written once and
run against every implementation in ``tests.store_factories.IMPLEMENTATIONS``.

The tests speak only through the Protocol: no SQL, no file names, no
driver. What they hold is what the processor relies on: money moves by the
double-entry rules or not at all, a request's writes can be undone alone
inside a batch, a commit survives a reopen and a rollback leaves no trace,
another writer's change to reference data is noticed, and each record kind
(decisions, reversals, reviews, replay state, usage) reads back as written.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from iso_switch.codes import ResponseCode, TxnState
from iso_switch.ledger import (
    AccountClosed,
    AccountNotFound,
    AdminLedgerStore,
    CurrencyMismatch,
    Entry,
    HoldNotPending,
    HoldState,
    InsufficientFunds,
    InvalidAmount,
    IssuerRow,
    LedgerError,
    MerchantRow,
    TerminalRow,
    TransferKind,
    ts,
)
from tests.helpers_ledger import CNY, SmallLedger, seed_small_ledger
from tests.helpers_ledger import LEDGER_NOW as NOW
from tests.helpers_ledger import SMALL_LEDGER_OPENING_MINOR as OPENING_MINOR
from tests.store_factories import IMPLEMENTATIONS, StoreFactory, card_row, txn_row

LATER = NOW + timedelta(days=1)


@pytest.fixture
def accounts(store: AdminLedgerStore) -> SmallLedger:
    return seed_small_ledger(store)


def balances(store: AdminLedgerStore, *ids: int) -> list[tuple[int, int]]:
    """(ledger, available) of each account."""
    return [
        (a.ledger_balance_minor, a.available_balance_minor)
        for a in (store.get_account(i) for i in ids)
    ]


# -- the batch transaction --------------------------------------------------------


def test_a_commit_survives_a_reopen_and_a_rollback_leaves_nothing(
    factory: StoreFactory, tmp_path: Path
) -> None:
    store = factory.open(tmp_path)
    acct = seed_small_ledger(store)
    store.begin()
    store.transfer(acct.card, acct.merchant, 100, CNY, "kept", NOW)
    store.insert_txn(txn_row("kept"))
    store.put_ksn_state("device-1", 7, 0b1, NOW)
    store.commit()
    store.begin()
    store.transfer(acct.card, acct.merchant, 200, CNY, "dropped", NOW)
    store.insert_txn(txn_row("dropped", seq=2))
    store.put_ksn_state("device-1", 9, 0b11, NOW)
    store.rollback()
    store.close()

    again = factory.open(tmp_path)
    try:
        assert balances(again, acct.card, acct.merchant) == [
            (OPENING_MINOR - 100, OPENING_MINOR - 100), (100, 100)]
        assert again.get_txn("kept") == txn_row("kept")
        assert again.get_txn("dropped") is None
        assert again.get_ksn_state("device-1") == (7, 0b1)
        assert again.check_invariants(NOW) == []
    finally:
        again.close()


def test_a_write_block_rolls_back_when_it_raises(
    store: AdminLedgerStore, accounts: SmallLedger
) -> None:
    with pytest.raises(ZeroDivisionError), store.write():
        store.transfer(accounts.card, accounts.merchant, 100, CNY, "lost", NOW)
        store.insert_txn(txn_row("lost"))
        _ = 1 / 0
    assert balances(store, accounts.card)[0][0] == OPENING_MINOR
    assert store.get_txn("lost") is None


def test_undoing_a_request_drops_its_writes_and_only_them(
    store: AdminLedgerStore, accounts: SmallLedger
) -> None:
    with store.write():
        card_id = store.insert_card(card_row(accounts.card), NOW)
    store.begin()
    store.begin_request()
    store.transfer(accounts.card, accounts.merchant, 100, CNY, "first", NOW)
    store.insert_txn(txn_row("first"))
    store.end_request()

    store.begin_request()
    assert store.cached_card_by_hash(b"h" * 32) is not None  # read before the writes
    assert store.get_ksn_state("device-1") is None
    store.transfer(accounts.card, accounts.merchant, 200, CNY, "second", NOW)
    store.insert_txn(txn_row("second", seq=2))
    store.put_ksn_state("device-1", 3, 0b1, NOW)
    store.set_pin_tries(card_id, 2, False)
    store.remember_reversal("orig", "second", NOW)
    store.undo_request()

    # Inside the still open batch: the first request stays, the second is gone,
    # and no read answers with a value the undo dropped.
    assert store.get_txn("first") is not None
    assert store.get_txn("second") is None
    assert store.get_ksn_state("device-1") is None
    card = store.cached_card_by_hash(b"h" * 32)
    assert card is not None and card.pin_tries == 0
    assert store.remembered_reversal("orig") is None
    assert balances(store, accounts.card)[0][0] == OPENING_MINOR - 100

    store.begin_request()
    store.transfer(accounts.card, accounts.merchant, 300, CNY, "third", NOW)
    store.end_request()
    store.commit()
    assert balances(store, accounts.card, accounts.merchant) == [
        (OPENING_MINOR - 400, OPENING_MINOR - 400), (400, 400)]
    assert store.check_invariants(NOW) == []


def test_a_refused_group_inside_a_request_leaves_the_request_undoable(
    store: AdminLedgerStore, accounts: SmallLedger
) -> None:
    store.begin()
    store.begin_request()
    store.transfer(accounts.card, accounts.merchant, 100, CNY, "ok", NOW)
    with pytest.raises(InsufficientFunds):
        store.transfer(accounts.card, accounts.merchant, OPENING_MINOR, CNY, "too much", NOW)
    store.undo_request()
    store.commit()
    assert balances(store, accounts.card)[0][0] == OPENING_MINOR


def test_reference_version_moves_when_another_writer_commits_reference_data(
    factory: StoreFactory, tmp_path: Path
) -> None:
    store = factory.open(tmp_path)
    other = factory.open(tmp_path)
    try:
        version = store.reference_version()
        assert store.reference_version() == version  # nothing changed: no reload
        with other.write():
            other.upsert_terminal(TerminalRow("TERM0009", "M1", False, frozenset({"00"})))
        assert store.reference_version() != version
        assert "TERM0009" in store.load_terminals()

        version = store.reference_version()
        with other.write():
            other.add_blacklist("pan", "hash", "test")
        assert store.reference_version() != version
        assert ("pan", "hash") in store.load_blacklist()
    finally:
        other.close()
        store.close()


def test_another_writers_card_and_replay_state_are_seen_at_the_next_batch(
    factory: StoreFactory, tmp_path: Path
) -> None:
    store = factory.open(tmp_path)
    acct = seed_small_ledger(store)
    with store.write():
        card_id = store.insert_card(card_row(acct.card), NOW)
        store.put_ksn_state("device-1", 1, 0b1, NOW)
    with store.write():  # read (and perhaps cached) inside a batch
        assert store.cached_card_by_hash(b"h" * 32) is not None
        assert store.get_ksn_state("device-1") == (1, 0b1)
    other = factory.open(tmp_path)
    try:
        with other.write():
            other.set_card_state(card_id, "blocked")
            other.put_ksn_state("device-1", 5, 0b10001, NOW)
        with store.write():
            card = store.cached_card_by_hash(b"h" * 32)
            assert card is not None and card.state == "blocked"
            assert store.get_ksn_state("device-1") == (5, 0b10001)
    finally:
        other.close()
        store.close()


# -- money ------------------------------------------------------------------------


def test_transfers_move_money_with_fresh_increasing_ids(
    store: AdminLedgerStore, accounts: SmallLedger
) -> None:
    with store.write():
        first = store.transfer(accounts.card, accounts.merchant, 1_000, CNY, "a", NOW)
        second = store.transfer(accounts.merchant, accounts.card, 300, CNY, "b", NOW)
    assert second > first
    assert balances(store, accounts.card, accounts.merchant) == [
        (OPENING_MINOR - 700, OPENING_MINOR - 700), (700, 700)]


def test_a_cardholder_never_goes_below_zero_a_merchant_may(
    store: AdminLedgerStore, accounts: SmallLedger
) -> None:
    with store.write():
        with pytest.raises(InsufficientFunds):
            store.transfer(accounts.card, accounts.merchant, OPENING_MINOR + 1, CNY, "x", NOW)
        store.transfer(accounts.merchant, accounts.card, 5_000, CNY, "refund", NOW)
    assert balances(store, accounts.card, accounts.merchant) == [
        (OPENING_MINOR + 5_000, OPENING_MINOR + 5_000), (-5_000, -5_000)]
    with store.write(), pytest.raises(InsufficientFunds):
        store.hold(accounts.card, accounts.merchant, OPENING_MINOR + 5_001, CNY, LATER, "h", NOW)
    assert store.due_holds(LATER) == []


@pytest.mark.parametrize("refusal", ["closed", "currency", "zero", "negative", "same", "unknown"])
def test_refused_transfers_write_nothing(
    store: AdminLedgerStore, accounts: SmallLedger, refusal: str
) -> None:
    debit, credit, amount = accounts.card, accounts.merchant, 100
    expected: type[LedgerError] = InvalidAmount
    if refusal == "closed":
        credit, expected = accounts.closed, AccountClosed
    elif refusal == "currency":
        credit, expected = accounts.dollars, CurrencyMismatch
    elif refusal == "zero":
        amount = 0
    elif refusal == "negative":
        amount = -5
    elif refusal == "same":
        credit = debit
    else:
        credit, expected = 999_999, AccountNotFound
    before = store.list_accounts()
    with store.write():
        with pytest.raises(expected):
            store.transfer(debit, credit, amount, CNY, "refused", NOW)
        with pytest.raises(expected):
            store.hold(debit, credit, amount, CNY, LATER, "refused", NOW)
    assert store.list_accounts() == before
    assert store.due_holds(LATER) == []


def test_a_linked_group_applies_whole_or_not_at_all(
    store: AdminLedgerStore, accounts: SmallLedger
) -> None:
    good = Entry(TransferKind.POSTED, accounts.card, accounts.merchant, 100, CNY, ref="g")
    bad = Entry(TransferKind.POSTED, accounts.card, accounts.closed, 100, CNY, ref="b")
    before = store.list_accounts()
    with store.write():
        with pytest.raises(AccountClosed):
            store.move([good, bad], NOW)
        ids = store.move([good, good], NOW)
    assert len(ids) == 2 and ids[1] > ids[0]
    after = {a.id: a for a in store.list_accounts()}
    assert after[accounts.card].debits_posted == next(
        a for a in before if a.id == accounts.card).debits_posted + 200


def test_a_hold_reserves_then_posts_part_and_releases_the_rest(
    store: AdminLedgerStore, accounts: SmallLedger
) -> None:
    with store.write():
        hold_id = store.hold(accounts.card, accounts.merchant, 3_000, CNY, LATER, "h", NOW)
    hold = store.get_hold(hold_id)
    assert hold is not None and hold.state == HoldState.PENDING and hold.amount_minor == 3_000
    assert balances(store, accounts.card) == [(OPENING_MINOR, OPENING_MINOR - 3_000)]
    with store.write():
        with pytest.raises(InvalidAmount):
            store.post_hold(hold_id, 3_001, "too much", NOW)
        store.post_hold(hold_id, 2_000, "post", NOW)
    hold = store.get_hold(hold_id)
    assert hold is not None and hold.state == HoldState.POSTED and hold.posted_minor == 2_000
    assert balances(store, accounts.card, accounts.merchant) == [
        (OPENING_MINOR - 2_000, OPENING_MINOR - 2_000), (2_000, 2_000)]
    with store.write():
        for resolve_again in (
            lambda: store.post_hold(hold_id, 1, "again", NOW),
            lambda: store.void_hold(hold_id, "again", NOW),
            lambda: store.expire_holds([hold_id], LATER),
        ):
            with pytest.raises(HoldNotPending):
                resolve_again()
        with pytest.raises(HoldNotPending):
            store.void_hold(999_999, "no such hold", NOW)
    assert store.check_invariants(NOW) == []


def test_a_void_releases_a_hold_even_once_an_account_closed(
    store: AdminLedgerStore, accounts: SmallLedger
) -> None:
    with store.write():
        posted = store.hold(accounts.card, accounts.merchant, 1_000, CNY, LATER, "a", NOW)
        voided = store.hold(accounts.card, accounts.merchant, 1_000, CNY, LATER, "b", NOW)
        store.set_account_closed(accounts.merchant, True)
        with pytest.raises(AccountClosed):
            store.post_hold(posted, 1_000, "post", NOW)
        store.void_hold(voided, "void", NOW)
    hold = store.get_hold(voided)
    assert hold is not None and hold.state == HoldState.VOIDED and hold.posted_minor == 0
    assert balances(store, accounts.card) == [(OPENING_MINOR, OPENING_MINOR - 1_000)]


def test_due_holds_are_the_pending_ones_past_expiry_and_expire_once(
    store: AdminLedgerStore, accounts: SmallLedger
) -> None:
    with store.write():
        ids = [
            store.hold(accounts.card, accounts.merchant, 100, CNY, NOW + timedelta(hours=h),
                       f"h{h}", NOW)
            for h in (3, 1, 2, 5)
        ]
        store.void_hold(ids[1], "void", NOW)
    at = NOW + timedelta(hours=3)
    assert store.due_holds(NOW) == []
    assert store.due_holds(at) == sorted([ids[0], ids[2]])
    with store.write():
        store.expire_holds([], at)
        store.expire_holds(store.due_holds(at), at)
    assert store.due_holds(at) == []
    states = [store.get_hold(i).state for i in ids]  # type: ignore[union-attr]
    assert states == [HoldState.EXPIRED, HoldState.VOIDED, HoldState.EXPIRED, HoldState.PENDING]
    assert balances(store, accounts.card) == [(OPENING_MINOR, OPENING_MINOR - 100)]
    assert store.check_invariants(at) == []


# -- decisions -------------------------------------------------------------------


def test_a_decision_is_stored_once_under_its_key(
    factory: StoreFactory, store: AdminLedgerStore
) -> None:
    first = txn_row("k1", seq=4)
    with store.write():
        store.insert_txn(first)
        store.insert_txn(txn_row("k2", seq=9))
    assert store.get_txn("k1") == first
    assert store.get_txn("nope") is None
    assert store.max_txn_seq() == 9
    assert store.count_txns() == 2
    with pytest.raises(factory.duplicate_key), store.write():
        store.insert_txn(txn_row("k1", rc=ResponseCode.INSUFFICIENT_FUNDS, seq=10))
    assert store.get_txn("k1") == first
    assert [t.key for t in store.journal(10)] == ["k2", "k1"]


def test_update_txn_changes_state_and_the_original_key_only_when_given(
    store: AdminLedgerStore,
) -> None:
    with store.write():
        store.insert_txn(txn_row("k", orig_key="before"))
        store.update_txn("k", state=TxnState.HELD, effective_minor=500, hold_id=7)
    row = store.get_txn("k")
    assert row is not None
    assert (row.state, row.effective_minor, row.hold_id, row.orig_key) == (
        TxnState.HELD, 500, 7, "before")
    with store.write():
        store.update_txn("k", state=TxnState.COMPLETED, effective_minor=400, hold_id=7,
                         orig_key="after")
    row = store.get_txn("k")
    assert row is not None
    assert (row.state, row.effective_minor, row.orig_key) == (TxnState.COMPLETED, 400, "after")


def test_txn_by_hold_finds_only_a_held_or_referred_decision(store: AdminLedgerStore) -> None:
    with store.write():
        store.insert_txn(txn_row("held", hold_id=1, state=TxnState.HELD, seq=1))
        store.insert_txn(txn_row("referred", hold_id=2, state=TxnState.REFERRED, seq=2))
        store.insert_txn(txn_row("done", hold_id=3, state=TxnState.COMPLETED, seq=3))
    assert [store.txn_by_hold(h).key for h in (1, 2)] == ["held", "referred"]  # type: ignore[union-attr]
    assert store.txn_by_hold(3) is None
    assert store.txn_by_hold(4) is None


def test_recent_debit_requests_are_what_the_velocity_rule_saw(store: AdminLedgerStore) -> None:
    base = NOW - timedelta(minutes=10)

    def at(minutes: int) -> str:
        return ts(base + timedelta(minutes=minutes))

    rows: dict[str, dict[str, object]] = {
        "counted-late": dict(card_id=1, created_at=at(5)),
        "counted-early": dict(card_id=2, created_at=at(2), mti="0100", code="010000",
                              rc=ResponseCode.DO_NOT_HONOUR),
        "transfer": dict(card_id=1, created_at=at(3), code="401000"),
        "repeat": dict(card_id=1, created_at=at(4), mti="0201"),
        "too-old": dict(card_id=1, created_at=at(0)),
        "declined-51": dict(card_id=1, created_at=at(6), rc=ResponseCode.INSUFFICIENT_FUNDS),
        "refund": dict(card_id=1, created_at=at(6), code="200000"),
        "reversal": dict(card_id=1, created_at=at(6), mti="0400"),
        "no-card": dict(card_id=None, created_at=at(6)),
    }
    with store.write():
        for seq, (key, changes) in enumerate(rows.items(), 1):
            store.insert_txn(txn_row(key, seq=seq, **changes))
    assert store.recent_debit_requests(base + timedelta(minutes=1)) == [
        (2, at(2)), (1, at(3)), (1, at(4)), (1, at(5))]


def test_an_approval_code_is_used_per_card_and_business_day(store: AdminLedgerStore) -> None:
    with store.write():
        store.insert_txn(txn_row("k", card_id=5, business_day="2025-03-01", auth_code="123456"))
    assert store.auth_code_used(5, "2025-03-01", "123456")
    assert not store.auth_code_used(5, "2025-03-02", "123456")
    assert not store.auth_code_used(6, "2025-03-01", "123456")
    assert not store.auth_code_used(5, "2025-03-01", "123457")


def test_prune_forgets_old_settled_records_and_never_replay_state(
    store: AdminLedgerStore,
) -> None:
    old, new = ts(NOW - timedelta(days=40)), ts(NOW)
    with store.write():
        store.insert_txn(txn_row("old-posted", created_at=old, seq=1))
        store.insert_txn(txn_row("old-held", created_at=old, state=TxnState.HELD, seq=2))
        store.insert_txn(txn_row("old-referred", created_at=old, state=TxnState.REFERRED, seq=3))
        store.insert_txn(txn_row("new-posted", created_at=new, seq=4))
        store.remember_reversal("old-orig", "r1", NOW - timedelta(days=40))
        store.remember_reversal("new-orig", "r2", NOW)
        store.put_ksn_state("device-1", 9, 0b1, NOW - timedelta(days=400))
    with store.write():
        assert store.prune(NOW - timedelta(days=30)) == 2
    assert store.get_txn("old-posted") is None
    assert all(store.get_txn(k) for k in ("old-held", "old-referred", "new-posted"))
    assert store.remembered_reversal("old-orig") is None
    assert store.remembered_reversal("new-orig") == "r2"
    assert store.get_ksn_state("device-1") == (9, 0b1)


# -- reversals of unknown originals, reviews, alerts ------------------------------


def test_a_remembered_reversal_keeps_its_first_reversal(store: AdminLedgerStore) -> None:
    assert store.remembered_reversal("orig") is None
    with store.write():
        store.remember_reversal("orig", "rev-1", NOW)
        store.remember_reversal("orig", "rev-2", NOW)
        store.remember_reversal("other", "rev-3", NOW)
    assert store.remembered_reversal("orig") == "rev-1"
    assert store.remembered_orig_keys(2) == {"orig", "other"}
    assert store.remembered_orig_keys(1) is None  # more than the limit


def test_the_review_queue_reads_back_what_was_decided(store: AdminLedgerStore) -> None:
    with store.write():
        first = store.add_review("k1", 11, NOW)
        second = store.add_review("k2", 12, NOW)
        store.set_review(first, "approved", 21, LATER)
    assert second != first
    assert store.get_review(first) == (first, "k1", 21, "approved")
    assert store.review_by_txn("k2") == (second, "k2", 12, "pending")
    assert store.get_review(999) is None and store.review_by_txn("nope") is None
    pending = store.list_reviews("pending")
    assert [(r[0], r[3]) for r in pending] == [(second, "pending")]
    assert [r[0] for r in store.list_reviews(None)] == [first, second]


def test_alerts_list_newest_first(store: AdminLedgerStore) -> None:
    with store.write():
        store.add_alert(NOW, "velocity", "decline", "k1", "476173******0010", "6 in 60 s")
        store.add_alert(LATER, "unusual", "review", "k2", "476173******0028", "x10")
    listed = store.list_alerts(10)
    assert [(a[2], a[4]) for a in listed] == [("unusual", "k2"), ("velocity", "k1")]
    assert len(store.list_alerts(1)) == 1


# -- DUKPT replay state, cards, usage ----------------------------------------------


def test_replay_state_is_read_back_and_replaced(store: AdminLedgerStore) -> None:
    assert store.get_ksn_state("device-1") is None
    with store.write():
        store.put_ksn_state("device-1", 3, 0b101, NOW)
        assert store.get_ksn_state("device-1") == (3, 0b101)
        store.put_ksn_state("device-1", 4, 0b1011, NOW)
    assert store.get_ksn_state("device-1") == (4, 0b1011)
    assert store.get_ksn_state("device-2") is None


def test_cards_read_back_by_hash_and_id_and_see_their_updates(
    store: AdminLedgerStore, accounts: SmallLedger
) -> None:
    with store.write():
        card_id = store.insert_card(card_row(accounts.card), NOW)
        assert store.cached_card_by_hash(b"h" * 32) is not None
        store.set_pin_tries(card_id, 3, True)
    for read in (store.card_by_hash(b"h" * 32), store.cached_card_by_hash(b"h" * 32),
                 store.get_card(card_id)):
        assert read is not None
        assert (read.id, read.pin_tries, read.pin_blocked, read.account_id) == (
            card_id, 3, True, accounts.card)
    with store.write():
        store.set_card_state(card_id, "lost")
    lost = store.cached_card_by_hash(b"h" * 32)
    assert lost is not None and lost.state == "lost"
    assert store.card_by_hash(b"x" * 32) is None and store.get_card(card_id + 1) is None
    assert [c.id for c in store.list_cards()] == [card_id]
    assert store.card_owns_account(card_id, accounts.card)
    assert not store.card_owns_account(card_id, accounts.merchant)
    with store.write():
        store.link_card_account(card_id, accounts.merchant)
    assert store.card_owns_account(card_id, accounts.merchant)


def test_daily_usage_accumulates_per_card_and_day(store: AdminLedgerStore) -> None:
    with store.write():
        store.add_daily_usage(1, "2025-03-01", 1_000, 1)
        store.add_daily_usage(1, "2025-03-01", 500, 1)
        store.add_daily_usage(1, "2025-03-01", -200, 0)
        store.add_daily_usage(1, "2025-02-28", 3_000, 2)
        store.add_daily_usage(2, "2025-03-01", 9_999, 9)
    assert store.card_usage(1, "2025-03-01") == (1_300, 2, 4_300, 4)
    assert store.card_usage(1, "2025-03-02") == (0, 0, 4_300, 4)
    assert store.card_usage(3, "2025-03-01") == (0, 0, 0, 0)
    assert store.usual_debit(1) == (4_300, 4)


def test_terminal_refunds_accumulate_per_terminal_and_day(store: AdminLedgerStore) -> None:
    with store.write():
        store.add_terminal_refunds("T1", "2025-03-01", 1_000)
        store.add_terminal_refunds("T1", "2025-03-01", 500)
        store.add_terminal_refunds("T1", "2025-03-01", -1_000)  # a reversal gives back
        store.add_terminal_refunds("T1", "2025-02-28", 3_000)
        store.add_terminal_refunds("T2", "2025-03-01", 9_999)
    assert store.terminal_refunds("T1", "2025-03-01") == 500
    assert store.terminal_refunds("T1", "2025-02-28") == 3_000
    assert store.terminal_refunds("T1", "2025-03-02") == 0
    assert store.terminal_refunds("T3", "2025-03-01") == 0


def test_terminal_refunds_of_an_undone_request_are_gone(store: AdminLedgerStore) -> None:
    store.begin()
    store.begin_request()
    store.add_terminal_refunds("T1", "2025-03-01", 700)
    store.end_request()
    store.begin_request()
    store.add_terminal_refunds("T1", "2025-03-01", 300)
    store.undo_request()
    store.commit()
    assert store.terminal_refunds("T1", "2025-03-01") == 700


# -- reference data, accounts, meta ------------------------------------------------


def test_reference_data_reads_back_as_upserted(store: AdminLedgerStore) -> None:
    with store.write():
        store.upsert_issuer(IssuerRow("ONUS", "on-us", True))
        store.upsert_issuer(IssuerRow("ONUS", "on-us issuer", True))
        store.set_route("476173", "ONUS")
        store.set_route("476173", "OTHER")
        store.upsert_merchant(MerchantRow("M1", "shop", 1, 2))
        store.upsert_terminal(TerminalRow("T1", "M1", True, frozenset({"00", "01"})))
        store.upsert_terminal(TerminalRow("T1", "M1", False, frozenset()))
        store.add_blacklist("pan", "a", "stolen")
        store.add_blacklist("terminal", "T9", "fraud")
        assert store.set_issuer_available("ONUS", False)
        assert not store.set_issuer_available("NOPE", False)
        assert store.remove_blacklist("terminal", "T9")
        assert not store.remove_blacklist("terminal", "T9")
    assert store.load_issuers() == {"ONUS": IssuerRow("ONUS", "on-us issuer", False)}
    assert store.load_routes() == {"476173": "OTHER"}
    assert store.load_merchants() == {"M1": MerchantRow("M1", "shop", 1, 2)}
    assert store.load_terminals() == {"T1": TerminalRow("T1", "M1", False, frozenset())}
    assert store.load_blacklist() == frozenset({("pan", "a")})
    assert store.list_blacklist() == [("pan", "a", "stolen")]


def test_a_terminals_refund_policy_reads_back_as_upserted(store: AdminLedgerStore) -> None:
    no_refunds = TerminalRow("T1", "M1", True, frozenset({"00", "20"}), refunds_allowed=False)
    capped = TerminalRow("T2", "M1", True, frozenset({"20"}), True, refund_day_minor=50_000)
    with store.write():
        store.upsert_terminal(no_refunds)
        store.upsert_terminal(capped)
    assert store.load_terminals() == {"T1": no_refunds, "T2": capped}
    uncapped = TerminalRow("T2", "M1", True, frozenset({"20"}))
    with store.write():
        store.upsert_terminal(uncapped)
    assert store.load_terminals()["T2"] == uncapped
    assert uncapped.refunds_allowed and uncapped.refund_day_minor is None


def test_accounts_are_found_by_id_and_number(
    store: AdminLedgerStore, accounts: SmallLedger
) -> None:
    card = store.account_by_number("C")
    assert card is not None and card.id == accounts.card
    assert store.get_account(accounts.card) == card
    assert store.account_by_number("nope") is None
    with pytest.raises(AccountNotFound):
        store.get_account(999_999)
    assert [a.number for a in store.list_accounts()] == ["X", "EQ", "C", "M", "U"]
    assert store.get_account(accounts.closed).closed


def test_meta_values_read_back(store: AdminLedgerStore) -> None:
    assert store.get_meta("k") is None
    with store.write():
        store.set_meta("k", "1")
        store.set_meta("k", "2")
    assert store.get_meta("k") == "2"


# -- a stateful model of balances and holds ------------------------------------------


class MoneyModel(RuleBasedStateMachine):
    """Random transfers, holds, posts, voids, expiries and undone requests
    against a store and a dict of each account's four totals; after every
    step the store's totals equal the model's and its invariants hold.
    Every rule runs as one request in one batch, as the processor does."""

    factory: StoreFactory = IMPLEMENTATIONS[0]

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="store-contract-"))
        self.store = self.factory.open(self.tmp)
        self.ids = seed_small_ledger(self.store)
        self.cardholders = {self.ids.card}
        # account id -> [debits pending, debits posted, credits pending, credits posted]
        self.totals = {
            self.ids.equity: [0, OPENING_MINOR, 0, 0],
            self.ids.card: [0, 0, 0, OPENING_MINOR],
            self.ids.merchant: [0, 0, 0, 0],
        }
        self.pending: dict[int, tuple[int, datetime]] = {}  # hold id -> (amount, expiry)
        self.now = NOW

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _apply(self, changes: list[tuple[int, int, int]]) -> bool:
        """Apply (account, total index, delta) to a copy; keep it if no
        cardholder falls below zero. Returns whether it was kept."""
        totals = {k: list(v) for k, v in self.totals.items()}
        for account, index, delta in changes:
            totals[account][index] += delta
        for account in self.cardholders:
            dp, dpo, _, cpo = totals[account]
            if dp + dpo > cpo:
                return False
        self.totals = totals
        return True

    def _request(self, action: Callable[[], object], *, undo: bool = False) -> object:
        store = self.store
        store.begin()
        store.begin_request()
        try:
            result = action()
        except LedgerError:
            store.undo_request()
            store.commit()
            raise
        if undo:
            store.undo_request()
        else:
            store.end_request()
        store.commit()
        return result

    @rule(card_pays=st.booleans(), amount=st.integers(1, 60_000), undo=st.booleans())
    def transfer(self, card_pays: bool, amount: int, undo: bool) -> None:
        debit, credit = (self.ids.card, self.ids.merchant)
        if not card_pays:
            debit, credit = credit, debit
        fits = self._would_fit(debit, amount)
        try:
            self._request(lambda: self.store.transfer(debit, credit, amount, CNY, "t", self.now),
                          undo=undo)
        except InsufficientFunds:
            assert not fits
            return
        assert fits
        if not undo:  # an undone request leaves the model as it was
            assert self._apply([(debit, 1, amount), (credit, 3, amount)])

    def _would_fit(self, debit: int, amount: int) -> bool:
        dp, dpo, _, cpo = self.totals[debit]
        return debit not in self.cardholders or dp + dpo + amount <= cpo

    @rule(amount=st.integers(1, 30_000), hours=st.integers(1, 48))
    def hold(self, amount: int, hours: int) -> None:
        expires = self.now + timedelta(hours=hours)
        kept = self._apply([(self.ids.card, 0, amount), (self.ids.merchant, 2, amount)])
        try:
            hold_id = self._request(lambda: self.store.hold(
                self.ids.card, self.ids.merchant, amount, CNY, expires, "h", self.now))
        except InsufficientFunds:
            assert not kept
            return
        assert kept and isinstance(hold_id, int)
        self.pending[hold_id] = (amount, expires)

    def _release(self, hold_id: int) -> list[tuple[int, int, int]]:
        amount, _ = self.pending[hold_id]
        return [(self.ids.card, 0, -amount), (self.ids.merchant, 2, -amount)]

    @precondition(lambda self: self.pending)
    @rule(pick=st.integers(0, 1_000), percent=st.integers(1, 100))
    def post(self, pick: int, percent: int) -> None:
        hold_id = sorted(self.pending)[pick % len(self.pending)]
        amount = max(1, self.pending[hold_id][0] * percent // 100)
        moved = [(self.ids.card, 1, amount), (self.ids.merchant, 3, amount)]
        assert self._apply(self._release(hold_id) + moved)  # a hold always covers its post
        self._request(lambda: self.store.post_hold(hold_id, amount, "p", self.now))
        del self.pending[hold_id]

    @precondition(lambda self: self.pending)
    @rule(pick=st.integers(0, 1_000))
    def void(self, pick: int) -> None:
        hold_id = sorted(self.pending)[pick % len(self.pending)]
        assert self._apply(self._release(hold_id))
        self._request(lambda: self.store.void_hold(hold_id, "v", self.now))
        del self.pending[hold_id]
        with pytest.raises(HoldNotPending):
            self._request(lambda: self.store.void_hold(hold_id, "again", self.now))

    @rule(hours=st.integers(1, 24))
    def time_passes(self, hours: int) -> None:
        self.now += timedelta(hours=hours)
        due = sorted(h for h, (_, expires) in self.pending.items() if expires <= self.now)
        assert self.store.due_holds(self.now) == due
        for hold_id in due:
            assert self._apply(self._release(hold_id))
            del self.pending[hold_id]
        self._request(lambda: self.store.expire_holds(due, self.now))
        assert self.store.due_holds(self.now) == []

    @invariant()
    def store_matches_model(self) -> None:
        for account_id, (dp, dpo, cp, cpo) in self.totals.items():
            account = self.store.get_account(account_id)
            assert (account.debits_pending, account.debits_posted, account.credits_pending,
                    account.credits_posted) == (dp, dpo, cp, cpo)
        for hold_id in self.pending:
            hold = self.store.get_hold(hold_id)
            assert hold is not None and hold.state == HoldState.PENDING
        assert self.store.check_invariants(self.now) == []


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS, ids=lambda f: f.name)
def test_balances_and_holds_follow_the_model(implementation: StoreFactory) -> None:
    machine = type("MoneyModelOf" + implementation.name, (MoneyModel,),
                   {"factory": implementation})
    run_state_machine_as_test(
        machine, settings=settings(max_examples=30, stateful_step_count=25, deadline=None)
    )
