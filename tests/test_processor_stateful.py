"""Random sequences of every request type against the processor and a
simple in-memory reference model; the ledger invariants and every balance
are checked after each step.

The model knows only the business rules (limits, funds, holds, completions,
reversals before and after their originals, repeats, expiry, reviews), not
how the processor stores anything.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tests.helpers_ledger import (
    ACCOUNT_POOR,
    ACCOUNT_RICH,
    CASH,
    SETTLEMENT,
    completion,
    financial,
    make_env,
    reversal,
)

ZONE = ZoneInfo("Asia/Shanghai")
LIMIT_TXN = 500_000
LIMIT_DAY = 2_000_000
LIMIT_COUNT = 20
HOLD_DAYS = 7
REVIEW_ABOVE = 200_000
RETENTION = timedelta(days=45)  # ProcessorConfig.retention's default


@dataclass
class Txn:
    fields: dict[str, str]
    kind: str  # purchase | withdrawal | refund | auth | transfer
    amount: int
    rc: str
    day: str
    state: str = ""  # held | referred | posted | completed | reversed | expired | declined
    effective: int = 0
    expires: object = None
    completion_fields: dict[str, str] | None = None


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="ledger-stateful-"))
        self.env = make_env(self.tmp)
        assert self.env.processor.config.retention == RETENTION
        self.ledger = {ACCOUNT_RICH: 1_000_000, ACCOUNT_POOR: 5_000, SETTLEMENT: 0, CASH: 0}
        self.held = 0  # on ACCOUNT_RICH
        self.usage: dict[str, list[int]] = {}
        self.txns: list[Txn] = []
        self.sent: list[tuple[dict[str, str], str]] = []  # every stored (fields, rc)
        self.unsent: list[Txn] = []  # originals whose reversal came first
        self.reviews: list[Txn] = []
        self.elapsed = timedelta()

    def teardown(self) -> None:
        self.env.store.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- model helpers -------------------------------------------------------

    def day(self) -> str:
        return self.env.clock.now.astimezone(ZONE).date().isoformat()

    def expire_due(self) -> None:
        for txn in self.txns:
            if txn.state in ("held", "referred") and txn.expires <= self.env.clock.now:
                self.held -= txn.effective
                self.give_back(txn, txn.effective, full=True)
                txn.state, txn.effective = "expired", 0

    def give_back(self, txn: Txn, amount: int, full: bool) -> None:
        if txn.kind in ("purchase", "withdrawal", "auth", "transfer"):
            used = self.usage[txn.day]
            used[0] -= amount
            used[1] -= 1 if full else 0

    def expect_debit(self, amount: int) -> str:
        used = self.usage.setdefault(self.day(), [0, 0])
        if amount > LIMIT_TXN or used[0] + amount > LIMIT_DAY:
            return "61"
        if used[1] + 1 > LIMIT_COUNT:
            return "65"
        if self.ledger[ACCOUNT_RICH] - self.held < amount:
            return "51"
        return "00"

    def send(self, fields: dict[str, str], expected: str) -> None:
        self.expire_due()
        response = self.env.send(fields)
        assert response["39"] == expected, (fields["t"], fields.get("3"), response["39"],
                                            expected)
        self.sent.append((fields, expected))

    def new_original(self, kind: str, amount: int) -> Txn:
        code, mti, extra = {
            "purchase": ("000000", "0200", {}),
            "withdrawal": ("010000", "0200", {}),
            "refund": ("200000", "0200", {}),
            "auth": ("000000", "0100", {}),
            "transfer": ("400000", "0200", {"103": ACCOUNT_POOR}),
        }[kind]
        pin = "1234" if kind in ("withdrawal", "transfer") else None
        fields = financial(self.env, mti=mti, code=code, amount=amount, pin=pin, **extra)
        return Txn(fields, kind, amount, "", self.day())

    def decide(self, txn: Txn) -> None:
        """Send an original and update the model with its expected effect."""
        self.expire_due()
        if txn.kind == "refund":  # limited per transaction, by no daily limit
            txn.rc = "61" if txn.amount > LIMIT_TXN else "00"
        else:
            txn.rc = self.expect_debit(txn.amount)
        if txn.rc == "00" and txn.kind == "transfer" and txn.amount > REVIEW_ABOVE:
            txn.rc = "01"
        self.send(txn.fields, txn.rc)
        self.txns.append(txn)
        if txn.rc not in ("00", "01"):
            txn.state = "declined"
            return
        txn.effective = txn.amount
        if txn.kind != "refund":
            used = self.usage.setdefault(txn.day, [0, 0])
            used[0] += txn.amount
            used[1] += 1
        if txn.kind == "auth" or txn.rc == "01":
            txn.state = "held" if txn.rc == "00" else "referred"
            txn.expires = self.env.clock.now + timedelta(days=HOLD_DAYS)
            self.held += txn.amount
            if txn.rc == "01":
                self.reviews.append(txn)
            return
        txn.state = "posted"
        other = {"purchase": SETTLEMENT, "withdrawal": CASH, "refund": SETTLEMENT,
                 "transfer": ACCOUNT_POOR}[txn.kind]
        sign = 1 if txn.kind == "refund" else -1
        self.ledger[ACCOUNT_RICH] += sign * txn.amount
        self.ledger[other] -= sign * txn.amount

    # -- rules ------------------------------------------------------------------

    @rule(kind=st.sampled_from(["purchase", "withdrawal", "refund", "auth", "transfer"]),
          amount=st.integers(min_value=1, max_value=600_000))
    def original(self, kind: str, amount: int) -> None:
        self.decide(self.new_original(kind, amount))

    @precondition(lambda self: self.sent)
    @rule(pick=st.integers(min_value=0), repeat_mti=st.booleans())
    def retransmit(self, pick: int, repeat_mti: bool) -> None:
        fields, rc = self.sent[pick % len(self.sent)]
        again = dict(fields)
        if repeat_mti:
            again["t"] = fields["t"][:3] + "1"  # 0200 -> 0201, 0420 -> 0421
        self.send(again, rc)
        self.sent.pop()

    @precondition(lambda self: any(t.kind == "auth" for t in self.txns))
    @rule(pick=st.integers(min_value=0), fraction=st.integers(min_value=1, max_value=12))
    def complete(self, pick: int, fraction: int) -> None:
        auths = [t for t in self.txns if t.kind == "auth"]
        auth = auths[pick % len(auths)]
        amount = max(1, auth.amount * fraction // 10)
        fields = completion(self.env, auth.fields, amount)
        self.expire_due()
        if auth.state != "held":
            self.send(fields, "25")
            return
        if amount > auth.effective:
            self.send(fields, "13")
            return
        self.send(fields, "00")
        self.held -= auth.effective
        self.give_back(auth, auth.effective - amount, full=False)
        auth.state, auth.effective, auth.completion_fields = "completed", amount, fields
        self.ledger[ACCOUNT_RICH] -= amount
        self.ledger[SETTLEMENT] += amount

    @precondition(lambda self: self.txns)
    @rule(pick=st.integers(min_value=0), advice=st.booleans(),
          partial=st.one_of(st.none(), st.integers(min_value=0, max_value=10)),
          of_completion=st.booleans())
    def reverse(self, pick: int, advice: bool, partial: int | None, of_completion: bool) -> None:
        txn = self.txns[pick % len(self.txns)]
        target_fields = txn.fields
        if of_completion and txn.completion_fields is not None:
            target_fields = txn.completion_fields
        original_amount = int(target_fields["4"])
        actual = None if partial is None else original_amount * partial // 10
        fields = reversal(self.env, target_fields, mti="0420" if advice else "0400",
                          actual=actual)
        if "52" in fields:
            del fields["52"]
        self.expire_due()
        target = actual or 0
        delta = txn.effective - target
        if txn.state in ("held", "referred") and delta > 0:
            self.held -= delta
        elif txn.state in ("posted", "completed") and delta > 0:
            other = {"purchase": SETTLEMENT, "withdrawal": CASH, "refund": SETTLEMENT,
                     "transfer": ACCOUNT_POOR, "auth": SETTLEMENT}[txn.kind]
            sign = -1 if txn.kind == "refund" else 1
            if sign < 0 and self.ledger[ACCOUNT_RICH] - self.held < delta:
                self.send(fields, "51")
                return
            self.ledger[ACCOUNT_RICH] += sign * delta
            self.ledger[other] -= sign * delta
        else:
            self.send(fields, "00")
            return
        self.send(fields, "00")
        self.give_back(txn, delta, full=target == 0)
        txn.effective = target
        if target == 0:
            if txn.state == "referred":
                self.reviews.remove(txn)
            txn.state = "reversed"

    @rule(kind=st.sampled_from(["purchase", "auth"]),
          amount=st.integers(min_value=1, max_value=100_000))
    def reverse_before_original(self, kind: str, amount: int) -> None:
        txn = self.new_original(kind, amount)
        self.send(reversal(self.env, txn.fields), "00")
        self.unsent.append(txn)

    @precondition(lambda self: self.unsent)
    @rule()
    def late_original(self) -> None:
        txn = self.unsent.pop()
        self.send(txn.fields, "05")

    @precondition(lambda self: self.reviews)
    @rule(approve=st.booleans())
    def decide_review(self, approve: bool) -> None:
        self.expire_due()
        txn = self.reviews[0]
        if txn.state != "referred":
            self.reviews.pop(0)
            return
        self.env.processor.process_batch([])  # expire what is due, as the switch would
        reviews = self.env.store.list_reviews("pending")
        review_id = next(r[0] for r in reviews if r[1] == self.key_of(txn.fields))
        self.env.processor.decide_review(review_id, approve)
        self.reviews.pop(0)
        self.held -= txn.effective
        if approve:
            self.ledger[ACCOUNT_RICH] -= txn.effective
            self.ledger[ACCOUNT_POOR] += txn.effective
            txn.state = "posted"
        else:
            self.give_back(txn, txn.effective, full=True)
            txn.state, txn.effective = "declined", 0

    @staticmethod
    def key_of(fields: dict[str, str]) -> str:
        return f"{fields['t'][:3]}|{fields['41']}|{fields['11']}|{fields['7']}|"

    # The switch promises duplicate detection and reversal matching for
    # ``retention`` (45 days): a key older than that is forgotten and its
    # retransmission is a new original, which this model does not follow.
    # So the clock stays inside one retention window; holds (7 days) still
    # expire many times over.
    @precondition(lambda self: self.elapsed + timedelta(hours=170) < RETENTION)
    @rule(hours=st.sampled_from([1, 5, 20, 100, 170]))
    def advance(self, hours: int) -> None:
        self.env.clock.advance(timedelta(hours=hours))
        self.elapsed += timedelta(hours=hours)

    @invariant()
    def ledger_matches_model(self) -> None:
        self.env.processor.process_batch([])  # runs expiry like any batch
        self.expire_due()
        store = self.env.store
        assert store.check_invariants(self.env.clock.now) == []
        for number, expected in self.ledger.items():
            account = store.account_by_number(number)
            assert account is not None and account.ledger_balance_minor == expected, number
        rich = store.account_by_number(ACCOUNT_RICH)
        assert rich is not None
        assert rich.available_balance_minor == self.ledger[ACCOUNT_RICH] - self.held


LedgerMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=30,
                                           deadline=None)
TestLedgerMachine = LedgerMachine.TestCase
