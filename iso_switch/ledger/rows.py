"""The switch's own rows kept beside the ledger, as plain values: what a
store hands the processor and the admin commands, whatever the database.

:mod:`iso_switch.ledger.records` reads and writes them on SQLite.
"""

from __future__ import annotations

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
