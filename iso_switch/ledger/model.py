"""The ledger's values and errors: accounts, transfers, holds.

The model is TigerBeetle's: every account carries four running totals
(debits and credits, each pending and posted) in integer minor units of one
currency, and every movement of money is an immutable transfer that debits
one account and credits another. Two-phase transfers give authorizations:
a *pending* transfer (a hold) raises the pending totals, and later exactly
one of post (full or partial), void or expire resolves it. Corrections are
new transfers, never edits.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime


class AccountKind(enum.StrEnum):
    """What an account is for; only cardholder accounts have a floor."""

    CARDHOLDER = "cardholder"  # debits (pending + posted) never exceed credits posted
    SETTLEMENT = "settlement"  # a merchant's settlement account; may go negative
    CLEARING = "clearing"  # the acquirer's cash clearing account
    EQUITY = "equity"  # the operator's funding account (opening balances)
    DUE_FROM = "due_from"  # what a remote issuer owes the acquirer; debit-normal


class HoldState(enum.StrEnum):
    PENDING = "pending"
    POSTED = "posted"
    VOIDED = "voided"
    EXPIRED = "expired"


class TransferKind(enum.StrEnum):
    POSTED = "posted"  # a single-phase transfer
    PENDING = "pending"  # a hold
    POST_PENDING = "post_pending"  # posts (part of) a hold; the rest is released
    VOID_PENDING = "void_pending"  # releases a hold
    EXPIRE_PENDING = "expire_pending"  # releases a hold past its expiry


@dataclass(frozen=True, slots=True)
class Account:
    """One account row with its running totals (all integer minor units)."""

    id: int
    number: str
    currency: int
    kind: AccountKind
    closed: bool
    debits_pending: int
    debits_posted: int
    credits_pending: int
    credits_posted: int

    @property
    def ledger_balance_minor(self) -> int:
        """Credits posted minus debits posted (a cardholder's ledger balance)."""
        return self.credits_posted - self.debits_posted

    @property
    def available_balance_minor(self) -> int:
        """The ledger balance less what is held (pending debits)."""
        return self.credits_posted - self.debits_posted - self.debits_pending


@dataclass(frozen=True, slots=True)
class Hold:
    id: int
    debit_account_id: int
    credit_account_id: int
    amount_minor: int
    currency: int
    state: HoldState
    expires_at: datetime
    posted_minor: int


@dataclass(frozen=True, slots=True)
class Entry:
    """One leg of a linked group handed to a store's ``move``.

    For ``POSTED`` and ``PENDING``: debit, credit, amount and currency. For
    ``POST_PENDING``: ``pending_id`` and the amount to post (at most the
    held amount; the rest is released). For ``VOID_PENDING`` and
    ``EXPIRE_PENDING``: ``pending_id`` only.
    """

    kind: TransferKind
    debit_account_id: int = 0
    credit_account_id: int = 0
    amount_minor: int = 0
    currency: int = 0
    pending_id: int = 0
    expires_at: datetime | None = None
    ref: str = ""


class LedgerError(Exception):
    """A transfer the ledger refuses. The caller's business rule decides the
    response code; messages never carry account numbers or amounts."""


class AccountNotFound(LedgerError):
    pass


class AccountClosed(LedgerError):
    def __init__(self, account_id: int) -> None:
        super().__init__("account is closed")
        self.account_id = account_id


class InsufficientFunds(LedgerError):
    def __init__(self, account_id: int) -> None:
        super().__init__("debits would exceed credits on a cardholder account")
        self.account_id = account_id


class CurrencyMismatch(LedgerError):
    pass


class InvalidAmount(LedgerError):
    pass


class HoldNotPending(LedgerError):
    """The hold is unknown, or already posted, voided or expired."""


class HoldExpired(LedgerError):
    pass


# ``ts`` spells years below this one with strftime: ``isoformat`` pads the
# year to four digits, C strftime's ``%Y`` may not.
_ISOFORMAT_YEAR_MIN = 1000
# isoformat of an aware UTC time ends with "+00:00".
_UTC_OFFSET_CHARS = len("+00:00")
# The last moment ``ts`` spelled and its text (datetimes are immutable).
_last_ts: tuple[datetime | None, str] = (None, "")


def ts(moment: datetime) -> str:
    """A sortable UTC text timestamp: the one spelling used in every column
    (``YYYY-MM-DDTHH:MM:SS.ffffffZ``).

    Built with ``isoformat`` (about half the cost of ``strftime``; the
    processor stamps three columns per request); the text is the same as
    ``strftime("%Y-%m-%dT%H:%M:%S.%fZ")``, which tests check."""
    global _last_ts
    last = _last_ts
    if last[0] is moment:  # a request stamps several columns with one moment
        return last[1]
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    utc = moment.astimezone(UTC)
    if utc.year < _ISOFORMAT_YEAR_MIN:
        text = utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    else:
        text = utc.isoformat(timespec="microseconds")[:-_UTC_OFFSET_CHARS] + "Z"
    # One tuple, replaced whole: a reader in another thread sees an old or
    # a new pair, never a mix. Holding the moment keeps its identity unique.
    _last_ts = (moment, text)
    return text


def parse_ts(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
