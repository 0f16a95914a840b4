"""Every response code of interface.md section 5 that the processor owns,
each produced by a request, in the order of checks of section 3."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import pytest

from iso_switch.processor import CommitFailed, Processor, ProcessorConfig, Request
from iso_switch.protocol import answer_network_management
from tests.helpers_ledger import (
    ACCOUNT_POOR,
    ACCOUNT_RICH,
    CARD_EXPIRED,
    CARD_LOST,
    CARD_POOR,
    CARD_RICH,
    CARD_STOLEN,
    CASH,
    SETTLEMENT,
    Env,
    completion,
    financial,
    make_env,
    pin_block,
)


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return make_env(tmp_path)


def rc(env: Env, fields: dict[str, str], mac: str = "absent") -> str:
    return env.send(fields, mac)["39"]


def test_00_purchase_posts_to_settlement(env: Env) -> None:
    response = env.send(financial(env, amount=12_345))
    assert response["39"] == "00" and len(response["38"]) == 6 and len(response["37"]) == 12
    assert env.balance(ACCOUNT_RICH) == (1_000_000 - 12_345,) * 2
    assert env.balance(SETTLEMENT) == (12_345, 12_345)
    assert env.store.check_invariants(env.clock.now) == []


def test_00_withdrawal_credits_cash_clearing_and_needs_pin(env: Env) -> None:
    assert rc(env, financial(env, code="010000", amount=500)) == "55"
    assert rc(env, financial(env, code="010000", amount=500, pin="1234")) == "00"
    assert env.balance(CASH) == (500, 500)


def test_00_refund_debits_settlement_which_may_go_negative(env: Env) -> None:
    assert rc(env, financial(env, code="200000", amount=700)) == "00"
    assert env.balance(SETTLEMENT) == (-700, -700)
    assert env.balance(ACCOUNT_RICH) == (1_000_700, 1_000_700)


def test_balance_inquiry_answers_de54(env: Env) -> None:
    env.send(financial(env, mti="0100", amount=1_000))  # a hold lowers the available balance
    response = env.send(financial(env, code="310000", amount=0, pin="1234"))
    assert response["39"] == "00"
    assert response["54"] == "0001156C000001000000" + "0002156C000000999000"


def test_01_transfer_above_threshold_is_held_for_review(env: Env) -> None:
    fields = financial(env, code="400000", amount=300_000, pin="1234", **{"103": ACCOUNT_POOR})
    response = env.send(fields)
    assert response["39"] == "01" and "38" not in response
    assert env.balance(ACCOUNT_RICH) == (1_000_000, 700_000)
    [(review_id, *_)] = env.store.list_reviews("pending")
    assert "approved" in env.processor.decide_review(review_id, approve=True)
    assert "already" in env.processor.decide_review(review_id, approve=True)
    assert env.balance(ACCOUNT_POOR) == (305_000, 305_000)
    assert env.balance(ACCOUNT_RICH) == (700_000, 700_000)
    assert env.send(fields)["39"] == "01"  # a retransmission gets the stored decision
    assert env.store.check_invariants(env.clock.now) == []


def test_review_decline_releases_the_hold(env: Env) -> None:
    env.send(financial(env, code="400000", amount=300_000, pin="1234", **{"103": ACCOUNT_POOR}))
    [(review_id, *_)] = env.store.list_reviews("pending")
    env.processor.decide_review(review_id, approve=False)
    assert env.balance(ACCOUNT_RICH) == (1_000_000, 1_000_000)
    with pytest.raises(ValueError):
        env.processor.decide_review(review_id, approve=True)


def test_00_transfer_below_threshold_and_12_same_account_and_76(env: Env) -> None:
    assert rc(env, financial(env, code="400000", amount=1_000, pin="1234",
                             **{"103": ACCOUNT_POOR})) == "00"
    assert env.balance(ACCOUNT_POOR) == (6_000, 6_000)
    assert rc(env, financial(env, code="400000", amount=1_000, pin="1234",
                             **{"103": ACCOUNT_RICH})) == "12"
    assert rc(env, financial(env, code="400000", amount=1_000, pin="1234",
                             **{"103": "6222020000000999"})) == "76"
    poor = env.store.account_by_number(ACCOUNT_POOR)
    with env.store.write():
        env.store.set_account_closed(poor.id, True)
    assert rc(env, financial(env, code="400000", amount=1_000, pin="1234",
                             **{"103": ACCOUNT_POOR})) == "76"


def test_57_de102_not_owned_by_card(env: Env) -> None:
    assert rc(env, financial(env, code="400000", amount=100, pin="1234",
                             **{"102": ACCOUNT_POOR, "103": SETTLEMENT})) == "57"
    assert rc(env, financial(env, code="400000", amount=100, pin="1234",
                             **{"102": ACCOUNT_RICH, "103": SETTLEMENT})) == "00"


def test_57_currency_other_than_the_accounts(env: Env) -> None:
    assert rc(env, financial(env, **{"49": "840"})) == "57"


def test_03_unknown_terminal_or_merchant(env: Env) -> None:
    assert rc(env, financial(env, terminal="TERM9999")) == "03"
    assert rc(env, financial(env, **{"42": "MERCHANT0000999"})) == "03"


def test_58_terminal_profile_and_12_code_vs_mti(env: Env) -> None:
    assert rc(env, financial(env, terminal="TERM0002", code="010000", pin="1234"),
              mac="valid") == "58"
    assert rc(env, financial(env, mti="0100", code="200000")) == "12"
    assert rc(env, financial(env, mti="0100", code="400000", **{"103": ACCOUNT_POOR})) == "12"
    assert rc(env, financial(env, code="500000")) == "12"


def test_13_zero_amount(env: Env) -> None:
    assert rc(env, financial(env, amount=0)) == "13"


def test_14_luhn_length_and_not_on_file(env: Env) -> None:
    assert rc(env, financial(env, pan="4761739001010011")) == "14"  # Luhn
    assert rc(env, financial(env, pan="476173900101")) == "14"  # too short
    assert rc(env, financial(env, pan="4761739001010069")) == "14"  # on-us, not on file


def test_15_unrouted_bin(env: Env) -> None:
    assert rc(env, financial(env, pan="4111111111111111")) == "15"


def test_91_issuer_down(env: Env) -> None:
    with env.store.write():
        env.store.set_issuer_available("onus", False)
    env.processor.reload()
    assert rc(env, financial(env)) == "91"


def test_41_43_54_card_state_and_expiry(env: Env) -> None:
    assert rc(env, financial(env, pan=CARD_LOST)) == "41"
    assert rc(env, financial(env, pan=CARD_STOLEN)) == "43"
    assert rc(env, financial(env, pan=CARD_EXPIRED)) == "54"
    assert rc(env, financial(env, **{"14": "2711"})) == "54"  # not the expiry on file


def test_55_75_pin_tries(env: Env) -> None:
    for _ in range(2):
        assert rc(env, financial(env, pin="0000")) == "55"
    assert rc(env, financial(env, pin="1234")) == "00"  # resets the count
    for _ in range(3):
        assert rc(env, financial(env, pin="0000")) == "55"
    assert rc(env, financial(env, pin="1234")) == "75"
    assert rc(env, financial(env, code="010000")) == "75"  # requires a PIN
    assert rc(env, financial(env)) == "00"  # a purchase without PIN still works
    card = env.store.list_cards()[0]
    with env.store.write():
        env.store.set_pin_tries(card.id, 0, False)
    assert rc(env, financial(env, pin="1234")) == "00"


def test_51_insufficient_funds(env: Env) -> None:
    assert rc(env, financial(env, pan=CARD_POOR, amount=5_001)) == "51"
    assert rc(env, financial(env, pan=CARD_POOR, amount=5_000)) == "00"
    assert env.balance(ACCOUNT_POOR) == (0, 0)


def test_61_65_limits(env: Env) -> None:
    assert rc(env, financial(env, amount=500_001)) == "61"
    # Refunds are limited per transaction (interface section 6) but count
    # toward no daily limit: three of them fund the test.
    assert rc(env, financial(env, code="200000", amount=500_001)) == "61"
    for _ in range(3):
        assert rc(env, financial(env, code="200000", amount=500_000)) == "00"
    for _ in range(4):
        assert rc(env, financial(env, amount=500_000)) == "00"
    assert rc(env, financial(env, amount=1)) == "61"  # 20000.00 per day used up
    env.clock.advance(timedelta(days=1))
    for _ in range(20):
        assert rc(env, financial(env, amount=1)) == "00"
    assert rc(env, financial(env, amount=1)) == "65"


def test_business_day_is_local(env: Env) -> None:
    for _ in range(3):
        assert rc(env, financial(env, code="200000", amount=500_000)) == "00"
    for _ in range(4):
        assert rc(env, financial(env, amount=500_000)) == "00"
    # 15:59 UTC is still the same day in Shanghai (23:59); 16:00 UTC is the next one.
    env.clock.now = env.clock.now.replace(hour=15, minute=59)
    assert rc(env, financial(env, amount=1)) == "61"
    env.clock.now = env.clock.now.replace(hour=16, minute=0)
    assert rc(env, financial(env, amount=1)) == "00"


def test_05_blacklist(env: Env) -> None:
    with env.store.write():
        env.store.add_blacklist("terminal", "TERM0003", "test")
    env.processor.reload()
    assert rc(env, financial(env)) == "05"
    assert env.store.list_alerts(10)[0][2] == "blacklist"


def test_risk_rules_alert_only_by_default(env: Env) -> None:
    for _ in range(12):
        assert rc(env, financial(env, amount=100)) == "00"
    assert rc(env, financial(env, amount=100_000)) == "00"
    rules = {alert[2] for alert in env.store.list_alerts(100)}
    assert rules == {"velocity", "amount"}


def test_05_declining_velocity_rule(tmp_path: Path) -> None:
    from iso_switch.issuer import RiskRules

    env = make_env(tmp_path, ProcessorConfig(
        synchronous="OFF", risk=RiskRules(velocity_count=2, velocity_action="decline")))
    assert [rc(env, financial(env, amount=100)) for _ in range(3)] == ["00", "00", "05"]


def test_25_completion_of_unknown_or_expired_hold(env: Env) -> None:
    auth = financial(env, mti="0100", amount=1_000)
    assert rc(env, completion(env, auth, 1_000)) == "25"  # the auth never arrived
    assert rc(env, auth) == "00"
    env.clock.advance(timedelta(days=7, seconds=1))
    assert rc(env, completion(env, auth, 1_000)) == "25"
    assert env.balance(ACCOUNT_RICH) == (1_000_000, 1_000_000)


def test_30_format_errors_are_not_stored(env: Env) -> None:
    fields = financial(env)
    broken = dict(fields)
    del broken["41"]
    response = env.send(broken)
    assert response["39"] == "30" and len(response["37"]) == 12
    assert rc(env, dict(fields, **{"4": "00000000001A"})) == "30"
    assert rc(env, dict(fields, **{"35": CARD_POOR + "=2812101"})) == "30"  # DE2 != DE35
    assert rc(env, dict(fields, **{"52": pin_block(CARD_RICH, "1234")})) == "30"  # no DE62
    assert rc(env, dict(fields, **{"7": "1332000000"})) == "30"
    assert rc(env, fields) == "00"  # the genuine request is not blocked


def test_track2_only_request(env: Env) -> None:
    fields = financial(env)
    del fields["2"]
    fields["35"] = CARD_RICH + "=28121010000000"
    assert rc(env, fields) == "00"


def test_63_mac_and_replay(env: Env) -> None:
    fields = financial(env, terminal="TERM0001")
    out = env.processor.process(Request(fields, "absent", env.clock.now))
    assert out.response["39"] == "63" and not out.mac_response
    fields_mac = dict(fields, **{"62": env.next_ksn(), "64": "00" * 8})
    out = env.processor.process(Request(fields_mac, "invalid", env.clock.now))
    assert out.response["39"] == "63"
    out = env.processor.process(Request(fields_mac, "valid", env.clock.now))
    assert out.response["39"] == "00" and out.mac_response
    # a new request with an already used counter is a replay
    again = dict(financial(env, terminal="TERM0001"), **{"62": fields_mac["62"], "64": "0" * 16})
    out = env.processor.process(Request(again, "valid", env.clock.now))
    assert out.response["39"] == "63" and not out.mac_response
    # an optional-MAC terminal still rejects a wrong MAC; an unknown terminal: 63 then 03
    assert rc(env, dict(financial(env), **{"62": env.next_ksn(), "64": "0" * 16}),
              "invalid") == "63"
    assert rc(env, dict(financial(env, terminal="TERMXXXX"), **{"62": env.next_ksn(),
                                                               "64": "0" * 16}), "valid") == "03"


def test_replay_window_accepts_out_of_order(env: Env) -> None:
    from tests.helpers_ledger import ksn

    for counter in (10, 8, 9):
        fields = dict(financial(env), **{"62": ksn(counter), "64": "0" * 16})
        assert rc(env, fields, "valid") == "00"
    fields = dict(financial(env), **{"62": ksn(8), "64": "0" * 16})
    assert rc(env, fields, "valid") == "63"


def test_94_same_key_different_content_changes_nothing(env: Env) -> None:
    fields = financial(env, amount=1_000)
    assert rc(env, fields) == "00"
    assert rc(env, dict(fields, **{"4": "000000002000"})) == "94"
    assert env.balance(ACCOUNT_RICH) == (999_000, 999_000)


def test_96_one_failing_request_rolls_back_alone(env: Env, monkeypatch: pytest.MonkeyPatch
                                                 ) -> None:
    store = env.store
    original = store.insert_txn
    calls = {"n": 0}

    def flaky(txn):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk says no")
        original(txn)

    monkeypatch.setattr(store, "insert_txn", flaky)
    now = env.clock.now
    outcomes = env.processor.process_batch([
        Request(financial(env, amount=100), "absent", now),
        Request(financial(env, amount=200), "absent", now),
        Request(financial(env, amount=300), "absent", now),
    ])
    assert [o.response["39"] for o in outcomes] == ["00", "96", "00"]
    assert env.balance(ACCOUNT_RICH) == (999_600, 999_600)
    assert store.check_invariants(now) == []


def test_commit_failure_raises_and_keeps_nothing(env: Env, monkeypatch: pytest.MonkeyPatch
                                                 ) -> None:
    store = env.store

    def broken_commit() -> None:
        raise RuntimeError("fsync failed")

    monkeypatch.setattr(store, "commit", broken_commit)
    with pytest.raises(CommitFailed):
        env.processor.process(Request(financial(env), "absent", env.clock.now))
    monkeypatch.undo()
    assert env.balance(ACCOUNT_RICH) == (1_000_000, 1_000_000)
    assert store.count_txns() == 0


def test_network_management() -> None:
    answer = answer_network_management
    assert answer({"t": "0800", "7": "0301120000", "11": "000001", "70": "301"})["39"] == "00"
    assert answer({"t": "0800", "7": "0301120000", "11": "000001", "70": "999"})["39"] == "12"
    assert answer({"t": "0800", "11": "000001", "70": "001"})["39"] == "30"


def test_response_echo_and_log_never_hold_a_pan(env: Env) -> None:
    fields = financial(env, **{"32": "00012345", "102": ACCOUNT_RICH})
    out = env.processor.process(Request(fields, "absent", env.clock.now))
    for name in ("2", "3", "4", "7", "11", "12", "13", "32", "41", "42", "49", "102"):
        assert out.response[name] == fields[name]
    assert CARD_RICH not in repr(out.log)
    assert out.log["pan_masked"] == "476173******0010"


def _restarted(env: Env) -> Env:
    """The same ledger, clock, STANs and KSNs under a new processor (a
    restarted switch or ledger process)."""
    return dataclasses.replace(env, processor=Processor(
        env.store, env.processor.hsm, env.processor.config, clock=env.clock))


def _velocity_env(tmp_path: Path) -> Env:
    from iso_switch.issuer import RiskRules

    return make_env(tmp_path, ProcessorConfig(
        synchronous="OFF", risk=RiskRules(velocity_count=2, velocity_action="decline")))


def test_velocity_counts_survive_a_restart(tmp_path: Path) -> None:
    """The rule counts in memory; a new processor on the same ledger takes
    the window's debits from the journal: two before the restart, the third
    after it is declined (another card is not); past the window, none."""
    env = _velocity_env(tmp_path)
    assert [rc(env, financial(env, amount=100)) for _ in range(2)] == ["00", "00"]
    assert rc(env, financial(env, amount=100, pan=CARD_POOR, pin="4321")) == "00"
    env = _restarted(env)
    assert rc(env, financial(env, amount=100)) == "05"
    assert rc(env, financial(env, amount=100, pan=CARD_POOR, pin="4321")) == "00"
    env.clock.advance(timedelta(minutes=2))
    env = _restarted(env)
    assert rc(env, financial(env, amount=100)) == "00"


def test_velocity_reload_counts_declines_by_the_rules_but_not_other_requests(
        tmp_path: Path) -> None:
    env = _velocity_env(tmp_path)
    # 00 at t0, 00 at +30 s, 05 (the rule) at +50 s; at +65 s the first has
    # left the 60 s window: the 00 and the 05 left make the next one a third.
    assert rc(env, financial(env, amount=100)) == "00"
    env.clock.advance(timedelta(seconds=30))
    assert rc(env, financial(env, amount=100)) == "00"
    env.clock.advance(timedelta(seconds=20))
    assert rc(env, financial(env, amount=100)) == "05"
    env.clock.advance(timedelta(seconds=15))
    assert rc(_restarted(env), financial(env, amount=100)) == "05"

    # Refunds and balance inquiries are not debits: not counted, before or
    # after a restart.
    env.clock.advance(timedelta(minutes=5))
    assert rc(env, financial(env, code="200000", amount=100)) == "00"
    assert rc(env, financial(env, code="310000", amount=0, pin="1234")) == "00"
    assert rc(env, financial(env, amount=100)) == "00"
    env = _restarted(env)
    assert rc(env, financial(env, amount=100)) == "00"  # a second debit: allowed
    assert rc(env, financial(env, amount=100)) == "05"  # a third: not
