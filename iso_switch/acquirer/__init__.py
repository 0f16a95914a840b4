"""The acquirer's side: terminals, their profiles, and merchants.

A terminal belongs to a merchant; the merchant is bound to a settlement
account (purchases and completions credit it, refunds debit it) and an
acquirer cash clearing account (withdrawals credit it). A terminal profile
says whether MACs are required, which processing codes it may use, and its
refund policy: whether it may refund at all and the most its refunds may
come to per business day. A refund needs no PIN and counts toward no card
limit, so the terminal's policy is what bounds the money it can pay out.

The acquirer's checks of the order of checks (docs/interface.md section 3) are
here, each a pure function answering its response code or ``None``:
:func:`check_merchant` (``03``), :func:`check_profile` and
:func:`check_refund_policy` (``58``), :func:`check_txn_type` (``12``) and,
with the amounts and limits, :func:`check_refund_cap` (``61``).
"""

from __future__ import annotations

from iso_switch.acquirer.mac import mac_required
from iso_switch.codes import KNOWN_TXN_TYPES, ResponseCode, TxnType
from iso_switch.ledger.records import MerchantRow, TerminalRow

_ORIGINAL_TYPES = frozenset({TxnType.PURCHASE, TxnType.CASH_WITHDRAWAL})
#: Interface section 3: the transaction types allowed per MTI class (else 12).
TXN_TYPES_BY_CLASS: dict[str, frozenset[TxnType]] = {
    "010": _ORIGINAL_TYPES | {TxnType.BALANCE_INQUIRY, TxnType.BALANCE_INQUIRY_ALT},
    "020": KNOWN_TXN_TYPES,
    "022": _ORIGINAL_TYPES,
}


def check_merchant(terminals_merchant_id: str | None,
                   merchant_id: str | None) -> ResponseCode | None:
    """``03`` for a terminal (DE41) or merchant (DE42) not on file (None),
    or a terminal that belongs to another merchant than DE42's."""
    if terminals_merchant_id is None or terminals_merchant_id != merchant_id:
        return ResponseCode.INVALID_MERCHANT
    return None


def check_profile(allowed_types: frozenset[str], txn_type: str) -> ResponseCode | None:
    """``58`` when a known transaction type is not in the terminal's profile.

    Unknown types pass here and are refused with 12 by :func:`check_txn_type`,
    so that 58 only ever means "this terminal may not do that"."""
    if txn_type in KNOWN_TXN_TYPES and txn_type not in allowed_types:
        return ResponseCode.NOT_PERMITTED_TO_TERMINAL
    return None


def check_refund_policy(refunds_allowed: bool, txn_type: str) -> ResponseCode | None:
    """``58`` for a refund on a terminal whose profile allows none."""
    if txn_type == TxnType.REFUND and not refunds_allowed:
        return ResponseCode.NOT_PERMITTED_TO_TERMINAL
    return None


def check_refund_cap(txn_type: str, amount_minor: int, refunded_minor: int,
                     cap_minor: int | None) -> ResponseCode | None:
    """``61`` for a refund that would take the terminal's refunds of the
    business day (``refunded_minor`` before it) above its cap; no cap
    (None) never answers."""
    if txn_type == TxnType.REFUND and cap_minor is not None and (
            refunded_minor + amount_minor > cap_minor):
        return ResponseCode.EXCEEDS_AMOUNT_LIMIT
    return None


def check_txn_type(cls: str, txn_type: str) -> ResponseCode | None:
    """``12`` for a transaction type the MTI class does not allow."""
    if txn_type not in TXN_TYPES_BY_CLASS[cls]:
        return ResponseCode.INVALID_TRANSACTION
    return None


__all__ = ["TXN_TYPES_BY_CLASS", "MerchantRow", "TerminalRow", "check_merchant",
           "check_profile", "check_refund_cap", "check_refund_policy", "check_txn_type",
           "mac_required"]
