"""The decision chain: the order of checks of docs/interface.md section 3, from
the terminal and merchant to the risk rules, as one sequence of steps.

A step is a plain function ``step(facts) -> ResponseCode | None``: it reads
the request's :class:`Facts` (the parsed request and what the processor
loaded for it), asks one pure check of the layer that owns the rule
(:mod:`iso_switch.acquirer`, :mod:`iso_switch.routing`,
:mod:`iso_switch.issuer.checks`) and returns that check's answer. The first
step that answers decides the request; ``None`` from every step is an
approval. Steps never write to the store: the two that have something to
record (the PIN step's new try count, the risk step's alerts and velocity
count) leave it in ``facts`` for the processor to apply. So the processor
does four things in order: load the facts, run the chain, apply postings,
store the decision.

The chain is split where a decision may come from elsewhere:

- :data:`FRONT` is the switch's own part (acquirer, then card number and
  routing) and runs on every original (0100/0200).
- :data:`ISSUER` is the on-us issuer's part. The processor
  (``Processor._on_us_issuer``) loads the card's facts from the ledger and
  runs it only when :data:`FRONT` routed the card to the on-us issuer. One
  of its steps is the acquirer's: ``refund_cap``, the terminal's refunds per
  business day, sits with the amounts and limits where the order of checks
  puts them (a chain for a remote issuer would carry it too).

That gap between the two is the seam for remote issuers (interface section
7.2): a card routed to a remote issuer stops after :data:`FRONT` (plus the
checks of 7.2 the switch makes on the issuer's behalf, which would be a
chain of their own built from the same checks), the request goes out, and
the issuer's answer comes back as the ``ResponseCode`` the on-us
:data:`ISSUER` part would have returned. ``Processor._conclude`` then
applies the postings and the decision is stored through the same code as
an on-us one. Nothing here waits: a forwarded request would end one ledger
step and its answer start another.

:data:`ORDER` names the steps in order; a test holds it against the
interface's list.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from iso_switch.acquirer import (
    check_merchant,
    check_profile,
    check_refund_cap,
    check_refund_policy,
    check_txn_type,
)
from iso_switch.codes import ResponseCode, TxnType
from iso_switch.issuer import PinOutcome, amount_fires, pin_step, velocity_fires
from iso_switch.issuer.checks import (
    DEBIT_TYPES,
    PIN_REQUIRED_TYPES,
    AccountFacts,
    Alert,
    blacklist_hits,
    check_amount,
    check_blacklist,
    check_card_number,
    check_card_state,
    check_currency,
    check_daily_limits,
    check_expiry,
    check_funds,
    check_on_file,
    check_pin,
    check_review,
    check_transfer_accounts,
    check_txn_limit,
    check_unusual_amount,
    check_velocity,
    risk_alerts,
)
from iso_switch.ledger import Account
from iso_switch.ledger.records import CardRow, IssuerRow, MerchantRow, TerminalRow
from iso_switch.processor.fields import Parsed
from iso_switch.processor.model import PinHsm, ProcessorConfig
from iso_switch.routing import BinTable, check_route
from iso_switch.security.errors import SecurityError
from iso_switch.security.hsm import PinVerificationData


class Services(Protocol):
    """What steps consult besides the request's facts (the processor)."""

    @property
    def hsm(self) -> PinHsm: ...
    @property
    def config(self) -> ProcessorConfig: ...
    @property
    def bins(self) -> BinTable: ...
    @property
    def issuers(self) -> Mapping[str, IssuerRow]: ...
    @property
    def blacklist(self) -> frozenset[tuple[str, str]]: ...

    def recent_debits(self, card_id: int) -> deque[datetime]: ...


