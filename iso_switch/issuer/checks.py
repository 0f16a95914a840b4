"""The issuer's checks: one small pure function per rule of the order of
checks (docs/interface.md section 3) that the issuer owns, each answering the
response code it decides or ``None`` when the request passes it.

They take plain values (amounts in minor units, states, flags), never store
rows, so a test calls one alone and the decision chain
(:mod:`iso_switch.processor.chain`) strings them together in the
interface's order. The processing-code sets the issuer's rules depend on
are defined here, once, in terms of :class:`~iso_switch.codes.TxnType`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from iso_switch.codes import ResponseCode, TxnType
from iso_switch.issuer import (
    ACTION_DECLINE,
    STATE_RESPONSE,
    CardState,
    PinOutcome,
    RiskRules,
    card_expired,
    pan_valid,
)

#: Types that take money from the cardholder: daily limits, velocity, funds.
DEBIT_TYPES = frozenset({TxnType.PURCHASE, TxnType.CASH_WITHDRAWAL, TxnType.FUNDS_TRANSFER})
#: Types that move an amount (a missing or zero one is ``13``).
AMOUNT_TYPES = frozenset({TxnType.PURCHASE, TxnType.CASH_WITHDRAWAL, TxnType.REFUND,
                          TxnType.FUNDS_TRANSFER})
#: Types that need a PIN (interface section 4; purchases verify one when sent).
PIN_REQUIRED_TYPES = frozenset({TxnType.CASH_WITHDRAWAL, TxnType.BALANCE_INQUIRY,
                                TxnType.BALANCE_INQUIRY_ALT, TxnType.FUNDS_TRANSFER})
#: Types answered with balances (DE54) and posting nothing.
INQUIRY_TYPES = frozenset({TxnType.BALANCE_INQUIRY, TxnType.BALANCE_INQUIRY_ALT})


# -- card ------------------------------------------------------------------


def check_card_number(pan: str) -> ResponseCode | None:
    """``14`` for a PAN of the wrong length or with a wrong check digit."""
    return None if pan_valid(pan) else ResponseCode.INVALID_CARD_NUMBER


def check_on_file(on_file: bool) -> ResponseCode | None:
    """``14`` for a card the issuer does not hold."""
    return None if on_file else ResponseCode.INVALID_CARD_NUMBER


def check_expiry(card_expiry: str, presented_expiry: str,
                 local_now: datetime) -> ResponseCode | None:
    """``54`` when the card on file expired or another expiry was presented."""
    if card_expired(card_expiry, presented_expiry, local_now):
        return ResponseCode.EXPIRED_CARD
    return None


def check_card_state(state: str) -> ResponseCode | None:
    """``41`` lost, ``43`` stolen, ``57`` blocked (or any state not active)."""
    if state == CardState.ACTIVE:
        return None
    return STATE_RESPONSE.get(state, ResponseCode.NOT_PERMITTED_TO_CARDHOLDER)


def check_pin(outcome: PinOutcome) -> ResponseCode | None:
    """``55`` or ``75`` as :func:`~iso_switch.issuer.pin_step` decided."""
    return outcome.rc


def check_currency(request_currency: int | None, account_currency: int) -> ResponseCode | None:
    """``57`` when DE49 is not the currency of the card's account."""
    if request_currency != account_currency:
        return ResponseCode.NOT_PERMITTED_TO_CARDHOLDER
    return None


# -- amount and limits -----------------------------------------------------------


def check_amount(txn_type: str, amount_minor: int) -> ResponseCode | None:
    """``13`` for a missing or zero amount where the type moves money."""
    if txn_type in AMOUNT_TYPES and amount_minor <= 0:
        return ResponseCode.INVALID_AMOUNT
    return None


def check_txn_limit(txn_type: str, amount_minor: int, limit_minor: int) -> ResponseCode | None:
    """``61`` above the card's per-transaction limit. Every amount counts,
    refunds too (interface section 6); only the daily limits are for debits."""
    if txn_type in AMOUNT_TYPES and amount_minor > limit_minor:
        return ResponseCode.EXCEEDS_AMOUNT_LIMIT
    return None


