"""The durable ledger on SQLite: WAL, ``synchronous=FULL``, migrations,
explicit transactions for group commit, and the double-entry primitives.
:class:`SqliteLedgerStore` is one implementation of the store interface
(:mod:`iso_switch.ledger.store`): its batch is one SQLite transaction, its
request scope a savepoint, its reference version ``PRAGMA data_version``.

One writer. The switch's ledger writer (one thread) owns the connection:
it opens one transaction per batch of requests (``begin``), gives each
request a savepoint so a failing request rolls back alone, and commits once
(one fsync of the WAL for the whole batch). Other processes (the admin CLI)
may write between batches; SQLite's file lock serialises them and
:meth:`SqliteLedgerStore.data_version` tells the writer its caches are stale.

The connection is created with ``check_same_thread=False`` because the
server opens it on one thread and drives it from a worker thread; it must
still only ever be used by one thread at a time.

Read caches, all dropped by any rollback: cards (``cached_card_by_hash``)
and KSN replay states, both also dropped at ``begin`` when another
connection has committed; and the account rows read or written in the open
transaction (dropped when it ends), so a batch of purchases reads its
merchant's settlement account once instead of once per purchase. Each saves
a statement per request: about 5 % of the ledger process's CPU.

Balances are integer minor units. The rules (no cardholder overdraft, no
postings to closed accounts, one currency per transfer, a hold resolved at
most once) are checked in Python before anything is written, so a refused
linked group writes nothing.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from iso_switch.ledger.audit import AuditMixin
from iso_switch.ledger.links import LinksMixin
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
from iso_switch.ledger.model import Entry as Entry  # re-exported: the store's argument type
from iso_switch.ledger.records import RecordsMixin
from iso_switch.ledger.schema import MIGRATIONS

if TYPE_CHECKING:
    from iso_switch.ledger.store import AdminLedgerStore

SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")
# How long a writer waits for another process's write lock (the CLI) before
# the batch fails with 96: long enough for an admin command, short enough
# that terminals time out later than we answer.
BUSY_TIMEOUT_MS = 5_000
# Cached prepared statements per connection (sqlite3 default is 128).
STATEMENT_CACHE_SIZE = 512

#: Remote issuers' accounts are numbered ``due-from:<issuer id>:<currency>``.
DUE_FROM_PREFIX = "due-from:"


def due_from_number(issuer_id: str, currency: int) -> str:
    """The account number of what ``issuer_id`` owes in ``currency``."""
    return f"{DUE_FROM_PREFIX}{issuer_id}:{currency:03d}"


_ACCOUNT_COLUMNS = (
    "id, number, currency, kind, closed, debits_pending, debits_posted, "
    "credits_pending, credits_posted"
)


class _Row:
    """Mutable working copy of an account's totals while a group is applied."""

    __slots__ = ("closed", "cp", "cpo", "currency", "dirty", "dp", "dpo", "id", "kind")

    def __init__(self, row: tuple[object, ...]) -> None:
        self.id = int(row[0])  # type: ignore[call-overload]
        self.currency = int(row[2])  # type: ignore[call-overload]
        self.kind = str(row[3])
        self.closed = bool(row[4])
        self.dp = int(row[5])  # type: ignore[call-overload]
        self.dpo = int(row[6])  # type: ignore[call-overload]
        self.cp = int(row[7])  # type: ignore[call-overload]
        self.cpo = int(row[8])  # type: ignore[call-overload]
        self.dirty = False

    def check_floor(self) -> None:
        if self.kind == AccountKind.CARDHOLDER and self.dp + self.dpo > self.cpo:
            raise InsufficientFunds(self.id)


