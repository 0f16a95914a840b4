"""The switch's own rows kept beside the ledger, as plain values: what a
store hands the processor and the admin commands, whatever the database.

:mod:`iso_switch.ledger.records` reads and writes them on SQLite.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TerminalRow:
    """A terminal's profile. The refund policy's defaults are those of a
    terminal that has none on record (refunds allowed, no daily cap), so a
    row read from an older ledger keeps its behaviour; the admin CLI sets
    the policy explicitly (no refunds unless asked)."""

    id: str
    merchant_id: str
    mac_required: bool
    allowed_codes: frozenset[str]
    refunds_allowed: bool = True
    # The most the terminal may refund per business day; None: no cap.
    refund_day_minor: int | None = None


@dataclass(frozen=True, slots=True)
class MerchantRow:
    id: str
    name: str
    settlement_account_id: int
    cash_account_id: int


@dataclass(frozen=True, slots=True)
class IssuerRow:
    id: str
    name: str
    available: bool


@dataclass(frozen=True, slots=True)
class CardRow:
    """A card at rest: a keyed hash of the PAN and its masked form, never the PAN."""

    id: int
    pan_hash: bytes
    pan_masked: str
    last4: str
    expiry: str  # YYMM
    state: str  # active | lost | stolen | blocked
    account_id: int
    pvd_method: str
    pvd_pvki: int
    pvd_value: str
    pvd_key_name: str
    pin_tries: int
    pin_blocked: bool
    limit_txn_minor: int
    limit_day_minor: int
    limit_day_count: int


@dataclass(frozen=True, slots=True)
class TxnRow:
    """One stored decision under its transaction key (the idempotency record),
    with what it did to the ledger so reversals and completions can undo it."""

    key: str
    content: bytes
    mti: str
    rc: str
    rrn: str
    auth_code: str
    de54: str
    created_at: str
    terminal: str
    stan: str
    pan_masked: str
    card_id: int | None
    code: str  # the full 6-digit processing code, '' when absent
    amount_minor: int
    currency: int
    debit_account_id: int | None
    credit_account_id: int | None
    hold_id: int | None
    state: str
    effective_minor: int
    business_day: str
    counts_daily: bool
    orig_key: str
    seq: int = 0


class ForwardOutcome(enum.StrEnum):
    """What became of a request forwarded to a remote issuer. ``NONE`` until
    decided; a forwarding left at ``NONE`` by a node that stopped is decided
    ``RESTART`` (91, with a reversal advice) by restart recovery."""

    NONE = ""
    ANSWERED = "answered"  # the issuer's answer decided it (rc: the decision)
    STAND_IN = "stand_in"  # decided in stand-in: timeout, connection lost
    RESTART = "restart"  # no outcome when its node stopped: decided 91


@dataclass(frozen=True, slots=True)
class Forward:
    """A request forwarded on an issuer link, recorded before its bytes
    leave. ``sealed`` is the cardholder data (PAN, expiry) the caller sealed
    under a key the ledger never holds; the ledger keeps it opaque and shows
    only ``pan_masked``."""

    txn_key: str  # the terminal's transaction key: forwarded once as an original
    issuer_id: str
    mti: str  # as sent on the link (0100 / 0200)
    stan: str  # DE11 on the link, from next_link_stan
    transmitted: str  # DE7 on the link (MMDDhhmmss)
    rrn: str  # DE37, the switch's
    amount_minor: int
    currency: int
    pan_masked: str
    sealed: bytes
    node: str  # the switch node that forwarded it
    created_at: str = ""
    outcome: ForwardOutcome = ForwardOutcome.NONE
    outcome_rc: str = ""


class SafKind(enum.StrEnum):
    """The kinds of store-and-forward item, each with its base MTI."""

    ADVICE = "advice"  # stand-in approval: 0120 / 0220 without DE90
    COMPLETION = "completion"  # a remote authorization's completion: 0220 with DE90
    REVERSAL = "reversal"  # reversal advice: 0420


class SafState(enum.StrEnum):
    """Where a store-and-forward item is. ``QUEUED`` and ``OUTSTANDING``
    are open (they hold back later items of their transaction); the others
    are final until an operator re-queues a dead or refused item."""

    QUEUED = "queued"
    OUTSTANDING = "outstanding"  # claimed by a node (leased) and sent or about to be
    ACKNOWLEDGED = "acknowledged"
    REFUSED = "refused"  # the issuer answered a code that is not a retry: kept
    DEAD = "dead"  # unacknowledged past saf_expiry_h


@dataclass(frozen=True, slots=True)
class NewSafItem:
    """What the decision that causes an advice queues. ``fields`` holds the
    message's other data elements by number (DE3, DE4, DE32, DE38, DE39,
    DE41, DE42, DE49, DE90, DE95...): never cardholder data, which goes
    sealed in ``sealed``. ``txn_group`` names the transaction: its items
    are sent in the order they were queued."""

    issuer_id: str
    txn_group: str
    kind: SafKind
    mti: str  # the base MTI (0120, 0220, 0420); a retry sends the repeat MTI
    stan: str  # DE11, assigned at queue time (next_link_stan)
    transmitted: str  # DE7, assigned at queue time
    rrn: str  # DE37
    amount_minor: int
    currency: int
    pan_masked: str
    sealed: bytes
    fields: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class SafItem:
    """One queued item as stored, with its delivery state."""

    id: int
    item: NewSafItem
    state: SafState
    attempts: int  # sends so far: 0 means the next send uses the base MTI
    next_attempt_at: str
    created_at: str
    queued_at: str  # the expiry clock: creation, or the last re-queue
    last_rc: str  # the issuer's last DE39 ('' before any answer)
    lease_node: str
    lease_until: str