@dataclass(slots=True, eq=False, repr=False)
class Facts:
    """One request's facts: the parsed request, what the processor loaded
    for it, and what a step found that the processor is to record. Never
    the decision: a step returns that. No repr: it holds the full PAN and
    the PIN block."""

    p: Parsed
    txn_type: str  # DE3's first two digits ('' when absent)
    services: Services
    now: datetime  # when the request was received (aware UTC)
    local_now: datetime  # the same moment in the switch's time zone
    business_day: str  # the local date, ISO format
    pin_zone: bytes | None
    terminal: TerminalRow | None
    merchant: MerchantRow | None
    issuer_id: str | None = None
    # Loaded for the issuer part (card None: not on file).
    card: CardRow | None = None
    account: Account | None = None
    source: Account | None = None  # the account debited (the card's, or DE102's)
    source_owned: bool = True
    dest: Account | None = None  # DE103's account of a transfer
    used: tuple[int, int] = (0, 0)  # today's debits of the card: total, count
    usual: tuple[int, int] = (0, 0)  # the card's approved debits: total, count
    refunded_minor: int = 0  # the terminal's refunds of the business day (capped refunds)
    # Found by steps, recorded by the processor.
    pin: PinOutcome | None = None
    pin_decoded: bool = False  # a PIN block decoded: the KSN authenticated
    alerts: Sequence[Alert] = ()
    debit_counted: bool = False  # the risk step counted this debit (velocity)


Step = Callable[[Facts], ResponseCode | None]
Chain = tuple[Step, ...]


def run(chain: Chain, facts: Facts) -> ResponseCode | None:
    """The first answer of ``chain`` for ``facts``, or None (approve)."""
    for step in chain:
        rc = step(facts)
        if rc is not None:
            return rc
    return None


def step_names(chain: Chain) -> tuple[str, ...]:
    return tuple(step.__name__ for step in chain)


# -- the acquirer's steps ---------------------------------------------------


def terminal_or_merchant(f: Facts) -> ResponseCode | None:
    terminal, merchant = f.terminal, f.merchant
    return check_merchant(None if terminal is None else terminal.merchant_id,
                          None if merchant is None else merchant.id)


def terminal_profile(f: Facts) -> ResponseCode | None:
    """The processing codes the terminal may use, then its refund policy."""
    terminal = f.terminal
    assert terminal is not None  # terminal_or_merchant passed
    return (check_profile(terminal.allowed_codes, f.txn_type)
            or check_refund_policy(terminal.refunds_allowed, f.txn_type))


def processing_code(f: Facts) -> ResponseCode | None:
    return check_txn_type(f.p.cls, f.txn_type)


# -- card number and routing ------------------------------------------------------


def card_number(f: Facts) -> ResponseCode | None:
    return check_card_number(f.p.pan)


def routing(f: Facts) -> ResponseCode | None:
    services = f.services
    f.issuer_id = issuer_id = services.bins.issuer_for(f.p.pan)
    issuer = None if issuer_id is None else services.issuers.get(issuer_id)
    return check_route(issuer_id, issuer is not None and issuer.available)


# -- the on-us issuer's steps ---------------------------------------------------------


def _card(f: Facts) -> CardRow:
    """The card of a step after :func:`card_on_file`."""
    card = f.card
    assert card is not None  # card_on_file passed
    return card


def card_on_file(f: Facts) -> ResponseCode | None:
    return check_on_file(f.card is not None)


def expiry(f: Facts) -> ResponseCode | None:
    return check_expiry(_card(f).expiry, f.p.expiry, f.local_now)


def card_state(f: Facts) -> ResponseCode | None:
    return check_card_state(_card(f).state)


def pin(f: Facts) -> ResponseCode | None:
    """Verifies a presented PIN (unless the card's PIN is blocked). A PIN
    key that fails answers ``63``, which is never stored."""
    card, p = _card(f), f.p
    present = p.pin_block is not None
    verified: bool | None = None
    if present and not card.pin_blocked:
        assert p.pin_block is not None and p.ksn is not None  # parse_request
        hsm, zone = f.services.hsm, f.pin_zone
        try:
            if zone is not None:  # rewrapped at the edge: one long-lived key
                verified = hsm.verify_zone_pin(zone, p.pan, _pvd(card))
            else:
                verified = hsm.verify_pin(p.ksn, p.pin_block, p.pan, _pvd(card))
        except SecurityError:
            return ResponseCode.SECURITY_VIOLATION
        f.pin_decoded = verified is not None
    f.pin = outcome = pin_step(card.pin_tries, card.pin_blocked,
                               f.txn_type in PIN_REQUIRED_TYPES, present, verified)
    return check_pin(outcome)


def currency(f: Facts) -> ResponseCode | None:
    assert f.account is not None  # loaded with the card
    return check_currency(f.p.currency, f.account.currency)


def amount(f: Facts) -> ResponseCode | None:
    return check_amount(f.txn_type, f.p.amount_minor or 0)


