"""The decision chain holds the order of checks of interface.md section 3:
its steps in order, each rule's answer from one pure check, and, through
the processor, the earlier of two failures winning."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from iso_switch.acquirer import check_merchant, check_profile, check_txn_type
from iso_switch.codes import ResponseCode, TxnType
from iso_switch.issuer import PinOutcome, RiskRules, pin_step
from iso_switch.issuer.checks import (
    AccountFacts,
    blacklist_hits,
    check_amount,
    check_blacklist,
    check_card_state,
    check_currency,
    check_daily_limits,
    check_expiry,
    check_funds,
    check_pin,
    check_review,
    check_transfer_accounts,
    check_txn_limit,
)
from iso_switch.ledger.records import TerminalRow
from iso_switch.processor import chain
from iso_switch.routing import ON_US_ISSUER, check_route
from tests.helpers_ledger import (
    ACCOUNT_POOR,
    CARD_LOST,
    CARD_POOR,
    CARD_RICH,
    Env,
    financial,
    make_env,
)

# The interface's order of checks after the KSN step, with the response
# codes each step may answer (the steps before it are the processor's:
# format 30, MAC 63, duplicate 94, remembered reversal 05, replay 63).
INTERFACE_ORDER = (
    ("terminal_or_merchant", {"03"}),
    ("terminal_profile", {"58"}),
    ("processing_code", {"12"}),
    ("card_number", {"14"}),
    ("routing", {"15", "91"}),
    ("card_on_file", {"14"}),
    ("expiry", {"54"}),
    ("card_state", {"41", "43", "57"}),
    ("pin", {"55", "75", "63"}),
    ("currency", {"57"}),
    ("amount", {"13"}),
    ("limits", {"61", "65"}),
    ("refund_cap", {"61"}),
    ("accounts", {"57", "76", "12"}),
    ("funds", {"51", "57"}),
    ("review", {"01"}),
    ("risk", {"05"}),
)


def test_the_chain_runs_in_the_interface_order() -> None:
    assert tuple(name for name, _ in INTERFACE_ORDER) == chain.ORDER


def test_the_issuer_part_starts_after_routing() -> None:
    """The seam for remote issuers: everything up to routing is the
    switch's, everything after it the on-us issuer's."""
    assert chain.step_names(chain.FRONT)[-1] == "routing"
    assert chain.step_names(chain.ISSUER)[0] == "card_on_file"
    assert chain.step_names(chain.COMPLETION_FRONT) == chain.ORDER[:4]
    assert chain.step_names(chain.REVERSAL_FRONT) == chain.ORDER[:1]


def test_every_code_the_chain_answers_is_a_response_code() -> None:
    for _, codes in INTERFACE_ORDER:
        assert {ResponseCode(code) for code in codes}


# -- one pure check per rule -----------------------------------------------------

RULES = RiskRules()


def test_a_blacklisted_card_is_declined_05_by_check_blacklist() -> None:
    listed = frozenset({("pan", "ab12")})
    hits = blacklist_hits(listed, [("pan", "ab12"), ("terminal", "TERM0001")])
    assert hits == ["pan"]
    assert check_blacklist(hits, RULES) is ResponseCode.DO_NOT_HONOUR
    assert check_blacklist([], RULES) is None
    assert check_blacklist(hits, RiskRules(blacklist_action="alert")) is None


def test_acquirer_checks() -> None:
    terminal = TerminalRow("T1", "M1", False, frozenset({"00"}))
    assert check_merchant("M1", "M1") is None
    assert check_merchant(None, "M1") is ResponseCode.INVALID_MERCHANT  # terminal unknown
    assert check_merchant("M1", None) == "03"  # merchant unknown
    assert check_merchant("M1", "M2") == "03"  # another merchant's terminal
    assert check_profile(terminal.allowed_codes, TxnType.PURCHASE) is None
    assert check_profile(terminal.allowed_codes, TxnType.REFUND) == "58"
    assert check_profile(terminal.allowed_codes, "99") is None  # 12 is the MTI check's
    assert check_txn_type("010", TxnType.REFUND) is ResponseCode.INVALID_TRANSACTION
    assert check_txn_type("020", TxnType.FUNDS_TRANSFER) is None
    assert check_txn_type("022", TxnType.BALANCE_INQUIRY) == "12"


def test_routing_check() -> None:
    assert check_route(None, False) is ResponseCode.NO_SUCH_ISSUER
    assert check_route(ON_US_ISSUER, False) is ResponseCode.ISSUER_INOPERATIVE
    assert check_route("bank-b", True) is ResponseCode.ISSUER_INOPERATIVE
    assert check_route(ON_US_ISSUER, True) is None


def test_issuer_checks() -> None:
    now = datetime(2025, 3, 1, 12, tzinfo=UTC)
    assert check_expiry("2502", "", now) is ResponseCode.EXPIRED_CARD
    assert check_expiry("2503", "", now) is None
    assert check_expiry("2812", "2811", now) == "54"
    assert [check_card_state(s) for s in ("active", "lost", "stolen", "blocked")] == [
        None, "41", "43", "57"]
    assert check_pin(PinOutcome(ResponseCode.PIN_TRIES_EXCEEDED, 3, True)) == "75"
    assert check_currency(840, 156) == "57" and check_currency(156, 156) is None
    assert check_amount(TxnType.PURCHASE, 0) == "13"
    assert check_amount(TxnType.BALANCE_INQUIRY, 0) is None
    assert check_txn_limit(TxnType.REFUND, 11, 10) == "61"
    assert check_daily_limits(5, 6, 0, 10, 5) == "61"
    assert check_daily_limits(5, 5, 5, 10, 5) == "65"
    assert check_funds(True, 100, True, 1) == "57"
    assert check_funds(False, 0, True, 1) == "51"
    assert check_funds(False, 0, False, 1) is None
    assert check_review(TxnType.FUNDS_TRANSFER, 11, 10) is ResponseCode.REFER_TO_ISSUER
    assert check_review(TxnType.PURCHASE, 11, 10) is None


def test_transfer_account_checks() -> None:
    source = AccountFacts(1, 156, False, 100)
    dest = AccountFacts(2, 156, False, 0)
    assert check_transfer_accounts(True, source, dest, 156) is None
    assert check_transfer_accounts(False, source, dest, 156) == "57"
    assert check_transfer_accounts(True, source, None, 156) == "76"
    assert check_transfer_accounts(True, source, AccountFacts(2, 156, True, 0), 156) == "76"
    assert check_transfer_accounts(True, source, source, 156) == "12"
    assert check_transfer_accounts(True, source, AccountFacts(2, 840, False, 0), 156) == "57"


# -- two failures at once: the earlier check answers ------------------------------


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return make_env(tmp_path)


def rc(env: Env, fields: dict[str, str]) -> str:
    mac = "valid" if fields["41"] != "TERM0003" else "absent"  # TERM0003 alone needs no MAC
    return env.send(fields, mac)["39"]


def blacklist(env: Env, kind: str, value: str) -> None:
    with env.store.write():
        env.store.add_blacklist(kind, value, "test")
    env.processor.reload()


UNROUTED_LUHN_OK = "5000000000000009"
UNROUTED_LUHN_BAD = "5000000000000008"


@pytest.mark.parametrize(("fields", "expected"), [
    # 03 (merchant) before 12 (refund on 0100)
    ({"mti": "0100", "code": "200000", "42": "NOSUCHMERCHANT"}, "03"),
    # 58 (TERM0002 may not transfer) before 12 (no transfer on 0100)
    ({"mti": "0100", "code": "400000", "terminal": "TERM0002", "103": ACCOUNT_POOR}, "58"),
    # 12 (refund on 0100) before 14 (Luhn)
    ({"mti": "0100", "code": "200000", "pan": UNROUTED_LUHN_BAD}, "12"),
    # 14 (Luhn) before 15 (no route)
    ({"pan": UNROUTED_LUHN_BAD}, "14"),
    ({"pan": UNROUTED_LUHN_OK}, "15"),
    # 54 (presented expiry differs) before 41 (lost)
    ({"pan": CARD_LOST, "14": "2001"}, "54"),
    # 41 (lost) before 55 (PIN required for cash, missing)
    ({"pan": CARD_LOST, "code": "010000"}, "41"),
    # 55 (PIN missing) before 57 (currency)
    ({"code": "010000", "49": "840"}, "55"),
    # 57 (currency) before 13 (zero amount)
    ({"amount": 0, "49": "840"}, "57"),
    # 61 (per-transaction limit) before 51 (funds)
    ({"pan": CARD_POOR, "amount": 600_000}, "61"),
])
def test_the_earlier_check_answers(env: Env, fields: dict[str, object], expected: str) -> None:
    extra = {k: v for k, v in fields.items() if k.isdigit()}
    named = {k: v for k, v in fields.items() if not k.isdigit()}
    assert rc(env, financial(env, **named, **extra)) == expected  # type: ignore[arg-type]


def test_funds_before_risk(env: Env) -> None:
    blacklist(env, "terminal", "TERM0003")
    assert rc(env, financial(env, pan=CARD_POOR, amount=6_000)) == "51"
    assert rc(env, financial(env, pan=CARD_POOR, amount=100)) == "05"


def test_review_before_risk(env: Env) -> None:
    blacklist(env, "terminal", "TERM0003")
    transfer = financial(env, code="400000", amount=300_000, pin="1234",
                         **{"103": ACCOUNT_POOR})
    assert rc(env, transfer) == "01"
    assert env.store.list_alerts(10) == []  # the risk rules did not run
    assert rc(env, financial(env, pan=CARD_RICH)) == "05"


def test_pin_step_counts_tries_over_plain_values() -> None:
    assert pin_step(0, True, False, True, None) == PinOutcome("75", 0, True)
    assert pin_step(1, False, True, False, None) == PinOutcome("55", 1, False)  # not counted
    assert pin_step(1, False, False, False, None) == PinOutcome(None, 1, False)
    assert pin_step(1, False, False, True, None) == PinOutcome("55", 1, False)  # undecodable
    assert pin_step(1, False, False, True, False) == PinOutcome("55", 2, False)
    assert pin_step(2, False, False, True, False) == PinOutcome("55", 3, True)
    assert pin_step(2, False, False, True, True) == PinOutcome(None, 0, False)
