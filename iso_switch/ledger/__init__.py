"""The durable double-entry ledger (TigerBeetle's account model on SQLite).

Public API: :class:`SqliteLedgerStore` (the store, with the double-entry
primitives and the invariant check), :class:`Entry` for linked groups, and
the values and errors of :mod:`iso_switch.ledger.model`.
"""

from iso_switch.ledger.model import (
    Account,
    AccountClosed,
    AccountKind,
    AccountNotFound,
    CurrencyMismatch,
    Hold,
    HoldNotPending,
    HoldState,
    InsufficientFunds,
    InvalidAmount,
    LedgerError,
    TransferKind,
    parse_ts,
    ts,
)
from iso_switch.ledger.records import CardRow, IssuerRow, MerchantRow, TerminalRow, TxnRow
from iso_switch.ledger.sqlite import Entry, SqliteLedgerStore

LedgerStore = SqliteLedgerStore

__all__ = [
    "Account",
    "AccountClosed",
    "AccountKind",
    "AccountNotFound",
    "CardRow",
    "CurrencyMismatch",
    "Entry",
    "Hold",
    "HoldNotPending",
    "HoldState",
    "InsufficientFunds",
    "InvalidAmount",
    "IssuerRow",
    "LedgerError",
    "LedgerStore",
    "MerchantRow",
    "SqliteLedgerStore",
    "TerminalRow",
    "TransferKind",
    "TxnRow",
    "parse_ts",
    "ts",
]
