"""The durable double-entry ledger (TigerBeetle's account model on SQLite).

Public API: :class:`LedgerStore` and :class:`AdminLedgerStore` (the store
as an interface, :mod:`iso_switch.ledger.store`), :class:`SqliteLedgerStore`
(its SQLite implementation, with the double-entry primitives and the
invariant check), :class:`Entry` for linked groups, the rows of
:mod:`iso_switch.ledger.rows` (with the issuer links' forwarding
records and store-and-forward items), and the values and errors of
:mod:`iso_switch.ledger.model`.
"""

from iso_switch.ledger.links import LinkStanExhausted
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
from iso_switch.ledger.rows import (
    CardRow,
    Forward,
    ForwardOutcome,
    IssuerRow,
    MerchantRow,
    NewSafItem,
    SafItem,
    SafKind,
    SafState,
    TerminalRow,
    TxnRow,
)
from iso_switch.ledger.sqlite import SqliteLedgerStore, due_from_number
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
    "Forward",
    "ForwardOutcome",
    "Hold",
    "HoldNotPending",
    "HoldState",
    "InsufficientFunds",
    "InvalidAmount",
    "IssuerRow",
    "LedgerError",
    "LedgerStore",
    "LinkStanExhausted",
    "MerchantRow",
    "NewSafItem",
    "SafItem",
    "SafKind",
    "SafState",
    "SqliteLedgerStore",
    "TerminalRow",
    "TransferKind",
    "TxnRow",
    "due_from_number",
    "parse_ts",
    "ts",
]
