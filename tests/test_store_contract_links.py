"""The contract of the issuer-link methods of
:class:`iso_switch.ledger.LedgerStore` (forwarding records, link trace
numbers, the store-and-forward queue, due-from accounts, stand-in counters),
run like ``tests/test_store_contract.py`` against every implementation in
``tests.store_factories.IMPLEMENTATIONS`` and speaking only through the
Protocol. A stateful model drives the SAF queue: items of one transaction
go in order, nothing is lost, dead and refused items block nothing, expiry,
re-queueing and leases.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

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

from iso_switch.ledger import (
    AccountKind,
    AdminLedgerStore,
    Forward,
    ForwardOutcome,
    NewSafItem,
    SafKind,
    SafState,
    due_from_number,
)
from tests.helpers_ledger import CNY, USD, seed_small_ledger
from tests.helpers_ledger import LEDGER_NOW as NOW
from tests.store_factories import IMPLEMENTATIONS, StoreFactory

ISSUER = "bank-b"
NODE = "node-1"
SEALED = b"\x01sealed-by-the-caller"


def forward(txn_key: str, node: str = NODE, stan: str = "000001") -> Forward:
    return Forward(
        txn_key=txn_key, issuer_id=ISSUER, mti="0200", stan=stan, transmitted="0301120000",
        rrn="506012000001", amount_minor=1_500, currency=CNY, pan_masked="541333******0017",
        sealed=SEALED, node=node,
    )


def saf_item(group: str, kind: SafKind = SafKind.REVERSAL, issuer: str = ISSUER,
             stan: str = "000002") -> NewSafItem:
    mti = {SafKind.ADVICE: "0220", SafKind.COMPLETION: "0220", SafKind.REVERSAL: "0420"}[kind]
    return NewSafItem(
        issuer_id=issuer, txn_group=group, kind=kind, mti=mti, stan=stan,
        transmitted="0301120001", rrn="506012000001", amount_minor=1_500, currency=CNY,
        pan_masked="541333******0017", sealed=SEALED,
        fields=(("3", "000000"), ("4", "000000001500"), ("41", "TERM0001"), ("49", "156")),
    )


# -- forwarding records -----------------------------------------------------------


def test_a_forwarding_reads_back_and_is_recorded_once_per_key(
    factory: StoreFactory, store: AdminLedgerStore
) -> None:
    with store.write():
        store.record_forward(forward("k1"), NOW)
    got = store.get_forward("k1")
    assert got is not None
    assert replace(got, created_at="") == forward("k1")
    assert got.outcome == ForwardOutcome.NONE and got.created_at
    assert store.get_forward("nope") is None
    with pytest.raises(factory.duplicate_key), store.write():
        store.record_forward(forward("k1", stan="000009"), NOW)
    assert store.get_forward("k1") == got


def test_the_first_outcome_stays(store: AdminLedgerStore) -> None:
    with store.write():
        store.record_forward(forward("k1"), NOW)
        assert store.record_outcome("k1", ForwardOutcome.STAND_IN, "91", NOW)
        assert not store.record_outcome("k1", ForwardOutcome.ANSWERED, "00", NOW)  # late answer
        assert not store.record_outcome("nope", ForwardOutcome.ANSWERED, "00", NOW)
        with pytest.raises(ValueError, match="outcome"):
            store.record_outcome("k1", ForwardOutcome.NONE, "", NOW)
    got = store.get_forward("k1")
    assert got is not None and (got.outcome, got.outcome_rc) == (ForwardOutcome.STAND_IN, "91")


def test_forwards_without_outcome_are_a_nodes_undecided_ones_oldest_first(
    store: AdminLedgerStore,
) -> None:
    with store.write():
        store.record_forward(forward("old"), NOW)
        store.record_forward(forward("decided"), NOW)
        store.record_forward(forward("other-node", node="node-2"), NOW)
        store.record_forward(forward("young"), NOW + timedelta(seconds=30))
        store.record_outcome("decided", ForwardOutcome.ANSWERED, "00", NOW)
    later = NOW + timedelta(seconds=10)
    assert [f.txn_key for f in store.forwards_without_outcome(NODE, later)] == ["old"]
    assert [f.txn_key for f in store.forwards_without_outcome(
        NODE, NOW + timedelta(minutes=1))] == ["old", "young"]
    assert [f.txn_key for f in store.forwards_without_outcome("node-2", later)] == ["other-node"]
    with store.write():
        store.record_outcome("old", ForwardOutcome.RESTART, "91", later)
    assert store.forwards_without_outcome(NODE, later) == []


def test_a_forwarding_of_an_undone_request_is_gone(store: AdminLedgerStore) -> None:
    store.begin()
    store.begin_request()
    store.record_forward(forward("undone"), NOW)
    assert store.next_link_stan(ISSUER, NOW) == "000001"
    store.undo_request()
    store.commit()
    assert store.get_forward("undone") is None
    with store.write():
        assert store.next_link_stan(ISSUER, NOW) == "000001"  # given back


# -- link trace numbers -------------------------------------------------------------


def test_link_trace_numbers_count_per_issuer_and_survive_a_reopen(
    factory: StoreFactory, tmp_path: Path
) -> None:
    store = factory.open(tmp_path)
    with store.write():
        assert [store.next_link_stan(ISSUER, NOW) for _ in range(3)] == [
            "000001", "000002", "000003"]
        assert store.next_link_stan("bank-c", NOW) == "000001"
    store.begin()
    store.next_link_stan(ISSUER, NOW)
    store.rollback()
    store.close()
    again = factory.open(tmp_path)
    other = factory.open(tmp_path)  # another node on the same ledger
    try:
        with again.write():
            assert again.next_link_stan(ISSUER, NOW) == "000004"
        with other.write():
            assert other.next_link_stan(ISSUER, NOW) == "000005"
    finally:
        other.close()
        again.close()


def test_link_trace_numbers_cross_blocks_in_order(store: AdminLedgerStore) -> None:
    with store.write():
        drawn = [store.next_link_stan(ISSUER, NOW) for _ in range(1_002)]
    assert drawn == [f"{n:06d}" for n in range(1, 1_003)]


# -- store-and-forward ---------------------------------------------------------------


def test_an_item_reads_back_as_queued_and_refuses_plain_cardholder_data(
    store: AdminLedgerStore,
) -> None:
    with store.write():
        item_id = store.enqueue_saf(saf_item("t1"), NOW)
        for field_id in ("2", "14", "35", "52", "55"):
            with pytest.raises(ValueError, match=f"field {field_id} "):
                store.enqueue_saf(replace(saf_item("t1"), fields=((field_id, "x"),)), NOW)
    got = store.get_saf_item(item_id)
    assert got is not None and got.item == saf_item("t1")
    assert (got.state, got.attempts, got.last_rc, got.lease_node) == (SafState.QUEUED, 0, "", "")
    assert store.get_saf_item(item_id + 1) is None
    assert store.saf_counts() == {(ISSUER, SafState.QUEUED): 1}


def test_items_of_one_transaction_go_in_order_others_do_not_wait(
    store: AdminLedgerStore,
) -> None:
    with store.write():
        advice = store.enqueue_saf(saf_item("t1", SafKind.ADVICE), NOW)
        reversal = store.enqueue_saf(saf_item("t1", SafKind.REVERSAL), NOW)
        other = store.enqueue_saf(saf_item("t2"), NOW)
        store.enqueue_saf(saf_item("t3", issuer="bank-c"), NOW)
    assert [i.id for i in store.due_saf_items(ISSUER, NOW, 10)] == [advice, other]
    with store.write():
        claimed = store.claim_saf_items(ISSUER, NODE, NOW, 10, 5.0)
    assert [(i.id, i.state, i.attempts, i.lease_node) for i in claimed] == [
        (advice, SafState.OUTSTANDING, 1, NODE), (other, SafState.OUTSTANDING, 1, NODE)]
    assert store.due_saf_items(ISSUER, NOW, 10) == []  # the reversal waits for its advice
    with store.write():
        assert store.saf_acknowledged(advice, NODE, "00", NOW)
    assert [i.id for i in store.due_saf_items(ISSUER, NOW, 10)] == [reversal]
    assert store.due_saf_items(ISSUER, NOW, 0) == []


def test_a_retry_waits_its_interval_and_is_sent_as_a_repeat(store: AdminLedgerStore) -> None:
    with store.write():
        item_id = store.enqueue_saf(saf_item("t1"), NOW)
        store.claim_saf_items(ISSUER, NODE, NOW, 1, 5.0)
        assert store.saf_retry(item_id, NODE, "91", NOW, 10.0)
        assert not store.saf_retry(item_id, NODE, "91", NOW, 10.0)  # no longer outstanding
    assert store.due_saf_items(ISSUER, NOW + timedelta(seconds=9), 10) == []
    with store.write():
        again = store.claim_saf_items(ISSUER, NODE, NOW + timedelta(seconds=10), 10, 5.0)
    assert [(i.id, i.attempts, i.last_rc) for i in again] == [(item_id, 2, "91")]


def test_a_lease_gives_an_item_to_one_node_until_it_ends(
    factory: StoreFactory, tmp_path: Path
) -> None:
    one = factory.open(tmp_path)
    two = factory.open(tmp_path)
    try:
        with one.write():
            item_id = one.enqueue_saf(saf_item("t1"), NOW)
            assert [i.id for i in one.claim_saf_items(ISSUER, "one", NOW, 5, 30.0)] == [item_id]
        with two.write():
            assert two.claim_saf_items(ISSUER, "two", NOW + timedelta(seconds=29), 5, 30.0) == []
            assert not two.saf_acknowledged(item_id, "two", "00", NOW)  # not its item
            taken = two.claim_saf_items(ISSUER, "two", NOW + timedelta(seconds=30), 5, 30.0)
        assert [(i.id, i.lease_node, i.attempts) for i in taken] == [(item_id, "two", 2)]
        with one.write():
            assert not one.saf_acknowledged(item_id, "one", "00", NOW)  # its lease was lost
        with two.write():
            assert two.saf_acknowledged(item_id, "two", "00", NOW)
        got = one.get_saf_item(item_id)
        assert got is not None and (got.state, got.last_rc) == (SafState.ACKNOWLEDGED, "00")
    finally:
        two.close()
        one.close()


def test_refused_and_dead_items_block_nothing_and_can_be_requeued(
    store: AdminLedgerStore,
) -> None:
    with store.write():
        refused = store.enqueue_saf(saf_item("t1", SafKind.ADVICE), NOW)
        after_refused = store.enqueue_saf(saf_item("t1"), NOW)
        store.claim_saf_items(ISSUER, NODE, NOW, 1, 5.0)
        assert store.saf_refused(refused, NODE, "12", NOW)
    assert [i.id for i in store.due_saf_items(ISSUER, NOW, 10)] == [after_refused]
    expiry = NOW + timedelta(hours=72)
    with store.write():
        assert store.expire_saf_items(ISSUER, expiry - timedelta(seconds=1), 72) == 0
        assert store.expire_saf_items(ISSUER, expiry, 72) == 1
        late = store.enqueue_saf(saf_item("t1", SafKind.COMPLETION), expiry)
    assert [i.id for i in store.due_saf_items(ISSUER, expiry, 10)] == [late]
    dead = store.get_saf_item(after_refused)
    assert dead is not None and dead.state == SafState.DEAD
    assert store.saf_counts() == {(ISSUER, SafState.REFUSED): 1, (ISSUER, SafState.DEAD): 1,
                                  (ISSUER, SafState.QUEUED): 1}
    with store.write():
        assert store.requeue_saf_item(late, expiry) is None  # queued: nothing to re-queue
        requeued = store.requeue_saf_item(after_refused, expiry)
        assert store.requeue_saf_item(refused, expiry) is not None
        assert store.requeue_saf_item(999, expiry) is None
    assert requeued is not None and requeued.state == SafState.QUEUED
    assert requeued.queued_at > dead.queued_at  # its expiry clock starts again
    with store.write():
        assert store.expire_saf_items(ISSUER, expiry + timedelta(hours=1), 72) == 0
    # In queue order again: the re-queued advice, then the others of t1.
    assert [i.id for i in store.due_saf_items(ISSUER, expiry, 10)] == [refused]


def test_saf_listing_filters_by_state_and_issuer(store: AdminLedgerStore) -> None:
    with store.write():
        first = store.enqueue_saf(saf_item("t1"), NOW)
        second = store.enqueue_saf(saf_item("t2", issuer="bank-c"), NOW)
        store.claim_saf_items(ISSUER, NODE, NOW, 1, 5.0)
        store.saf_refused(first, NODE, "12", NOW)
    assert [i.id for i in store.list_saf_items(None, None, 10)] == [first, second]
    assert [i.id for i in store.list_saf_items([SafState.REFUSED], None, 10)] == [first]
    assert [i.id for i in store.list_saf_items(None, "bank-c", 10)] == [second]
    assert store.list_saf_items([SafState.DEAD], None, 10) == []
    assert len(store.list_saf_items(None, None, 1)) == 1


def test_an_item_of_an_undone_request_is_gone(store: AdminLedgerStore) -> None:
    store.begin()
    store.begin_request()
    store.enqueue_saf(saf_item("undone"), NOW)
    store.undo_request()
    store.commit()
    assert store.list_saf_items(None, None, 10) == []


# -- due-from accounts, stand-in counters ---------------------------------------------


def test_a_due_from_account_per_issuer_and_currency_without_a_floor(
    store: AdminLedgerStore,
) -> None:
    accounts = seed_small_ledger(store)
    with store.write():
        cny = store.due_from_account(ISSUER, CNY, NOW)
        assert store.due_from_account(ISSUER, CNY, NOW) == cny
        usd = store.due_from_account(ISSUER, USD, NOW)
        other = store.due_from_account("bank-c", CNY, NOW)
        store.transfer(cny, accounts.merchant, 70_000, CNY, "purchase", NOW)
        store.transfer(accounts.merchant, cny, 90_000, CNY, "refund", NOW)  # below zero: fine
    assert len({cny, usd, other}) == 3
    account = store.get_account(cny)
    assert (account.number, account.kind, account.currency) == (
        due_from_number(ISSUER, CNY), AccountKind.DUE_FROM, CNY)
    assert account.debits_posted - account.credits_posted == -20_000
    assert store.get_account(usd).currency == USD
    assert store.check_invariants(NOW) == []


def test_ledger_check_names_a_misfiled_due_from_account(store: AdminLedgerStore) -> None:
    with store.write():
        store.create_account(due_from_number(ISSUER, CNY), USD, AccountKind.DUE_FROM, NOW)
        store.create_account("due-from:x", CNY, AccountKind.SETTLEMENT, NOW)
    assert len(store.check_invariants(NOW)) == 2


def test_stand_in_usage_accumulates_per_card_and_day(store: AdminLedgerStore) -> None:
    card, other = b"p" * 32, b"q" * 32
    assert store.stand_in_usage(card, "2025-03-01") == (0, 0)
    with store.write():
        store.add_stand_in_usage(card, "2025-03-01", 1, 1_000)
        store.add_stand_in_usage(card, "2025-03-01", 1, 2_500)
        store.add_stand_in_usage(card, "2025-03-02", 1, 100)
        store.add_stand_in_usage(other, "2025-03-01", 1, 9)
    assert store.stand_in_usage(card, "2025-03-01") == (2, 3_500)
    assert store.stand_in_usage(card, "2025-03-02") == (1, 100)
    assert store.stand_in_usage(other, "2025-03-03") == (0, 0)


# -- a stateful model of the SAF queue -------------------------------------------------

LEASE_S = 5.0
RETRY_S = 10.0
EXPIRY_H = 0.01  # 36 s
OPEN = (SafState.QUEUED, SafState.OUTSTANDING)


class SafModel(RuleBasedStateMachine):
    """Random enqueues, claims by two nodes, answers (acknowledged, retry,
    refused, from the right node or not), time passing, expiry and
    re-queueing against a store and a dict of each item's state. Each claim
    must return exactly the items the model says are due; after every step
    every item queued is still there in the model's state."""

    factory: StoreFactory = IMPLEMENTATIONS[0]

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="store-contract-saf-"))
        self.store = self.factory.open(self.tmp)
        self.now = NOW
        # id -> dict(group, state, next_at, queued_at, lease_node, lease_until, attempts)
        self.items: dict[int, dict[str, Any]] = {}

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _due(self, limit: int) -> list[int]:
        due, blocked = [], set()
        for item_id in sorted(self.items):
            item = self.items[item_id]
            if item["state"] not in OPEN:
                continue
            ready = (item["state"] == SafState.QUEUED and item["next_at"] <= self.now) or (
                item["state"] == SafState.OUTSTANDING and item["lease_until"] <= self.now)
            if ready and item["group"] not in blocked:
                due.append(item_id)
            blocked.add(item["group"])
        return due[:limit]

    @rule(group=st.integers(0, 3))
    def enqueue(self, group: int) -> None:
        with self.store.write():
            item_id = self.store.enqueue_saf(saf_item(f"t{group}"), self.now)
        assert item_id not in self.items
        self.items[item_id] = dict(group=group, state=SafState.QUEUED, next_at=self.now,
                                   queued_at=self.now, lease_node="", lease_until=self.now,
                                   attempts=0)

    @rule(node=st.sampled_from(["a", "b"]), limit=st.integers(1, 4))
    def claim(self, node: str, limit: int) -> None:
        expected = self._due(limit)
        assert [i.id for i in self.store.due_saf_items(ISSUER, self.now, limit)] == expected
        with self.store.write():
            claimed = self.store.claim_saf_items(ISSUER, node, self.now, limit, LEASE_S)
        assert [i.id for i in claimed] == expected
        for item_id in expected:
            item = self.items[item_id]
            item.update(state=SafState.OUTSTANDING, lease_node=node,
                        lease_until=self.now + timedelta(seconds=LEASE_S))
            item["attempts"] += 1

    @precondition(lambda self: self.items)
    @rule(pick=st.integers(0, 1_000), answer=st.sampled_from(["ack", "retry", "refuse"]),
          right_node=st.booleans())
    def answer(self, pick: int, answer: str, right_node: bool) -> None:
        item_id = sorted(self.items)[pick % len(self.items)]
        item = self.items[item_id]
        node = str(item["lease_node"]) if right_node else "stranger"
        settles = item["state"] == SafState.OUTSTANDING and node == item["lease_node"]
        with self.store.write():
            if answer == "ack":
                done = self.store.saf_acknowledged(item_id, node, "00", self.now)
                state = SafState.ACKNOWLEDGED
            elif answer == "retry":
                done = self.store.saf_retry(item_id, node, "91", self.now, RETRY_S)
                state = SafState.QUEUED
            else:
                done = self.store.saf_refused(item_id, node, "12", self.now)
                state = SafState.REFUSED
        assert done == settles
        if settles:
            item.update(state=state, lease_node="")
            if answer == "retry":
                item["next_at"] = self.now + timedelta(seconds=RETRY_S)

    @rule(seconds=st.integers(1, 40), expire=st.booleans())
    def time_passes(self, seconds: int, expire: bool) -> None:
        self.now += timedelta(seconds=seconds)
        if not expire:
            return
        cutoff = self.now - timedelta(hours=EXPIRY_H)
        expected = 0
        for item in self.items.values():
            ended = item["state"] == SafState.OUTSTANDING and item["lease_until"] <= self.now
            if item["queued_at"] <= cutoff and (item["state"] == SafState.QUEUED or ended):
                item.update(state=SafState.DEAD, lease_node="")
                expected += 1
        with self.store.write():
            assert self.store.expire_saf_items(ISSUER, self.now, EXPIRY_H) == expected

    @precondition(lambda self: self.items)
    @rule(pick=st.integers(0, 1_000))
    def requeue(self, pick: int) -> None:
        item_id = sorted(self.items)[pick % len(self.items)]
        item = self.items[item_id]
        with self.store.write():
            requeued = self.store.requeue_saf_item(item_id, self.now)
        if item["state"] in (SafState.DEAD, SafState.REFUSED):
            assert requeued is not None and requeued.state == SafState.QUEUED
            item.update(state=SafState.QUEUED, next_at=self.now, queued_at=self.now)
        else:
            assert requeued is None

    @invariant()
    def nothing_is_lost(self) -> None:
        stored = {i.id: i for i in self.store.list_saf_items(None, None, 10_000)}
        assert set(stored) == set(self.items)
        for item_id, item in self.items.items():
            got = stored[item_id]
            assert (got.state, got.attempts, got.lease_node) == (
                item["state"], item["attempts"], item["lease_node"])
            assert got.item.txn_group == f"t{item['group']}"
        counts: dict[tuple[str, SafState], int] = {}
        for item in self.items.values():
            key = (ISSUER, SafState(str(item["state"])))
            counts[key] = counts.get(key, 0) + 1
        assert self.store.saf_counts() == counts


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS, ids=lambda f: f.name)
def test_the_saf_queue_follows_the_model(implementation: StoreFactory) -> None:
    machine = type("SafModelOf" + implementation.name, (SafModel,),
                   {"factory": implementation})
    run_state_machine_as_test(
        machine, settings=settings(max_examples=40, stateful_step_count=30, deadline=None)
    )
