"""The SQLite store's methods for the rows the switch keeps beside the
ledger (their values live in :mod:`iso_switch.ledger.rows` and are
re-exported here): cards, terminals, merchants, BIN routes, the decision
journal (idempotency), remembered reversals, the review queue, DUKPT replay
state, blacklists and alerts.

Every SQL statement of the business rules lives here or in
:mod:`iso_switch.ledger.sqlite`, so a PostgreSQL store can implement the
same methods without touching the rules in ``issuer`` / ``processor``.
"""

from __future__ import annotations

import sqlite3
from dataclasses import fields
from datetime import datetime
from operator import attrgetter
from typing import Any

from iso_switch.ledger.model import ts
from iso_switch.ledger.rows import CardRow as CardRow
from iso_switch.ledger.rows import IssuerRow as IssuerRow
from iso_switch.ledger.rows import MerchantRow as MerchantRow
from iso_switch.ledger.rows import TerminalRow as TerminalRow
from iso_switch.ledger.rows import TxnRow as TxnRow

_TXN_COLUMNS = tuple(f.name for f in fields(TxnRow) if f.name != "seq")
_TXN_SELECT = "SELECT " + ", ".join((*_TXN_COLUMNS, "seq")) + " FROM txns"  # noqa: S608
_TXN_INSERT = (
    "INSERT INTO txns (" + ", ".join((*_TXN_COLUMNS, "seq")) + ") VALUES ("  # noqa: S608
    + ", ".join("?" * (len(_TXN_COLUMNS) + 1))
    + ")"
)
_txn_values = attrgetter(*_TXN_COLUMNS, "seq")
_CARD_COLUMNS = ", ".join(f.name for f in fields(CardRow))


def _txn(row: sqlite3.Row | tuple[object, ...]) -> TxnRow:
    values = list(row)
    values[21] = bool(values[21])
    return TxnRow(*values)


def _card(row: tuple[object, ...]) -> CardRow:
    values = list(row)
    values[12] = bool(values[12])
    return CardRow(*values)  # type: ignore[arg-type]


# Cards kept by :meth:`RecordsMixin.cached_card_by_hash`; past this many the
# cache starts again empty (a CardRow is about 600 bytes: 30 MB at most).
CARD_CACHE_MAX = 50_000
# Devices whose KSN replay state is kept (RecordsMixin.get_ksn_state); an
# entry is about 200 bytes, so 20 MB at most.
KSN_CACHE_MAX = 100_000


def _cache_put(cache: dict[Any, Any], key: object, value: object, limit: int) -> None:
    """Remember ``value``; a cache at ``limit`` starts again empty (simpler
    than LRU, and the limits are far above a switch's working set)."""
    if len(cache) >= limit:
        cache.clear()
    cache[key] = value


