"""The durable double-entry ledger (TigerBeetle's account model on SQLite).

Public API: :class:`LedgerStore` and :class:`AdminLedgerStore` (the store
as an interface, :mod:`iso_switch.ledger.store`), :class:`SqliteLedgerStore`
(its SQLite implementation, with the double-entry primitives and the
invariant check), :class:`Entry` for linked groups, the rows of
:mod:`iso_switch.ledger.rows`, and the values and errors of
:mod:`iso_switch.ledger.model`.
"""

from iso_switch.ledger.model import (
    Account,
    AccountClosed,
    AccountKind,
    AccountNotFound,
    CurrencyMismatch,
    Entry,
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
from iso_switch.ledger.rows import CardRow, IssuerRow, MerchantRow, TerminalRow, TxnRow
from iso_switch.ledger.sqlite import SqliteLedgerStore
from iso_switch.ledger.store import AdminLedgerStore, LedgerStore

__all__ = [
    "Account",
    "AccountClosed",
    "AccountKind",
    "AccountNotFound",
    "AdminLedgerStore",
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