def limits(f: Facts) -> ResponseCode | None:
    card, code, amount_minor = _card(f), f.txn_type, f.p.amount_minor or 0
    rc = check_txn_limit(code, amount_minor, card.limit_txn_minor)
    if rc is None and code in DEBIT_TYPES:
        used_minor, used_count = f.used
        rc = check_daily_limits(amount_minor, used_minor, used_count, card.limit_day_minor,
                                card.limit_day_count)
    return rc


def refund_cap(f: Facts) -> ResponseCode | None:
    """The terminal's refunds per business day: an acquirer's limit, with
    the amounts and limits in the order of checks, so after the card's."""
    assert f.terminal is not None  # terminal_or_merchant passed
    return check_refund_cap(f.txn_type, f.p.amount_minor or 0, f.refunded_minor,
                            f.terminal.refund_day_minor)


def accounts(f: Facts) -> ResponseCode | None:
    if f.txn_type != TxnType.FUNDS_TRANSFER:
        return None
    assert f.source is not None
    dest = None if f.dest is None else _account_facts(f.dest)
    return check_transfer_accounts(f.source_owned, _account_facts(f.source), dest, f.p.currency)


def funds(f: Facts) -> ResponseCode | None:
    source = f.source
    assert source is not None
    return check_funds(source.closed, source.available_balance_minor,
                       f.txn_type in DEBIT_TYPES, f.p.amount_minor or 0)


def review(f: Facts) -> ResponseCode | None:
    return check_review(f.txn_type, f.p.amount_minor or 0,
                        f.services.config.review_threshold_minor)


def risk(f: Facts) -> ResponseCode | None:
    """The risk rules: the blacklists, then velocity and unusual amount
    (debits only). Every rule that fires leaves an alert; one whose action
    declines answers ``05``."""
    card, p, services = _card(f), f.p, f.services
    rules = services.config.risk
    listed = services.blacklist
    hits = blacklist_hits(listed, _risk_subjects(f, card)) if listed else []
    velocity = unusual = False
    if f.txn_type in DEBIT_TYPES:
        velocity = velocity_fires(list(services.recent_debits(card.id)), f.now, rules)
        f.debit_counted = True
        total, count = f.usual
        unusual = amount_fires(p.amount_minor or 0, total, count, rules)
    if hits or velocity or unusual:
        f.alerts = risk_alerts(hits, velocity, unusual, rules)
    return (check_blacklist(hits, rules) or check_velocity(velocity, rules)
            or check_unusual_amount(unusual, rules))


def _risk_subjects(f: Facts, card: CardRow) -> list[tuple[str, str]]:
    assert f.source is not None and f.terminal is not None and f.merchant is not None
    subjects = [("pan", card.pan_hash.hex()), ("account", f.source.number),
                ("terminal", f.terminal.id), ("merchant", f.merchant.id)]
    if f.dest is not None:
        subjects.append(("account", f.dest.number))
    return subjects


def _account_facts(account: Account) -> AccountFacts:
    return AccountFacts(account.id, account.currency, account.closed,
                        account.available_balance_minor)


def _pvd(card: CardRow) -> PinVerificationData:
    return PinVerificationData(card.pvd_method, card.pvd_pvki, card.pvd_value, card.pvd_key_name)


# -- the chains -----------------------------------------------------------------

#: The acquirer's checks, common to originals and completions.
ACQUIRER: Chain = (terminal_or_merchant, terminal_profile, processing_code)
#: The switch's part of an original's decision: up to the issuer's door.
FRONT: Chain = (*ACQUIRER, card_number, routing)
#: The on-us issuer's part, run on the card's facts loaded from the ledger.
ISSUER: Chain = (card_on_file, expiry, card_state, pin, currency, amount, limits, refund_cap,
                 accounts, funds, review, risk)
#: A completion (0220) before it is matched to its authorization.
COMPLETION_FRONT: Chain = (*ACQUIRER, card_number)
#: A reversal (0400/0420) before it is matched to its original.
REVERSAL_FRONT: Chain = (terminal_or_merchant,)
#: Every step of an original's decision, in order.
ORDER: tuple[str, ...] = step_names(FRONT + ISSUER)

__all__ = ["ACQUIRER", "COMPLETION_FRONT", "FRONT", "ISSUER", "ORDER",
           "REVERSAL_FRONT", "Chain", "Facts", "Services", "Step", "run", "step_names"]