class RecordsMixin:
    """Store methods for the switch's own rows (mixed into the SQLite store)."""

    conn: sqlite3.Connection
    # pan_hash -> card, as read (see cached_card_by_hash for when it is dropped).
    _card_cache: dict[bytes, CardRow]
    # device -> (highest, bitmap), as read or written (dropped like the cards).
    _ksn_cache: dict[str, tuple[int, int] | None]
    _in_txn: bool

    # -- meta ------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # -- reference data (cached by the processor) ------------------------

    def load_terminals(self) -> dict[str, TerminalRow]:
        rows = self.conn.execute(
            "SELECT id, merchant_id, mac_required, allowed_codes, refunds_allowed, "
            "refund_day_minor FROM terminals"
        )
        return {
            r[0]: TerminalRow(r[0], r[1], bool(r[2]), frozenset(filter(None, r[3].split(","))),
                              bool(r[4]), r[5])
            for r in rows
        }

    def load_merchants(self) -> dict[str, MerchantRow]:
        rows = self.conn.execute(
            "SELECT id, name, settlement_account_id, cash_account_id FROM merchants"
        )
        return {r[0]: MerchantRow(*r) for r in rows}

    def load_issuers(self) -> dict[str, IssuerRow]:
        rows = self.conn.execute("SELECT id, name, available FROM issuers")
        return {r[0]: IssuerRow(r[0], r[1], bool(r[2])) for r in rows}

    def load_routes(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT prefix, issuer_id FROM bin_routes").fetchall())

    def load_blacklist(self) -> frozenset[tuple[str, str]]:
        return frozenset(
            (str(k), str(v)) for k, v in self.conn.execute("SELECT kind, value FROM blacklist")
        )

    def upsert_terminal(self, terminal: TerminalRow) -> None:
        self.conn.execute(
            "INSERT INTO terminals (id, merchant_id, mac_required, allowed_codes, refunds_allowed,"
            " refund_day_minor) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET"
            " merchant_id = excluded.merchant_id, mac_required = excluded.mac_required,"
            " allowed_codes = excluded.allowed_codes, refunds_allowed = excluded.refunds_allowed,"
            " refund_day_minor = excluded.refund_day_minor",
            (terminal.id, terminal.merchant_id, int(terminal.mac_required),
             ",".join(sorted(terminal.allowed_codes)), int(terminal.refunds_allowed),
             terminal.refund_day_minor),
        )

    def upsert_merchant(self, merchant: MerchantRow) -> None:
        self.conn.execute(
            "INSERT INTO merchants (id, name, settlement_account_id, cash_account_id) "
            "VALUES (?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET name = excluded.name, "
            "settlement_account_id = excluded.settlement_account_id, "
            "cash_account_id = excluded.cash_account_id",
            (merchant.id, merchant.name, merchant.settlement_account_id, merchant.cash_account_id),
        )

    def upsert_issuer(self, issuer: IssuerRow) -> None:
        self.conn.execute(
            "INSERT INTO issuers (id, name, available) VALUES (?, ?, ?) ON CONFLICT(id) "
            "DO UPDATE SET name = excluded.name, available = excluded.available",
            (issuer.id, issuer.name, int(issuer.available)),
        )

    def set_issuer_available(self, issuer_id: str, available: bool) -> bool:
        cursor = self.conn.execute(
            "UPDATE issuers SET available = ? WHERE id = ?", (int(available), issuer_id)
        )
        return cursor.rowcount == 1

    def set_route(self, prefix: str, issuer_id: str) -> None:
        self.conn.execute(
            "INSERT INTO bin_routes (prefix, issuer_id) VALUES (?, ?) ON CONFLICT(prefix) "
            "DO UPDATE SET issuer_id = excluded.issuer_id",
            (prefix, issuer_id),
        )

    def add_blacklist(self, kind: str, value: str, reason: str) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO blacklist (kind, value, reason) VALUES (?, ?, ?)",
            (kind, value, reason),
        )

    def remove_blacklist(self, kind: str, value: str) -> bool:
        cursor = self.conn.execute(
            "DELETE FROM blacklist WHERE kind = ? AND value = ?", (kind, value)
        )
        return cursor.rowcount == 1

    def list_blacklist(self) -> list[tuple[str, str, str]]:
        return [
            (str(k), str(v), str(r))
            for k, v, r in self.conn.execute(
                "SELECT kind, value, reason FROM blacklist ORDER BY kind, value"
            )
        ]

    # -- cards -----------------------------------------------------------

    def insert_card(self, card: CardRow, now: datetime) -> int:
        self._card_cache.clear()
        values = [getattr(card, f.name) for f in fields(CardRow) if f.name != "id"]
        names = [f.name for f in fields(CardRow) if f.name != "id"]
        cursor = self.conn.execute(
            f"INSERT INTO cards ({', '.join(names)}, created_at) "  # noqa: S608
            f"VALUES ({', '.join('?' * len(names))}, ?)",
            (*values, ts(now)),
        )
        assert cursor.lastrowid is not None
        self.link_card_account(cursor.lastrowid, card.account_id)
        return cursor.lastrowid

    def link_card_account(self, card_id: int, account_id: int) -> None:
        self.conn.execute(
            "INSERT OR IGNORE INTO card_accounts (card_id, account_id) VALUES (?, ?)",
            (card_id, account_id),
        )

    def card_owns_account(self, card_id: int, account_id: int) -> bool:
        row = self.conn.execute(
            "SELECT 1 FROM card_accounts WHERE card_id = ? AND account_id = ?",
            (card_id, account_id),
        ).fetchone()
        return row is not None

    def cached_card_by_hash(self, pan_hash: bytes) -> CardRow | None:
        """:meth:`card_by_hash`, answered from memory when this connection
        read the card before: the processor looks a card up per request and
        a card row is 16 columns to convert, while cards change rarely.

        The cache holds rows as read and is dropped whenever they could have
        changed: this store's own card writes (``insert_card``,
        ``set_pin_tries``, ``set_card_state``), any rollback (whole or to a
        savepoint: a dropped write may have been read back), and another
        connection's commit, which ``begin`` notices (``PRAGMA
        data_version``) once it holds the write lock, so no other commit can
        come until this transaction ends. Cards written with raw SQL on this
        connection are not seen: write them through the methods above."""
        cache = self._card_cache
        card = cache.get(pan_hash)
        if card is None:
            card = self.card_by_hash(pan_hash)
            if card is not None:
                _cache_put(cache, pan_hash, card, CARD_CACHE_MAX)
        return card

    def card_by_hash(self, pan_hash: bytes) -> CardRow | None:
        row = self.conn.execute(
            f"SELECT {_CARD_COLUMNS} FROM cards WHERE pan_hash = ?", (pan_hash,)  # noqa: S608
        ).fetchone()
        return None if row is None else _card(row)

    def get_card(self, card_id: int) -> CardRow | None:
        row = self.conn.execute(
            f"SELECT {_CARD_COLUMNS} FROM cards WHERE id = ?", (card_id,)  # noqa: S608
        ).fetchone()
        return None if row is None else _card(row)

    def list_cards(self) -> list[CardRow]:
        rows = self.conn.execute(f"SELECT {_CARD_COLUMNS} FROM cards ORDER BY id")  # noqa: S608
        return [_card(r) for r in rows]

    def set_pin_tries(self, card_id: int, tries: int, blocked: bool) -> None:
        self._card_cache.clear()
        self.conn.execute(
            "UPDATE cards SET pin_tries = ?, pin_blocked = ? WHERE id = ?",
            (tries, int(blocked), card_id),
        )

    def set_card_state(self, card_id: int, state: str) -> None:
        self._card_cache.clear()
        self.conn.execute("UPDATE cards SET state = ? WHERE id = ?", (state, card_id))

    def daily_usage(self, card_id: int, day: str) -> tuple[int, int]:
        row = self.conn.execute(
            "SELECT amount_minor, count FROM card_daily WHERE card_id = ? AND day = ?",
            (card_id, day),
        ).fetchone()
        return (0, 0) if row is None else (int(row[0]), int(row[1]))

    def add_daily_usage(self, card_id: int, day: str, amount_minor: int, count: int) -> None:
        self.conn.execute(
            "INSERT INTO card_daily (card_id, day, amount_minor, count) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(card_id, day) DO UPDATE SET amount_minor = amount_minor + "
            "excluded.amount_minor, count = count + excluded.count",
            (card_id, day, amount_minor, count),
        )

    def terminal_refunds(self, terminal_id: str, day: str) -> int:
        row = self.conn.execute(
            "SELECT refund_minor FROM terminal_daily WHERE terminal_id = ? AND day = ?",
            (terminal_id, day),
        ).fetchone()
        return 0 if row is None else int(row[0])

    def add_terminal_refunds(self, terminal_id: str, day: str, amount_minor: int) -> None:
        self.conn.execute(
            "INSERT INTO terminal_daily (terminal_id, day, refund_minor) VALUES (?, ?, ?) "
            "ON CONFLICT(terminal_id, day) DO UPDATE SET refund_minor = refund_minor + "
            "excluded.refund_minor",
            (terminal_id, day, amount_minor),
        )

    def card_usage(self, card_id: int, day: str) -> tuple[int, int, int, int]:
        """:meth:`daily_usage` of ``day`` followed by :meth:`usual_debit`, in
        one statement (the processor needs both for every debit)."""
        row = self.conn.execute(
            "SELECT coalesce(sum(amount_minor) FILTER (WHERE day = ?1), 0), "
            "coalesce(sum(count) FILTER (WHERE day = ?1), 0), "
            "coalesce(sum(amount_minor), 0), coalesce(sum(count), 0) FROM card_daily "
            "WHERE card_id = ?2",
            (day, card_id),
        ).fetchone()
        return int(row[0]), int(row[1]), int(row[2]), int(row[3])

    def usual_debit(self, card_id: int) -> tuple[int, int]:
        """(total amount, count) of the card's approved debits on record."""
        row = self.conn.execute(
            "SELECT coalesce(sum(amount_minor), 0), coalesce(sum(count), 0) FROM card_daily "
            "WHERE card_id = ?",
            (card_id,),
        ).fetchone()
        return int(row[0]), int(row[1])

    # -- decisions (idempotency) -----------------------------------------

    def max_txn_seq(self) -> int:
        return int(self.conn.execute("SELECT max(seq) FROM txns").fetchone()[0] or 0)

    def get_txn(self, key: str) -> TxnRow | None:
        row = self.conn.execute(_TXN_SELECT + " WHERE key = ?", (key,)).fetchone()
        return None if row is None else _txn(row)

    def txn_by_hold(self, hold_id: int) -> TxnRow | None:
        row = self.conn.execute(
            _TXN_SELECT + " WHERE hold_id = ? AND state IN ('held', 'referred')", (hold_id,)
        ).fetchone()
        return None if row is None else _txn(row)

    def recent_debit_requests(self, since: datetime) -> list[tuple[int, str]]:
        """(card id, received at) of the original debit requests decided
        after ``since`` that reached the risk rules (approved, or declined
        05 by them), oldest first: the velocity rule's memory after a
        restart. Uses the ``txns_created`` index."""
        rows = self.conn.execute(
            "SELECT card_id, created_at FROM txns WHERE created_at > ? "
            "AND card_id IS NOT NULL AND substr(mti, 1, 3) IN ('010', '020') "
            "AND substr(code, 1, 2) IN ('00', '01', '40') AND rc IN ('00', '05') "
            "ORDER BY created_at",
            (ts(since),),
        )
        return [(int(card_id), str(created_at)) for card_id, created_at in rows]

    def insert_txn(self, txn: TxnRow) -> None:
        # One C call for the 24 values; counts_daily (a bool) binds as 0/1.
        self.conn.execute(_TXN_INSERT, _txn_values(txn))

    def update_txn(
        self, key: str, *, state: str, effective_minor: int, hold_id: int | None,
        orig_key: str | None = None,
    ) -> None:
        if orig_key is None:
            self.conn.execute(
                "UPDATE txns SET state = ?, effective_minor = ?, hold_id = ? WHERE key = ?",
                (state, effective_minor, hold_id, key),
            )
        else:
            self.conn.execute(
                "UPDATE txns SET state = ?, effective_minor = ?, hold_id = ?, orig_key = ? "
                "WHERE key = ?",
                (state, effective_minor, hold_id, orig_key, key),
            )

    def journal(self, limit: int) -> list[TxnRow]:
        rows = self.conn.execute(_TXN_SELECT + " ORDER BY seq DESC LIMIT ?", (limit,))
        return [_txn(r) for r in rows]

    def count_txns(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM txns").fetchone()[0])

    # -- reversals of unknown originals ----------------------------------

    def remembered_reversal(self, orig_key: str) -> str | None:
        row = self.conn.execute(
            "SELECT reversal_key FROM remembered_reversals WHERE orig_key = ?", (orig_key,)
        ).fetchone()
        return None if row is None else str(row[0])

    def remembered_orig_keys(self, limit: int) -> set[str] | None:
        """Every remembered original key, or None when there are more than
        ``limit`` (the processor's in-memory negative filter)."""
        rows = self.conn.execute(
            "SELECT orig_key FROM remembered_reversals LIMIT ?", (limit + 1,)
        ).fetchall()
        return None if len(rows) > limit else {str(row[0]) for row in rows}

    def remember_reversal(self, orig_key: str, reversal_key: str, now: datetime) -> None:
        self.conn.execute(
            "INSERT OR IGNORE INTO remembered_reversals (orig_key, reversal_key, created_at) "
            "VALUES (?, ?, ?)",
            (orig_key, reversal_key, ts(now)),
        )

    # -- review queue ------------------------------------------------------

    def add_review(self, txn_key: str, hold_id: int, now: datetime) -> int:
        cursor = self.conn.execute(
            "INSERT INTO reviews (txn_key, hold_id, state, created_at) VALUES (?, ?, 'pending', ?)",
            (txn_key, hold_id, ts(now)),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def get_review(self, review_id: int) -> tuple[int, str, int, str] | None:
        row = self.conn.execute(
            "SELECT id, txn_key, hold_id, state FROM reviews WHERE id = ?", (review_id,)
        ).fetchone()
        return None if row is None else (int(row[0]), str(row[1]), int(row[2]), str(row[3]))

    def review_by_txn(self, txn_key: str) -> tuple[int, str, int, str] | None:
        row = self.conn.execute(
            "SELECT id, txn_key, hold_id, state FROM reviews WHERE txn_key = ?", (txn_key,)
        ).fetchone()
        return None if row is None else (int(row[0]), str(row[1]), int(row[2]), str(row[3]))

    def set_review(self, review_id: int, state: str, hold_id: int, now: datetime) -> None:
        self.conn.execute(
            "UPDATE reviews SET state = ?, hold_id = ?, decided_at = ? WHERE id = ?",
            (state, hold_id, ts(now), review_id),
        )

    def list_reviews(self, state: str | None) -> list[tuple[int, str, int, str, str]]:
        query = "SELECT id, txn_key, hold_id, state, created_at FROM reviews"
        rows = (
            self.conn.execute(query + " WHERE state = ? ORDER BY id", (state,))
            if state
            else self.conn.execute(query + " ORDER BY id")
        )
        return [(int(a), str(b), int(c), str(d), str(e)) for a, b, c, d, e in rows]

    # -- DUKPT replay state ------------------------------------------------

    def get_ksn_state(self, device: str) -> tuple[int, int] | None:
        """A device's replay state. Cached: this connection is the only
        writer between ``begin`` calls, which drop the cache when another
        connection has committed (as for cards); every rollback drops it."""
        cache = self._ksn_cache
        if device in cache:
            return cache[device]
        row = self.conn.execute(
            "SELECT highest, bitmap FROM ksn_state WHERE device = ?", (device,)
        ).fetchone()
        state = None if row is None else (int(row[0]), int(row[1]))
        if self._in_txn:  # outside, another connection may write before we look again
            _cache_put(cache, device, state, KSN_CACHE_MAX)
        return state

    def put_ksn_state(self, device: str, highest: int, bitmap: int, now: datetime) -> None:
        cache = self._ksn_cache
        cache.pop(device, None)  # until the row is written
        self.conn.execute(
            "INSERT INTO ksn_state (device, highest, bitmap, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(device) DO UPDATE SET highest = excluded.highest, "
            "bitmap = excluded.bitmap, updated_at = excluded.updated_at",
            (device, highest, bitmap, ts(now)),
        )
        if self._in_txn:
            _cache_put(cache, device, (highest, bitmap), KSN_CACHE_MAX)

    # -- alerts --------------------------------------------------------------

    def add_alert(
        self, now: datetime, rule: str, action: str, txn_key: str, pan_masked: str, detail: str
    ) -> None:
        self.conn.execute(
            "INSERT INTO alerts (created_at, rule, action, txn_key, pan_masked, detail) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (ts(now), rule, action, txn_key, pan_masked, detail),
        )

    def list_alerts(self, limit: int) -> list[tuple[int, str, str, str, str, str, str]]:
        rows = self.conn.execute(
            "SELECT id, created_at, rule, action, txn_key, pan_masked, detail FROM alerts "
            "ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [tuple(str(v) for v in r) for r in rows]  # type: ignore[misc]

    # -- retention -------------------------------------------------------------

    def auth_code_used(self, card_id: int, business_day: str, code: str) -> bool:
        """Whether ``code`` was already given to this card on this business day."""
        row = self.conn.execute(
            # The auth_code != '' term lets SQLite use the partial index
            # txns_card_day_auth; without it every approval scans txns.
            "SELECT 1 FROM txns WHERE card_id = ? AND business_day = ? AND auth_code = ?"
            " AND auth_code != ''",
            (card_id, business_day, code),
        ).fetchone()
        return row is not None

    def prune(self, cutoff: datetime) -> int:
        """Forget stored keys and remembered reversals older than ``cutoff``;
        keep decisions whose hold is still pending. KSN replay states are
        never pruned here: a device's replay state lives as long as its base
        derivation key, or a request captured before the cutoff would be
        approved again once its stored decision is gone."""
        stamp = ts(cutoff)
        removed = self.conn.execute(
            "DELETE FROM txns WHERE created_at < ? AND state NOT IN ('held', 'referred')",
            (stamp,),
        ).rowcount
        removed += self.conn.execute(
            "DELETE FROM remembered_reversals WHERE created_at < ?", (stamp,)
        ).rowcount
        return removed
