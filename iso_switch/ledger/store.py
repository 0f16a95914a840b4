"""The ledger store as an interface: what the processor needs from a durable
store, and what the admin commands and demo seeding need on top.

Two :class:`typing.Protocol` classes, so any database can stand behind the
switch by implementing the methods (structural typing, no base class):
:class:`~iso_switch.ledger.sqlite.SqliteLedgerStore` is one; a PostgreSQL
store is meant to be another. ``tests/test_store_contract.py`` holds the
contract every implementation must pass.

The transaction model, in words that suit any database:

* one **batch transaction** at a time (``begin`` / ``commit`` /
  ``rollback``); every write happens inside one, and ``commit`` returns
  only once the batch is durable;
* inside it, one **request scope** at a time (``begin_request`` /
  ``end_request`` / ``undo_request``): undoing a request drops exactly the
  writes made since its ``begin_request`` and leaves the batch open;
* a **reference version** (``reference_version``): an opaque token that
  compares unequal after another writer committed a change to reference
  data (terminals, merchants, issuers, routes, blacklist, remembered
  reversals), so the processor knows when to reload its copies. It may
  also move for other commits; it never stays put across a change.

Money rules are the store's: a refused transfer raises a
:class:`~iso_switch.ledger.model.LedgerError` and writes nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol

from iso_switch.ledger.audit import AuditEntry
from iso_switch.ledger.model import Account, AccountKind, Entry, Hold
from iso_switch.ledger.rows import (
    CardRow,
    Forward,
    ForwardOutcome,
    IssuerRow,
    MerchantRow,
    NewSafItem,
    SafItem,
    SafState,
    TerminalRow,
    TxnRow,
)

#: A review row: (id, transaction key, hold id, state).
Review = tuple[int, str, int, str]
#: A review as listed: (id, transaction key, hold id, state, created at).
ReviewListing = tuple[int, str, int, str, str]


class LedgerStore(Protocol):
    """The store the processor decides requests against (single writer)."""

    # -- transactions ------------------------------------------------------

    def begin(self) -> None:
        """Open the batch transaction (and take the writer's lock)."""

    def commit(self) -> None:
        """Make the batch durable; returns after the data is on disk."""

    def rollback(self) -> None:
        """Drop the whole batch; harmless when none is open."""

    def write(self) -> AbstractContextManager[None]:
        """A batch transaction as a ``with`` block: commit on exit, roll
        back when the block raises."""
        ...

    def begin_request(self) -> None:
        """Open one request's undo scope inside the batch."""

    def end_request(self) -> None:
        """Close the scope and keep its writes (they share the batch's fate)."""

    def undo_request(self) -> None:
        """Close the scope and drop every write made since ``begin_request``."""

    def reference_version(self) -> Hashable:
        """A token that changes when another writer commits reference data."""
        ...

    def close(self) -> None: ...

    # -- reference data ------------------------------------------------------

    def load_terminals(self) -> dict[str, TerminalRow]: ...
    def load_merchants(self) -> dict[str, MerchantRow]: ...
    def load_issuers(self) -> dict[str, IssuerRow]: ...
    def load_routes(self) -> dict[str, str]: ...
    def load_blacklist(self) -> frozenset[tuple[str, str]]: ...

    # -- accounts and money ----------------------------------------------------

    def get_account(self, account_id: int) -> Account: ...
    def account_by_number(self, number: str) -> Account | None: ...
    def card_owns_account(self, card_id: int, account_id: int) -> bool: ...
    def get_hold(self, hold_id: int) -> Hold | None: ...

    def transfer(
        self, debit: int, credit: int, amount_minor: int, currency: int, ref: str, now: datetime
    ) -> int:
        """One posted transfer; returns its id."""
        ...

    def hold(
        self, debit: int, credit: int, amount_minor: int, currency: int,
        expires_at: datetime, ref: str, now: datetime,
    ) -> int:
        """A pending transfer (a hold) until posted, voided or expired."""
        ...

    def post_hold(self, hold_id: int, amount_minor: int, ref: str, now: datetime) -> int: ...
    def void_hold(self, hold_id: int, ref: str, now: datetime) -> int: ...

    def move(self, entries: Sequence[Entry], now: datetime) -> list[int]:
        """A linked group: every entry applies, or none and a LedgerError."""
        ...

    def due_holds(self, now: datetime) -> list[int]:
        """Pending holds whose expiry has come, oldest id first."""
        ...

    def expire_holds(self, hold_ids: Sequence[int], now: datetime) -> None: ...

    # -- cards -----------------------------------------------------------------

    def card_by_hash(self, pan_hash: bytes) -> CardRow | None: ...

    def cached_card_by_hash(self, pan_hash: bytes) -> CardRow | None:
        """:meth:`card_by_hash`, possibly from a cache the store keeps exact."""
        ...

    def get_card(self, card_id: int) -> CardRow | None: ...
    def set_pin_tries(self, card_id: int, tries: int, blocked: bool) -> None: ...

    def card_usage(self, card_id: int, day: str) -> tuple[int, int, int, int]:
        """(amount, count) used on ``day``, then (amount, count) on record."""
        ...

    def usual_debit(self, card_id: int) -> tuple[int, int]: ...
    def add_daily_usage(self, card_id: int, day: str, amount_minor: int, count: int) -> None: ...

    def terminal_refunds(self, terminal_id: str, day: str) -> int:
        """The amount a terminal's approved refunds of business day ``day``
        still come to (0 when none): reversals give back what they reverse."""
        ...

    def add_terminal_refunds(self, terminal_id: str, day: str, amount_minor: int) -> None:
        """Add to :meth:`terminal_refunds` of ``day`` (a reversal adds a
        negative amount), in the caller's transaction."""
        ...

    # -- decisions ---------------------------------------------------------------

    def max_txn_seq(self) -> int: ...
    def get_txn(self, key: str) -> TxnRow | None: ...

    def insert_txn(self, txn: TxnRow) -> None:
        """Store a decision under its key; a second insert of a key raises."""

    def update_txn(
        self, key: str, *, state: str, effective_minor: int, hold_id: int | None,
        orig_key: str | None = None,
    ) -> None: ...

    def txn_by_hold(self, hold_id: int) -> TxnRow | None:
        """The held or referred decision that owns the hold."""
        ...

    def recent_debit_requests(self, since: datetime) -> list[tuple[int, str]]:
        """(card id, received at) of debit requests the risk rules saw."""
        ...

    def auth_code_used(self, card_id: int, business_day: str, code: str) -> bool: ...

    def prune(self, cutoff: datetime) -> int:
        """Forget settled decisions and remembered reversals before ``cutoff``
        (never pending holds' decisions, never replay state)."""
        ...

    # -- reversals of unknown originals, review queue, alerts --------------------

    def remembered_reversal(self, orig_key: str) -> str | None: ...
    def remembered_orig_keys(self, limit: int) -> set[str] | None: ...
    def remember_reversal(self, orig_key: str, reversal_key: str, now: datetime) -> None: ...
    def add_review(self, txn_key: str, hold_id: int, now: datetime) -> int: ...
    def get_review(self, review_id: int) -> Review | None: ...
    def review_by_txn(self, txn_key: str) -> Review | None: ...
    def set_review(self, review_id: int, state: str, hold_id: int, now: datetime) -> None: ...

    def add_alert(
        self, now: datetime, rule: str, action: str, txn_key: str, pan_masked: str, detail: str
    ) -> None: ...

    # -- DUKPT replay state --------------------------------------------------------

    def get_ksn_state(self, device: str) -> tuple[int, int] | None:
        """(highest counter, bitmap) of a device, or None before its first use."""
        ...

    def put_ksn_state(self, device: str, highest: int, bitmap: int, now: datetime) -> None: ...

    # -- issuer links: forwarding records, trace numbers, accounts -----------------
    # Each writes in the caller's transaction: a forwarding commits with its
    # request's KSN high-water mark, a SAF item with the decision behind it.

    def record_forward(self, forward: Forward, now: datetime) -> None:
        """Record a forwarding before its bytes leave; a second one under the
        same transaction key raises (as :meth:`insert_txn` does)."""

    def record_outcome(
        self, txn_key: str, outcome: ForwardOutcome, rc: str, now: datetime
    ) -> bool:
        """Record what decided a forwarding; the first outcome stays (False
        when one was recorded already)."""
        ...

    def get_forward(self, txn_key: str) -> Forward | None: ...

    def forwards_without_outcome(self, node: str, older_than: datetime) -> list[Forward]:
        """``node``'s forwardings recorded by ``older_than`` without an
        outcome, oldest first (restart recovery decides them 91)."""
        ...

    def next_link_stan(self, issuer_id: str, now: datetime) -> str:
        """The issuer's next link DE11, one number per call from one sequence
        shared by every node, never reused within 24 hours (else
        ``LinkStanExhausted``, a :class:`LedgerError`)."""
        ...

    def due_from_account(self, issuer_id: str, currency: int, now: datetime) -> int:
        """The id of the issuer's debit-normal ``due-from`` account in
        ``currency`` (no floor), created on first use."""
        ...

    def stand_in_usage(self, pan_hash: bytes, day: str) -> tuple[int, int]:
        """(count, total minor) of a card's stand-in approvals on ``day``."""
        ...

    def add_stand_in_usage(
        self, pan_hash: bytes, day: str, count: int, amount_minor: int
    ) -> None: ...

    # -- store-and-forward -------------------------------------------------------

    def enqueue_saf(self, item: NewSafItem, now: datetime) -> int:
        """Queue an item, due now; cardholder data only sealed (a plain
        cardholder field raises ValueError)."""
        ...

    def get_saf_item(self, item_id: int) -> SafItem | None: ...

    def due_saf_items(self, issuer_id: str, now: datetime, limit: int) -> list[SafItem]:
        """Ready now, oldest first, only the first open item of each
        transaction; dead, refused and acknowledged items hold nothing back."""
        ...

    def claim_saf_items(
        self, issuer_id: str, node: str, now: datetime, limit: int, lease_s: float
    ) -> list[SafItem]:
        """:meth:`due_saf_items`, made outstanding and leased to ``node``
        until ``now + lease_s`` (attempts counted); each item goes to one
        node at a time, and is due again when its lease ends unsettled."""
        ...

    def saf_acknowledged(self, item_id: int, node: str, rc: str, now: datetime) -> bool:
        """Settle an item ``node`` holds outstanding (False if it does not)."""
        ...

    def saf_retry(
        self, item_id: int, node: str, rc: str, now: datetime, retry_s: float
    ) -> bool: ...

    def saf_refused(self, item_id: int, node: str, rc: str, now: datetime) -> bool: ...

    def expire_saf_items(self, issuer_id: str, now: datetime, expiry_h: float) -> int:
        """Dead-letter the issuer's items unacknowledged ``expiry_h`` after
        they were queued; how many."""
        ...

    def saf_counts(self) -> dict[tuple[str, SafState], int]:
        """Items per (issuer, state)."""
        ...


class AdminLedgerStore(LedgerStore, Protocol):
    """What provisioning (admin commands, demo seeding) needs on top."""

    @property
    def schema_version(self) -> int: ...

    def get_meta(self, key: str) -> str | None: ...
    def set_meta(self, key: str, value: str) -> None: ...

    def create_account(
        self, number: str, currency: int, kind: AccountKind, now: datetime
    ) -> int: ...

    def list_accounts(self) -> list[Account]: ...
    def set_account_closed(self, account_id: int, closed: bool) -> None: ...
    def insert_card(self, card: CardRow, now: datetime) -> int: ...
    def link_card_account(self, card_id: int, account_id: int) -> None: ...
    def list_cards(self) -> list[CardRow]: ...
    def set_card_state(self, card_id: int, state: str) -> None: ...
    def upsert_terminal(self, terminal: TerminalRow) -> None: ...
    def upsert_merchant(self, merchant: MerchantRow) -> None: ...
    def upsert_issuer(self, issuer: IssuerRow) -> None: ...
    def set_issuer_available(self, issuer_id: str, available: bool) -> bool: ...
    def set_route(self, prefix: str, issuer_id: str) -> None: ...
    def add_blacklist(self, kind: str, value: str, reason: str) -> None: ...
    def remove_blacklist(self, kind: str, value: str) -> bool: ...
    def list_blacklist(self) -> list[tuple[str, str, str]]: ...
    def list_reviews(self, state: str | None) -> list[ReviewListing]: ...
    def list_alerts(self, limit: int) -> list[tuple[int, str, str, str, str, str, str]]: ...
    def journal(self, limit: int) -> list[TxnRow]: ...
    def count_txns(self) -> int: ...

    def check_invariants(self, now: datetime | None = None) -> list[str]:
        """Every violated ledger invariant as text; empty when sound."""
        ...

    def append_audit(
        self, actor: str, action: str, target: str, before: Mapping[str, Any] | None,
        after: Mapping[str, Any] | None, now: datetime,
    ) -> int: ...

    def list_audit(self, limit: int = 100, action: str | None = None) -> list[AuditEntry]: ...

    def list_saf_items(
        self, states: Collection[SafState] | None, issuer_id: str | None, limit: int
    ) -> list[SafItem]:
        """Items oldest first, optionally only of ``states`` and one issuer."""
        ...

    def requeue_saf_item(self, item_id: int, now: datetime) -> SafItem | None:
        """Queue a dead or refused item again; None when there is none such."""
        ...
