"""Originals, repeats, duplicates, completions and reversals (interface.md
section 3), and expiry of holds."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from iso_switch.processor import Request
from tests.helpers_ledger import (
    ACCOUNT_RICH,
    SETTLEMENT,
    Env,
    completion,
    financial,
    make_env,
    reversal,
)


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return make_env(tmp_path)


def test_repeat_gets_the_stored_decision_and_changes_nothing(env: Env) -> None:
    original = financial(env, amount=1_000)
    first = env.send(original)
    repeat = dict(original, t="0201")
    again = env.send(repeat)
    assert {k: again[k] for k in ("37", "38", "39")} == {k: first[k] for k in ("37", "38", "39")}
    assert again["t"] == "0210"
    assert env.balance(ACCOUNT_RICH) == (999_000, 999_000)
    assert env.store.count_txns() == 1


def test_repeat_whose_original_never_arrived_is_an_original(env: Env) -> None:
    repeat = financial(env, mti="0201", amount=1_000)
    assert env.send(repeat)["39"] == "00"
    assert env.send(dict(repeat, t="0200"))["39"] == "00"
    assert env.balance(ACCOUNT_RICH) == (999_000, 999_000)


def test_declined_stays_declined_when_retried(env: Env) -> None:
    fields = financial(env, amount=2_000_000)  # over the balance: 61 per transaction
    assert env.send(fields)["39"] == "61"
    assert env.send(dict(fields, t="0201"))["39"] == "61"


def test_same_key_in_one_batch_is_decided_once(env: Env) -> None:
    original = financial(env, amount=1_000)
    now = env.clock.now
    outcomes = env.processor.process_batch([
        Request(original, "absent", now), Request(dict(original, t="0201"), "absent", now),
        Request(original, "absent", now),
    ])
    assert [o.log["decision"] for o in outcomes] == ["new", "stored", "stored"]
    assert len({o.response["37"] for o in outcomes}) == 1
    assert env.balance(ACCOUNT_RICH) == (999_000, 999_000)


def test_acquirer_id_is_part_of_the_key(env: Env) -> None:
    fields = financial(env, amount=1_000)
    assert env.send(fields)["39"] == "00"
    assert env.send(dict(fields, **{"32": "000000"}))["39"] == "00"  # same as absent: stored
    assert env.send(dict(fields, **{"32": "123"}))["39"] == "00"  # a different key: new
    assert env.balance(ACCOUNT_RICH) == (998_000, 998_000)


def test_authorization_then_partial_completion(env: Env) -> None:
    auth = financial(env, mti="0100", amount=10_000)
    assert env.send(auth)["39"] == "00"
    assert env.balance(ACCOUNT_RICH) == (1_000_000, 990_000)
    assert env.send(completion(env, auth, 10_001))["39"] == "13"
    done = completion(env, auth, 7_500)
    response = env.send(done)
    assert response["t"] == "0230" and response["39"] == "00"
    assert env.balance(ACCOUNT_RICH) == (992_500, 992_500)
    assert env.balance(SETTLEMENT) == (7_500, 7_500)
    assert env.send(dict(done, t="0221"))["39"] == "00"  # repeat: stored, nothing moves
    assert env.send(completion(env, auth, 100))["39"] == "25"  # the hold is gone
    assert env.balance(ACCOUNT_RICH) == (992_500, 992_500)
    assert env.store.check_invariants(env.clock.now) == []


def test_completion_with_other_card_is_12(env: Env) -> None:
    auth = financial(env, mti="0100", amount=10_000)
    env.send(auth)
    other = completion(env, auth, 100, **{"2": "4761739001010028"})
    assert env.send(other)["39"] == "12"


def test_full_reversal_of_purchase(env: Env) -> None:
    purchase = financial(env, amount=3_000)
    env.send(purchase)
    response = env.send(reversal(env, purchase))
    assert response["t"] == "0410" and response["39"] == "00" and "37" in response
    assert env.balance(ACCOUNT_RICH) == (1_000_000, 1_000_000)
    assert env.balance(SETTLEMENT) == (0, 0)
    # a reversal advice for the same original changes nothing more
    assert env.send(reversal(env, purchase, mti="0420"))["39"] == "00"
    assert env.balance(ACCOUNT_RICH) == (1_000_000, 1_000_000)


def test_partial_reversal_down_to_actual_amount(env: Env) -> None:
    purchase = financial(env, amount=3_000)
    env.send(purchase)
    assert env.send(reversal(env, purchase, actual=3_001))["39"] == "13"
    assert env.send(reversal(env, purchase, actual=1_000))["39"] == "00"
    assert env.balance(ACCOUNT_RICH) == (999_000, 999_000)


def test_reversal_field_mismatch_is_12(env: Env) -> None:
    purchase = financial(env, amount=3_000)
    env.send(purchase)
    assert env.send(reversal(env, purchase, **{"4": "000000002999"}))["39"] == "12"
    assert env.send(reversal(env, purchase, **{"49": "840"}))["39"] == "12"
    assert env.send(reversal(env, purchase, **{"3": "010000"}))["39"] == "12"


def test_reversal_of_hold_voids_it_and_gives_back_the_limit(env: Env) -> None:
    auth = financial(env, mti="0100", amount=500_000)
    env.send(auth)
    assert env.send(reversal(env, auth, actual=200_000))["39"] == "00"
    assert env.balance(ACCOUNT_RICH) == (1_000_000, 800_000)
    assert env.send(reversal(env, auth, mti="0420"))["39"] == "00"
    assert env.balance(ACCOUNT_RICH) == (1_000_000, 1_000_000)
    assert env.send(completion(env, auth, 100))["39"] == "25"
    assert env.store.daily_usage(env.store.list_cards()[0].id, "2025-03-01") == (0, 0)


def test_reversal_before_original_declines_the_late_original(env: Env) -> None:
    purchase = financial(env, amount=3_000)
    early = reversal(env, purchase)
    assert env.send(early)["39"] == "00"
    assert env.send(purchase)["39"] == "05"
    assert env.send(dict(purchase, t="0201"))["39"] == "05"
    assert env.balance(ACCOUNT_RICH) == (1_000_000, 1_000_000)
    auth = financial(env, mti="0100", amount=3_000)
    env.send(reversal(env, auth, mti="0420"))
    assert env.send(auth)["39"] == "05"
    assert env.balance(ACCOUNT_RICH) == (1_000_000, 1_000_000)


def test_reversal_of_completed_authorization(env: Env) -> None:
    auth = financial(env, mti="0100", amount=10_000)
    env.send(auth)
    done = completion(env, auth, 8_000)
    env.send(done)
    assert env.send(reversal(env, done))["39"] == "00"
    assert env.balance(ACCOUNT_RICH) == (1_000_000, 1_000_000)
    assert env.send(reversal(env, auth))["39"] == "00"  # nothing left to reverse
    assert env.balance(ACCOUNT_RICH) == (1_000_000, 1_000_000)
    assert env.store.check_invariants(env.clock.now) == []


def test_reversal_of_declined_original_is_acknowledged(env: Env) -> None:
    purchase = financial(env, amount=2_000_000)
    assert env.send(purchase)["39"] == "61"
    assert env.send(reversal(env, purchase))["39"] == "00"


def test_reversal_of_referred_transfer_cancels_the_review(env: Env) -> None:
    transfer = financial(env, code="400000", amount=300_000, pin="1234",
                         **{"103": "6222020000000023"})
    assert env.send(transfer)["39"] == "01"
    del transfer["52"]
    assert env.send(reversal(env, transfer))["39"] == "00"
    assert env.balance(ACCOUNT_RICH) == (1_000_000, 1_000_000)
    assert env.store.list_reviews("pending") == []


def test_holds_expire_and_release(env: Env) -> None:
    auth = financial(env, mti="0100", amount=10_000)
    env.send(auth)
    env.clock.advance(timedelta(days=7, seconds=1))
    env.send(financial(env, amount=1))  # the batch expires due holds first
    assert env.balance(ACCOUNT_RICH) == (999_999, 999_999)
    assert env.store.check_invariants(env.clock.now) == []


def test_retention_prunes_old_keys(env: Env) -> None:
    fields = financial(env, amount=1_000)
    env.send(fields)
    env.clock.advance(timedelta(days=46))
    env.send(financial(env, amount=1))
    assert env.store.get_txn("020|TERM0003|000001|" + fields["7"] + "|") is None


def test_a_captured_request_is_a_replay_after_its_decision_was_pruned(env: Env) -> None:
    # The same bytes (same KSN, PIN block and MAC) 46 days later: the stored
    # decision is gone with retention, the device's replay state is not.
    withdrawal = financial(env, code="010000", amount=50_000, pin="1234")
    assert env.send(withdrawal)["39"] == "00"
    after_first = env.balance(ACCOUNT_RICH)
    env.clock.advance(timedelta(days=46))
    env.send(financial(env, amount=1))  # housekeeping prunes past retention
    env.clock.advance(timedelta(hours=2))
    assert env.send(financial(env, amount=1))["39"] == "00"
    key = "020|TERM0003|" + withdrawal["11"] + "|" + withdrawal["7"] + "|"
    assert env.store.get_txn(key) is None
    before_replay = env.balance(ACCOUNT_RICH)
    assert env.send(withdrawal)["39"] == "63"
    assert env.balance(ACCOUNT_RICH) == before_replay
    assert after_first[0] - before_replay[0] == 2  # only the two 0.01 purchases since