def check_daily_limits(amount_minor: int, used_minor: int, used_count: int,
                       limit_day_minor: int, limit_day_count: int) -> ResponseCode | None:
    """``61`` when this debit takes the day's total over the card's limit,
    ``65`` when it takes the day's count over."""
    if used_minor + amount_minor > limit_day_minor:
        return ResponseCode.EXCEEDS_AMOUNT_LIMIT
    if used_count + 1 > limit_day_count:
        return ResponseCode.EXCEEDS_FREQUENCY_LIMIT
    return None


# -- funds and accounts -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccountFacts:
    """What the transfer checks need of an account."""

    id: int
    currency: int
    closed: bool
    available_minor: int


def check_transfer_accounts(source_owned: bool, source: AccountFacts,
                            dest: AccountFacts | None,
                            request_currency: int | None) -> ResponseCode | None:
    """A funds transfer: ``57`` when DE102 names an account the card does
    not own, ``76`` for a destination not on file or closed, ``12`` for a
    destination that is the source, ``57`` when the currencies differ."""
    if not source_owned:
        return ResponseCode.NOT_PERMITTED_TO_CARDHOLDER
    if dest is None or dest.closed:
        return ResponseCode.DESTINATION_ACCOUNT_INVALID
    if dest.id == source.id:
        return ResponseCode.INVALID_TRANSACTION
    if dest.currency != source.currency or source.currency != request_currency:
        return ResponseCode.NOT_PERMITTED_TO_CARDHOLDER
    return None


def check_funds(source_closed: bool, available_minor: int, debit: bool,
                amount_minor: int) -> ResponseCode | None:
    """``57`` for a closed source account, ``51`` for a debit above its
    available balance."""
    if source_closed:
        return ResponseCode.NOT_PERMITTED_TO_CARDHOLDER
    if debit and available_minor < amount_minor:
        return ResponseCode.INSUFFICIENT_FUNDS
    return None


def check_review(txn_type: str, amount_minor: int, threshold_minor: int) -> ResponseCode | None:
    """``01``: a transfer above the review threshold is held for an
    operator's decision (the risk rules do not run on it)."""
    if txn_type == TxnType.FUNDS_TRANSFER and amount_minor > threshold_minor:
        return ResponseCode.REFER_TO_ISSUER
    return None


# -- risk ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Alert:
    """A risk rule that fired: stored whatever its action."""

    rule: str
    action: str
    detail: str


def blacklist_hits(listed: Collection[tuple[str, str]],
                   subjects: Sequence[tuple[str, str]]) -> list[str]:
    """The kinds (``pan``, ``account``, ``terminal``, ``merchant``) of the
    request's subjects that are blacklisted, one per listed subject."""
    return [kind for kind, value in subjects if (kind, value) in listed]


def check_blacklist(hits: Sequence[str], rules: RiskRules) -> ResponseCode | None:
    """``05`` for a blacklisted PAN, account, terminal or merchant, when the
    blacklist rule declines (else it only alerts)."""
    if hits and rules.blacklist_action == ACTION_DECLINE:
        return ResponseCode.DO_NOT_HONOUR
    return None


def check_velocity(fires: bool, rules: RiskRules) -> ResponseCode | None:
    """``05`` when too many debits came on the card within the window and
    the velocity rule declines."""
    if fires and rules.velocity_action == ACTION_DECLINE:
        return ResponseCode.DO_NOT_HONOUR
    return None


def check_unusual_amount(fires: bool, rules: RiskRules) -> ResponseCode | None:
    """``05`` for an amount far above the card's usual when the amount rule
    declines."""
    if fires and rules.amount_action == ACTION_DECLINE:
        return ResponseCode.DO_NOT_HONOUR
    return None


def risk_alerts(hits: Sequence[str], velocity: bool, amount: bool,
                rules: RiskRules) -> list[Alert]:
    """One alert per rule that fired, in the order the rules run."""
    alerts = [Alert("blacklist", rules.blacklist_action, f"{kind} is blacklisted")
              for kind in hits]
    if velocity:
        alerts.append(Alert("velocity", rules.velocity_action,
                            f"more than {rules.velocity_count} requests within "
                            f"{int(rules.velocity_window.total_seconds())} s"))
    if amount:
        alerts.append(Alert("amount", rules.amount_action,
                            f"amount above {rules.amount_factor}x the card's average"))
    return alerts