_POSTED = str(TransferKind.POSTED)
_TRANSFER_INSERT = (
    "INSERT INTO transfers (id, kind, debit_account_id, credit_account_id, amount_minor, "
    "currency, pending_id, ref, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _load_rows_query(count: int) -> str:
    marks = ",".join("?" * count)
    return f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE id IN ({marks})"  # noqa: S608


# The account-loading statement per number of accounts a group touches
# (built once; a transfer touches two).
_LOAD_ROWS_PREBUILT_MAX = 8
_LOAD_ROWS_QUERIES = {n: _load_rows_query(n) for n in range(1, _LOAD_ROWS_PREBUILT_MAX + 1)}
# Two distinct ids (every transfer): two point lookups joined by UNION ALL
# take 2.8 us where "IN (?, ?)" (an ephemeral index) takes 4.0 us.
_LOAD_ROWS_QUERIES[2] = (
    f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE id = ?1 UNION ALL "  # noqa: S608
    f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE id = ?2"
)


# The entry kinds that open a transfer between two accounts; the others
# resolve a hold.
_OPENING_KINDS = frozenset((TransferKind.POSTED, TransferKind.PENDING))

# What applying one entry gives :meth:`SqliteLedgerStore.move`: the debit and
# credit rows, the amount, the currency and the resolved hold's id (or None).
_Applied = tuple[_Row, _Row, int, int, int | None]


def _accounts_of(entries: Sequence[Entry], holds: dict[int, Hold]) -> set[int]:
    """Ids of every account the group touches (a hold's, for its resolutions)."""
    wanted: set[int] = set()
    for entry in entries:
        if entry.pending_id:
            hold = holds[entry.pending_id]
            wanted.update((hold.debit_account_id, hold.credit_account_id))
        else:
            wanted.update((entry.debit_account_id, entry.credit_account_id))
    return wanted


def _check_opening(debit: _Row, credit: _Row, amount_minor: int, currency: int) -> None:
    """The rules every new transfer meets before it touches a total (the
    cardholder floor is checked after, on the changed totals)."""
    if amount_minor <= 0:
        raise InvalidAmount("amount must be positive")
    if debit.id == credit.id:
        raise InvalidAmount("debit and credit accounts must differ")
    if not debit.currency == credit.currency == currency:
        raise CurrencyMismatch("accounts and transfer differ in currency")
    for row in (debit, credit):
        if row.closed:
            raise AccountClosed(row.id)


def _open_transfer(
    entry: Entry, accounts: dict[int, _Row], transfer_id: int,
    hold_inserts: list[tuple[object, ...]],
) -> _Applied:
    """A ``POSTED`` or ``PENDING`` entry applied to the working rows; a
    pending one also queues its hold row."""
    amount = entry.amount_minor
    debit, credit = accounts[entry.debit_account_id], accounts[entry.credit_account_id]
    _check_opening(debit, credit, amount, entry.currency)
    if entry.kind == TransferKind.POSTED:
        debit.dpo += amount
        credit.cpo += amount
    else:
        if entry.expires_at is None:
            raise LedgerError("a hold needs an expiry")
        debit.dp += amount
        credit.cp += amount
        hold_inserts.append((
            transfer_id, debit.id, credit.id, amount, entry.currency, ts(entry.expires_at),
        ))
    return debit, credit, amount, entry.currency, None


def _resolve_hold(
    entry: Entry, hold: Hold, accounts: dict[int, _Row],
    hold_updates: dict[int, tuple[str, int]],
) -> _Applied:
    """A post, void or expiry of ``hold`` applied to the working rows: the
    held amount is released, a post then moves what it posts. A hold
    resolves once, in the store and within the group."""
    if hold.state != HoldState.PENDING or hold.id in hold_updates:
        raise HoldNotPending("hold already resolved")
    debit, credit = accounts[hold.debit_account_id], accounts[hold.credit_account_id]
    debit.dp -= hold.amount_minor
    credit.cp -= hold.amount_minor
    if entry.kind == TransferKind.POST_PENDING:
        amount = entry.amount_minor
        if not 0 < amount <= hold.amount_minor:
            raise InvalidAmount("posted amount must be positive and at most the hold")
        for row in (debit, credit):
            if row.closed:
                raise AccountClosed(row.id)
        debit.dpo += amount
        credit.cpo += amount
        hold_updates[hold.id] = (HoldState.POSTED, amount)
    elif entry.kind == TransferKind.VOID_PENDING:
        amount = hold.amount_minor
        hold_updates[hold.id] = (HoldState.VOIDED, 0)
    else:
        amount = hold.amount_minor
        hold_updates[hold.id] = (HoldState.EXPIRED, 0)
    return debit, credit, amount, hold.currency, hold.id


_ACCOUNT_KINDS = {str(kind): kind for kind in AccountKind}


def _account(row: Sequence[object]) -> Account:
    return Account(
        id=int(row[0]),  # type: ignore[call-overload]
        number=str(row[1]),
        currency=int(row[2]),  # type: ignore[call-overload]
        # A dict lookup, not the enum call; an unknown kind still raises ValueError.
        kind=_ACCOUNT_KINDS.get(row[3]) or AccountKind(str(row[3])),  # type: ignore[call-overload]
        closed=bool(row[4]),
        debits_pending=int(row[5]),  # type: ignore[call-overload]
        debits_posted=int(row[6]),  # type: ignore[call-overload]
        credits_pending=int(row[7]),  # type: ignore[call-overload]
        credits_posted=int(row[8]),  # type: ignore[call-overload]
    )


def _hold(row: Sequence[object]) -> Hold:
    return Hold(
        id=int(row[0]),  # type: ignore[call-overload]
        debit_account_id=int(row[1]),  # type: ignore[call-overload]
        credit_account_id=int(row[2]),  # type: ignore[call-overload]
        amount_minor=int(row[3]),  # type: ignore[call-overload]
        currency=int(row[4]),  # type: ignore[call-overload]
        state=HoldState(str(row[5])),
        expires_at=parse_ts(str(row[6])),
        posted_minor=int(row[7]),  # type: ignore[call-overload]
    )


#: Cardholder data lives in the ledger: owner read/write only.
PRIVATE_FILE_MODE = 0o600


def _private_files(path: str) -> None:
    """Create the database file 0600 before SQLite opens it (SQLite gives its
    -wal and -shm files the main file's mode), and tighten an existing file
    and its -wal/-shm to 0600, whatever the umask was when they were made."""
    if path == ":memory:" or path.startswith("file:"):
        return
    fd = os.open(path, os.O_CREAT | os.O_RDWR, PRIVATE_FILE_MODE)
    os.close(fd)
    for name in (path, path + "-wal", path + "-shm"):
        try:
            if os.stat(name).st_mode & 0o077:
                os.chmod(name, PRIVATE_FILE_MODE)
        except FileNotFoundError:
            pass


class NotDurable(RuntimeError):
    """The database cannot give the durability the ledger promises (WAL
    with synchronous FULL or EXTRA); the store refuses to open."""


def _statements(script: str) -> list[str]:
    """A migration's statements, split where SQLite says one is complete (a
    trigger body holds semicolons of its own). Not ``executescript``: that
    commits first, and a migration must apply in one transaction."""
    statements, pending = [], ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip().strip(";").strip():
                statements.append(pending)
            pending = ""
    if pending.strip().strip(";").strip():
        raise ValueError("a migration ends in an incomplete statement")
    return statements


class SqliteLedgerStore(RecordsMixin, LinksMixin, AuditMixin):
    """The ledger's durable store. See the module docstring for threading."""

    def __init__(self, path: Path | str, *, synchronous: str = "FULL") -> None:
        if synchronous.upper() not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}")
        self.path = str(path)
        _private_files(self.path)
        self.conn = sqlite3.connect(
            self.path,
            isolation_level=None,  # we issue BEGIN / COMMIT / SAVEPOINT ourselves
            check_same_thread=False,
            cached_statements=STATEMENT_CACHE_SIZE,
            timeout=BUSY_TIMEOUT_MS / 1000,
        )
        mode = self.conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            self.conn.close()
            raise NotDurable(f"{self.path}: SQLite refused WAL mode (journal_mode is {mode}); "
                              "the ledger needs WAL for durable group commit")
        self.conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
        self.conn.execute("PRAGMA foreign_keys=OFF")
        self._in_txn = False
        self._next_transfer_id = 1
        self._card_cache = {}
        self._ksn_cache = {}
        # Account rows as read or last written in the open transaction (see
        # _load_rows). Only while it is open: then no other connection can
        # write, so the copy cannot go stale.
        self._txn_accounts: dict[int, tuple[object, ...]] = {}
        self._seen_data_version = -1
        self.migrate()

    # -- lifecycle and transactions ------------------------------------

    def close(self) -> None:
        self.conn.close()

    def migrate(self) -> int:
        """Apply pending migrations in one transaction; return the version."""
        version = int(self.conn.execute("PRAGMA user_version").fetchone()[0])
        if version > len(MIGRATIONS):
            raise RuntimeError("the database is newer than this version of iso-switch")
        if version == len(MIGRATIONS):
            return version
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            for index in range(version, len(MIGRATIONS)):
                for statement in _statements(MIGRATIONS[index]):
                    self.conn.execute(statement)
            self.conn.execute(f"PRAGMA user_version={len(MIGRATIONS)}")
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        return len(MIGRATIONS)

    @property
    def schema_version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def data_version(self) -> int:
        """Changes whenever *another* connection commits (PRAGMA data_version):
        the signal to drop cached reference data."""
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    def reference_version(self) -> int:
        """The store's opaque token for reference data (:class:`LedgerStore`):
        on SQLite, :meth:`data_version`, which moves on any other
        connection's commit (reference data or not: a reload too many,
        never one too few)."""
        return self.data_version()

    def begin(self) -> None:
        """Start the write transaction of one batch (takes the write lock).
        Drops the cached cards if another connection has committed since
        (no other can until this transaction ends)."""
        self.conn.execute("BEGIN IMMEDIATE")
        self._in_txn = True
        self._txn_accounts.clear()
        version = self.data_version()
        if version != self._seen_data_version:
            self._card_cache.clear()
            self._ksn_cache.clear()
            self._seen_data_version = version
        row = self.conn.execute("SELECT max(id) FROM transfers").fetchone()
        self._next_transfer_id = int(row[0] or 0) + 1

    def commit(self) -> None:
        """Commit the batch; with synchronous=FULL this returns after fsync."""
        self.conn.execute("COMMIT")
        self._in_txn = False
        self._txn_accounts.clear()

    def rollback(self) -> None:
        self._forget_uncommitted()
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
        self._in_txn = False

    def _forget_uncommitted(self) -> None:
        """Drop every cached row a rolled-back write may have touched."""
        self._card_cache.clear()
        self._ksn_cache.clear()
        self._txn_accounts.clear()

    # The per-request undo scope (:class:`LedgerStore`), as one SQLite
    # savepoint; the savepoint names are kept for callers that use them.

    def begin_request(self) -> None:
        """Open the undo scope of one request inside the batch transaction."""
        self.conn.execute("SAVEPOINT request")

    def end_request(self) -> None:
        """Keep the request's writes (they commit or roll back with the batch)."""
        self.conn.execute("RELEASE request")

    def undo_request(self) -> None:
        """Drop the request's writes and close its scope; the batch goes on."""
        self._forget_uncommitted()
        self.conn.execute("ROLLBACK TO request")
        self.conn.execute("RELEASE request")

    savepoint = begin_request
    release = end_request
    rollback_to = undo_request

    @contextmanager
    def write(self) -> Iterator[None]:
        """One write transaction (for admin commands and tests)."""
        self.begin()
        try:
            yield
        except BaseException:
            self.rollback()
            raise
        self.commit()

    # -- accounts ------------------------------------------------------

    def create_account(
        self, number: str, currency: int, kind: AccountKind, now: datetime
    ) -> int:
        cursor = self.conn.execute(
            "INSERT INTO accounts (number, currency, kind, created_at) VALUES (?, ?, ?, ?)",
            (number, currency, str(kind), ts(now)),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def get_account(self, account_id: int) -> Account:
        cached = self._txn_accounts.get(account_id)
        if cached is not None:
            return _account(cached)
        row = self.conn.execute(
            f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE id = ?",  # noqa: S608
            (account_id,),
        ).fetchone()
        if row is None:
            raise AccountNotFound("no such account")
        if self._in_txn:
            self._txn_accounts[account_id] = row
        return _account(row)

    def due_from_account(self, issuer_id: str, currency: int, now: datetime) -> int:
        """The id of ``due-from:<issuer>:<currency>`` (what the remote issuer
        owes the acquirer in that currency), created on first use in the
        caller's transaction."""
        number = due_from_number(issuer_id, currency)
        found = self.account_by_number(number)
        if found is not None:
            return found.id
        return self.create_account(number, currency, AccountKind.DUE_FROM, now)

    def account_by_number(self, number: str) -> Account | None:
        row = self.conn.execute(
            f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE number = ?",  # noqa: S608
            (number,),
        ).fetchone()
        return None if row is None else _account(row)

    def list_accounts(self) -> list[Account]:
        rows = self.conn.execute(f"SELECT {_ACCOUNT_COLUMNS} FROM accounts ORDER BY id")  # noqa: S608
        return [_account(row) for row in rows]

    def set_account_closed(self, account_id: int, closed: bool) -> None:
        self._txn_accounts.pop(account_id, None)
        self.conn.execute("UPDATE accounts SET closed = ? WHERE id = ?", (int(closed), account_id))

    # -- transfers -----------------------------------------------------

    def get_hold(self, hold_id: int) -> Hold | None:
        row = self.conn.execute(
            "SELECT id, debit_account_id, credit_account_id, amount_minor, currency, state, "
            "expires_at, posted_minor FROM holds WHERE id = ?",
            (hold_id,),
        ).fetchone()
        return None if row is None else _hold(row)

    def transfer(
        self, debit: int, credit: int, amount_minor: int, currency: int, ref: str, now: datetime
    ) -> int:
        """One posted transfer: :meth:`move` of one ``POSTED`` entry, spelled
        out (the processor's every purchase and withdrawal). The same checks
        in the same order, the same transfer id (taken before the checks, as
        :meth:`move` does), the same rows written."""
        if not self._in_txn:
            raise RuntimeError("ledger writes need an open transaction (begin)")
        accounts = self._load_rows({debit, credit})
        created_at = ts(now)
        transfer_id = self._next_transfer_id
        self._next_transfer_id += 1
        debit_row, credit_row = accounts[debit], accounts[credit]
        _check_opening(debit_row, credit_row, amount_minor, currency)
        debit_row.dpo += amount_minor
        credit_row.cpo += amount_minor
        debit_row.check_floor()
        debit_row.dirty = credit_row.dirty = True
        self._write(accounts, [(
            transfer_id, _POSTED, debit, credit, amount_minor, currency, None, ref, created_at,
        )], [], {})
        return transfer_id

    def hold(
        self,
        debit: int,
        credit: int,
        amount_minor: int,
        currency: int,
        expires_at: datetime,
        ref: str,
        now: datetime,
    ) -> int:
        entry = Entry(
            TransferKind.PENDING, debit, credit, amount_minor, currency, expires_at=expires_at,
            ref=ref,
        )
        return self.move([entry], now)[0]

    def post_hold(self, hold_id: int, amount_minor: int, ref: str, now: datetime) -> int:
        entry = Entry(TransferKind.POST_PENDING, pending_id=hold_id, amount_minor=amount_minor,
                      ref=ref)
        return self.move([entry], now)[0]

    def void_hold(self, hold_id: int, ref: str, now: datetime) -> int:
        return self.move([Entry(TransferKind.VOID_PENDING, pending_id=hold_id, ref=ref)], now)[0]

    def due_holds(self, now: datetime) -> list[int]:
        """Ids of pending holds whose expiry has come (cheap: partial index).

        Sorted here, not by an ``ORDER BY id``: with one, SQLite prefers to
        walk the whole table in rowid order over searching the index, and
        this runs with every batch."""
        rows = self.conn.execute(
            "SELECT id FROM holds WHERE state = 'pending' AND expires_at <= ?", (ts(now),),
        )
        return sorted(int(row[0]) for row in rows)

    def expire_holds(self, hold_ids: Sequence[int], now: datetime) -> None:
        entries = [Entry(TransferKind.EXPIRE_PENDING, pending_id=h, ref="expiry") for h in hold_ids]
        if entries:
            self.move(entries, now)

    def move(self, entries: Sequence[Entry], now: datetime) -> list[int]:
        """Apply a linked group: all entries succeed, or a :class:`LedgerError`
        is raised and nothing is written. Returns the new transfer ids.

        Every entry is checked and applied to working copies of the
        accounts first (:func:`_open_transfer`, :func:`_resolve_hold`); only
        a group that passed whole reaches :meth:`_write`."""
        if not self._in_txn:
            raise RuntimeError("ledger writes need an open transaction (begin)")
        holds = self._holds_of(entries)
        accounts = self._load_rows(_accounts_of(entries, holds))
        created_at = ts(now)
        transfer_rows: list[tuple[object, ...]] = []
        hold_inserts: list[tuple[object, ...]] = []
        hold_updates: dict[int, tuple[str, int]] = {}
        ids: list[int] = []
        for entry in entries:
            transfer_id = self._next_transfer_id
            self._next_transfer_id += 1
            if entry.kind in _OPENING_KINDS:
                debit, credit, amount, currency, pending_id = _open_transfer(
                    entry, accounts, transfer_id, hold_inserts)
            else:
                debit, credit, amount, currency, pending_id = _resolve_hold(
                    entry, holds[entry.pending_id], accounts, hold_updates)
            debit.check_floor()
            debit.dirty = credit.dirty = True
            transfer_rows.append((
                transfer_id, str(entry.kind), debit.id, credit.id, amount, currency, pending_id,
                entry.ref, created_at,
            ))
            ids.append(transfer_id)
        self._write(accounts, transfer_rows, hold_inserts, hold_updates)
        return ids

    def _holds_of(self, entries: Sequence[Entry]) -> dict[int, Hold]:
        """The holds the group resolves, by id; an unknown one refuses the group."""
        holds: dict[int, Hold] = {}
        for entry in entries:
            if entry.pending_id and entry.pending_id not in holds:
                found = self.get_hold(entry.pending_id)
                if found is None:
                    raise HoldNotPending("no such hold")
                holds[entry.pending_id] = found
        return holds

    def _load_rows(self, ids: set[int]) -> dict[int, _Row]:
        """Working copies of the accounts. Rows already read or written in
        this transaction come from ``_txn_accounts`` (a batch's merchant
        account is read once, not once per purchase); ``_write`` keeps that
        copy equal to what it writes, and any rollback drops it. Only inside
        a transaction: ``transfer`` and ``move`` check that first."""
        known = self._txn_accounts
        missing = [i for i in ids if i not in known]
        if missing:
            query = _LOAD_ROWS_QUERIES.get(len(missing))
            if query is None:
                query = _load_rows_query(len(missing))
            rows = self.conn.execute(query, missing).fetchall()
            if len(rows) != len(missing):
                raise AccountNotFound("no such account")
            for row in rows:
                known[row[0]] = row
        return {i: _Row(known[i]) for i in ids}

    def _write(
        self,
        accounts: dict[int, _Row],
        transfer_rows: list[tuple[object, ...]],
        hold_inserts: list[tuple[object, ...]],
        hold_updates: dict[int, tuple[str, int]],
    ) -> None:
        conn = self.conn
        if len(transfer_rows) == 1:  # the common case; execute is cheaper than executemany
            conn.execute(_TRANSFER_INSERT, transfer_rows[0])
        else:
            conn.executemany(_TRANSFER_INSERT, transfer_rows)
        if hold_inserts:
            conn.executemany(
                "INSERT INTO holds (id, debit_account_id, credit_account_id, amount_minor, "
                "currency, state, expires_at) VALUES (?, ?, ?, ?, ?, 'pending', ?)",
                hold_inserts,
            )
        if hold_updates:
            conn.executemany(
                "UPDATE holds SET state = ?, posted_minor = ? WHERE id = ?",
                [(str(state), posted, hold_id) for hold_id, (state, posted) in
                 hold_updates.items()],
            )
        dirty = [r for r in accounts.values() if r.dirty]
        conn.executemany(
            "UPDATE accounts SET debits_pending = ?, debits_posted = ?, credits_pending = ?, "
            "credits_posted = ? WHERE id = ?",
            [(r.dp, r.dpo, r.cp, r.cpo, r.id) for r in dirty],
        )
        known = self._txn_accounts
        for r in dirty:
            before = known.get(r.id)
            if before is not None:
                known[r.id] = (*before[:5], r.dp, r.dpo, r.cp, r.cpo)

    # -- invariants ----------------------------------------------------

    def check_invariants(self, now: datetime | None = None) -> list[str]:
        """Every violated invariant, as text (empty: the ledger is sound).

        Per currency debits == credits, pending and posted; no cardholder
        account below zero; each account's totals equal what its transfers
        and holds say; each hold is pending (and, given ``now``, not past its
        expiry), posted, voided or expired, with exactly the transfers its
        state implies.
        """
        problems = [
            *self._unbalanced_currencies(),
            *self._cardholders_below_zero(),
            *self._totals_unlike_transfers(),
            *self._holds_unlike_transfers(),
            *self._due_from_misfiled(),
        ]
        if now is not None:
            problems.extend(self._holds_past_expiry(now))
        return problems

    def _unbalanced_currencies(self) -> Iterator[str]:
        for currency, dp, dpo, cp, cpo in self.conn.execute(
            "SELECT currency, sum(debits_pending), sum(debits_posted), sum(credits_pending), "
            "sum(credits_posted) FROM accounts GROUP BY currency"
        ):
            if dp != cp:
                yield f"currency {currency}: pending debits {dp} != credits {cp}"
            if dpo != cpo:
                yield f"currency {currency}: posted debits {dpo} != credits {cpo}"

    def _cardholders_below_zero(self) -> Iterator[str]:
        for (account_id,) in self.conn.execute(
            "SELECT id FROM accounts WHERE kind = 'cardholder' "
            "AND debits_pending + debits_posted > credits_posted"
        ):
            yield f"account id {account_id}: cardholder account below zero"

    def _totals_unlike_transfers(self) -> Iterator[str]:
        """Accounts whose four totals differ from a sum over their transfers
        (posted legs) and pending holds."""
        recomputed = self.conn.execute(
            """
            WITH legs AS (
                SELECT debit_account_id AS acct, amount_minor AS dpo, 0 AS cpo FROM transfers
                    WHERE kind IN ('posted', 'post_pending')
                UNION ALL
                SELECT credit_account_id, 0, amount_minor FROM transfers
                    WHERE kind IN ('posted', 'post_pending')
            ), pend AS (
                SELECT debit_account_id AS acct, amount_minor AS dp, 0 AS cp FROM holds
                    WHERE state = 'pending'
                UNION ALL
                SELECT credit_account_id, 0, amount_minor FROM holds WHERE state = 'pending'
            )
            SELECT a.id,
                a.debits_posted - coalesce((SELECT sum(dpo) FROM legs WHERE acct = a.id), 0),
                a.credits_posted - coalesce((SELECT sum(cpo) FROM legs WHERE acct = a.id), 0),
                a.debits_pending - coalesce((SELECT sum(dp) FROM pend WHERE acct = a.id), 0),
                a.credits_pending - coalesce((SELECT sum(cp) FROM pend WHERE acct = a.id), 0)
            FROM accounts a
            """
        ).fetchall()
        for account_id, *diffs in recomputed:
            if any(diffs):
                yield f"account id {account_id}: totals differ from its transfers"

    def _holds_unlike_transfers(self) -> Iterator[str]:
        """Holds in an unknown state, or without exactly the pending transfer
        and the resolving transfers their state implies."""
        for hold_id, state, resolving, pending_rows in self.conn.execute(
            """
            SELECT h.id, h.state,
                (SELECT count(*) FROM transfers t WHERE t.pending_id = h.id),
                (SELECT count(*) FROM transfers t WHERE t.id = h.id AND t.kind = 'pending')
            FROM holds h
            """
        ):
            if state not in {s.value for s in HoldState}:
                yield f"hold {hold_id}: unknown state"
            if pending_rows != 1:
                yield f"hold {hold_id}: no pending transfer"
            expected = 0 if state == HoldState.PENDING else 1
            if resolving != expected:
                yield f"hold {hold_id}: {resolving} resolving transfers for {state}"

    def _due_from_misfiled(self) -> Iterator[str]:
        """Remote issuers' accounts whose kind, number and currency disagree
        (postings to one would land in the wrong currency's books)."""
        for account_id, number, currency, kind in self.conn.execute(
            "SELECT id, number, currency, kind FROM accounts "
            "WHERE kind = 'due_from' OR number LIKE 'due-from:%'"
        ):
            issuer_id = str(number).removeprefix(DUE_FROM_PREFIX).rpartition(":")[0]
            if kind != AccountKind.DUE_FROM or number != due_from_number(issuer_id, currency):
                yield f"account id {account_id}: a due-from account misfiled"

    def _holds_past_expiry(self, now: datetime) -> Iterator[str]:
        for (hold_id,) in self.conn.execute(
            "SELECT id FROM holds WHERE state = 'pending' AND expires_at <= ?", (ts(now),)
        ):
            yield f"hold {hold_id}: pending past its expiry"

if TYPE_CHECKING:

    def _implements_the_protocols(store: SqliteLedgerStore) -> AdminLedgerStore:
        """mypy proves here that this store is an :class:`AdminLedgerStore`
        (and so a :class:`~iso_switch.ledger.store.LedgerStore`)."""
        return store
