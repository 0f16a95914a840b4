"""The SQLite store's methods for issuer links: forwarding records, the
per-issuer link trace numbers (DE11), the store-and-forward queue and the
stand-in counters. Their values live in :mod:`iso_switch.ledger.rows`.

Every method writes in the caller's transaction (``begin`` ... ``commit``,
or a request scope inside a batch), so a forwarding record commits with the
KSN high-water mark of its request, and a SAF item with the decision that
caused it: group commit makes all of them durable with one fsync.

**Cardholder data.** Nothing here sees a clear PAN: a forwarding and a SAF
item carry the PAN masked (for people) and ``sealed`` (an opaque blob the
caller encrypted under a key from the key store, for the message a reversal
advice rebuilds). :data:`CARDHOLDER_FIELDS` may not appear in an item's
plain ``fields``.

**Link trace numbers** (:meth:`LinksMixin.next_link_stan`): one number per
call from a per-issuer counter that only grows; the number is the counter
modulo 999,999, plus one (000001-999999, wrapping). The 24-hour rule is
kept by blocks of :data:`STAN_BLOCK` numbers: the time each block was
entered is recorded, and a number that starts a block in a later cycle is
handed out only when the *following* block was entered at least
:data:`STAN_REUSE_AFTER` ago. Numbers go out in order, so every number of a
block was used before the following block began: if that began a day ago,
no number of the block was used within a day. Past that the call raises
:class:`LinkStanExhausted` (more than 999,999 link messages to one issuer
within 24 hours) and the caller decides the request in stand-in. One write
per number, one more per block; the counter row is the issuer's only hot
row.

**Leases** (:meth:`LinksMixin.claim_saf_items`): a node claims due items,
which become ``outstanding`` with the node's name and a lease end; only the
claiming node settles them (acknowledged, retry, refused). An outstanding
item whose lease ended (its node stopped, or its answer never came) is due
again, so a shared database hands each item to one node at a time.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta

from iso_switch.ledger.model import LedgerError, ts
from iso_switch.ledger.rows import (
    Forward,
    ForwardOutcome,
    NewSafItem,
    SafItem,
    SafKind,
    SafState,
)

#: Link trace numbers run 000001-999999.
STAN_MAX = 999_999
#: The 24-hour rule is checked per block of this many numbers.
STAN_BLOCK = 1_000
#: A link trace number is not used twice within this time.
STAN_REUSE_AFTER = timedelta(hours=24)
#: Data elements that are cardholder data: sealed, never in an item's fields.
CARDHOLDER_FIELDS = frozenset({"2", "14", "35", "36", "45", "52", "55", "102", "103"})
#: The most items one listing returns.
SAF_LIST_LIMIT_MAX = 10_000

_OPEN_STATES = (SafState.QUEUED.value, SafState.OUTSTANDING.value)
_FORWARD_COLUMNS = (
    "txn_key, issuer_id, mti, stan, transmitted, rrn, amount_minor, currency, pan_masked, "
    "sealed, node, created_at, outcome, outcome_rc"
)
_SAF_COLUMNS = (
    "id, issuer_id, txn_group, kind, mti, stan, transmitted, rrn, amount_minor, currency, "
    "pan_masked, sealed, fields, state, attempts, next_attempt_at, created_at, queued_at, "
    "last_rc, lease_node, lease_until"
)
_SAF_SELECT = f"SELECT {_SAF_COLUMNS} FROM saf_items"  # noqa: S608
# Due: queued and its time has come, or outstanding with its lease ended;
# and the first open item of its transaction.
_SAF_DUE = (
    _SAF_SELECT + " AS s WHERE"  # noqa: S608
    " s.issuer_id = ?1 AND ((s.state = 'queued' AND "
    "s.next_attempt_at <= ?2) OR (s.state = 'outstanding' AND s.lease_until <= ?2)) "
    "AND NOT EXISTS (SELECT 1 FROM saf_items AS e WHERE e.issuer_id = s.issuer_id "
    "AND e.txn_group = s.txn_group AND e.id < s.id AND e.state IN ('queued', 'outstanding')) "
    "ORDER BY s.id LIMIT ?3"
)


class LinkStanExhausted(LedgerError):
    """Every link trace number of the issuer was used within 24 hours."""


def _forward(row: Sequence[object]) -> Forward:
    values = list(row)
    values[9] = bytes(values[9])  # type: ignore[call-overload]
    values[12] = ForwardOutcome(str(values[12]))
    return Forward(*values)  # type: ignore[arg-type]


def _saf_item(row: Sequence[object]) -> SafItem:
    (item_id, issuer_id, group, kind, mti, stan, transmitted, rrn, amount, currency, masked,
     sealed, fields, state, attempts, next_at, created, queued, last_rc, lease_node,
     lease_until) = row
    item = NewSafItem(
        str(issuer_id), str(group), SafKind(str(kind)), str(mti), str(stan), str(transmitted),
        str(rrn), int(amount), int(currency), str(masked),  # type: ignore[call-overload]
        bytes(sealed),  # type: ignore[call-overload]
        tuple((str(k), str(v)) for k, v in json.loads(str(fields))),
    )
    return SafItem(int(item_id), item, SafState(str(state)),  # type: ignore[call-overload]
                   int(attempts),  # type: ignore[call-overload]
                   str(next_at), str(created), str(queued), str(last_rc), str(lease_node),
                   str(lease_until))


def _check_fields(fields: Sequence[tuple[str, str]]) -> str:
    """The item's plain fields as JSON; cardholder data is refused (it goes
    sealed), naming only the field."""
    for key, _ in fields:
        if key in CARDHOLDER_FIELDS:
            raise ValueError(f"field {key} is cardholder data: seal it, never store it plain")
    return json.dumps([list(pair) for pair in fields], separators=(",", ":"))


class LinksMixin:
    """Store methods for issuer links (mixed into the SQLite store)."""

    conn: sqlite3.Connection

    # -- forwarding records (crash safety) ---------------------------------

    def record_forward(self, forward: Forward, now: datetime) -> None:
        """Record a forwarding before its bytes leave; a second forwarding
        of one transaction key raises (never forwarded twice as an original)."""
        self.conn.execute(
            f"INSERT INTO link_forwards ({_FORWARD_COLUMNS}) "  # noqa: S608
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '', '')",
            (forward.txn_key, forward.issuer_id, forward.mti, forward.stan, forward.transmitted,
             forward.rrn, forward.amount_minor, forward.currency, forward.pan_masked,
             forward.sealed, forward.node, ts(now)),
        )

    def record_outcome(
        self, txn_key: str, outcome: ForwardOutcome, rc: str, now: datetime
    ) -> bool:
        """Record what decided a forwarding. The first outcome stays: a late
        answer after stand-in (or after restart recovery) changes nothing,
        and this returns False."""
        if outcome == ForwardOutcome.NONE:
            raise ValueError("an outcome must say what decided the forwarding")
        cursor = self.conn.execute(
            "UPDATE link_forwards SET outcome = ?, outcome_rc = ?, decided_at = ? "
            "WHERE txn_key = ? AND outcome = ''",
            (str(outcome), rc, ts(now), txn_key),
        )
        return cursor.rowcount == 1

    def get_forward(self, txn_key: str) -> Forward | None:
        row = self.conn.execute(
            f"SELECT {_FORWARD_COLUMNS} FROM link_forwards WHERE txn_key = ?",  # noqa: S608
            (txn_key,),
        ).fetchone()
        return None if row is None else _forward(row)

    def forwards_without_outcome(self, node: str, older_than: datetime) -> list[Forward]:
        """``node``'s forwardings recorded at or before ``older_than`` that
        have no outcome, oldest first: after a restart each is decided 91
        and reversed."""
        rows = self.conn.execute(
            f"SELECT {_FORWARD_COLUMNS} FROM link_forwards "  # noqa: S608
            "WHERE node = ? AND outcome = '' AND created_at <= ? ORDER BY id",
            (node, ts(older_than)),
        )
        return [_forward(row) for row in rows]

    # -- link trace numbers --------------------------------------------------

    def next_link_stan(self, issuer_id: str, now: datetime) -> str:
        """The issuer's next DE11 (6 digits), in the caller's transaction
        (a rollback gives it back). Raises :class:`LinkStanExhausted` rather
        than reuse a number within 24 hours (see the module docstring)."""
        row = self.conn.execute(
            "SELECT counter FROM link_stans WHERE issuer_id = ?", (issuer_id,)
        ).fetchone()
        counter = 0 if row is None else int(row[0])
        number = counter % STAN_MAX + 1
        if (number - 1) % STAN_BLOCK == 0:
            self._enter_stan_block(issuer_id, counter, (number - 1) // STAN_BLOCK, now)
        self.conn.execute(
            "INSERT INTO link_stans (issuer_id, counter) VALUES (?, ?) "
            "ON CONFLICT(issuer_id) DO UPDATE SET counter = excluded.counter",
            (issuer_id, counter + 1),
        )
        return f"{number:06d}"

    def _enter_stan_block(self, issuer_id: str, counter: int, block: int, now: datetime) -> None:
        """Check that ``block`` may be used again (from the second cycle on:
        the following block began a day ago or more), then stamp its start."""
        if counter >= STAN_MAX:
            following = (block + 1) % ((STAN_MAX + STAN_BLOCK - 1) // STAN_BLOCK)
            row = self.conn.execute(
                "SELECT started_at FROM link_stan_blocks WHERE issuer_id = ? AND block = ?",
                (issuer_id, following),
            ).fetchone()
            if row is not None and str(row[0]) > ts(now - STAN_REUSE_AFTER):
                raise LinkStanExhausted(
                    "every link trace number of the issuer was used within 24 hours")
        self.conn.execute(
            "INSERT INTO link_stan_blocks (issuer_id, block, started_at) VALUES (?, ?, ?) "
            "ON CONFLICT(issuer_id, block) DO UPDATE SET started_at = excluded.started_at",
            (issuer_id, block, ts(now)),
        )

    # -- store-and-forward -------------------------------------------------------

    def enqueue_saf(self, item: NewSafItem, now: datetime) -> int:
        """Queue an item (due at once), in the decision's transaction; its id."""
        stamp = ts(now)
        cursor = self.conn.execute(
            "INSERT INTO saf_items (issuer_id, txn_group, kind, mti, stan, transmitted, rrn, "
            "amount_minor, currency, pan_masked, sealed, fields, state, next_attempt_at, "
            "created_at, queued_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?)",
            (item.issuer_id, item.txn_group, str(item.kind), item.mti, item.stan,
             item.transmitted, item.rrn, item.amount_minor, item.currency, item.pan_masked,
             item.sealed, _check_fields(item.fields), stamp, stamp, stamp),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def get_saf_item(self, item_id: int) -> SafItem | None:
        row = self.conn.execute(_SAF_SELECT + " WHERE id = ?", (item_id,)).fetchone()
        return None if row is None else _saf_item(row)

    def due_saf_items(self, issuer_id: str, now: datetime, limit: int) -> list[SafItem]:
        """Items ready to send now, oldest first, each the first open item of
        its transaction (dead, refused and acknowledged ones hold nothing back)."""
        rows = self.conn.execute(_SAF_DUE, (issuer_id, ts(now), limit))
        return [_saf_item(row) for row in rows]

    def claim_saf_items(
        self, issuer_id: str, node: str, now: datetime, limit: int, lease_s: float
    ) -> list[SafItem]:
        """Claim up to ``limit`` due items for ``node``: each becomes
        outstanding, leased to the node until ``now + lease_s``, its attempts
        counted (after the claim, 1 means the first send: the base MTI)."""
        due = self.due_saf_items(issuer_id, now, limit)
        if not due:
            return []
        until = ts(now + timedelta(seconds=lease_s))
        self.conn.executemany(
            "UPDATE saf_items SET state = 'outstanding', lease_node = ?, lease_until = ?, "
            "attempts = attempts + 1 WHERE id = ?",
            [(node, until, item.id) for item in due],
        )
        claimed = (self.get_saf_item(item.id) for item in due)
        return [item for item in claimed if item is not None]

    def _settle_saf(
        self, item_id: int, node: str, state: SafState, rc: str, next_at: str | None
    ) -> bool:
        """Move an item ``node`` holds outstanding to ``state``; False when
        it does not (another node's, or no longer outstanding)."""
        cursor = self.conn.execute(
            "UPDATE saf_items SET state = ?, last_rc = ?, lease_node = '', lease_until = '', "
            "next_attempt_at = coalesce(?, next_attempt_at) "
            "WHERE id = ? AND state = 'outstanding' AND lease_node = ?",
            (str(state), rc, next_at, item_id, node),
        )
        return cursor.rowcount == 1

    def saf_acknowledged(self, item_id: int, node: str, rc: str, now: datetime) -> bool:
        """The issuer acknowledged the item (``rc``: its DE39)."""
        return self._settle_saf(item_id, node, SafState.ACKNOWLEDGED, rc, None)

    def saf_retry(
        self, item_id: int, node: str, rc: str, now: datetime, retry_s: float
    ) -> bool:
        """No answer, or a code that means try again (``rc`` '' for none):
        queued again, due at ``now + retry_s``."""
        next_at = ts(now + timedelta(seconds=retry_s))
        return self._settle_saf(item_id, node, SafState.QUEUED, rc, next_at)

    def saf_refused(self, item_id: int, node: str, rc: str, now: datetime) -> bool:
        """The issuer refused the item: kept for reconciliation, blocks nothing."""
        return self._settle_saf(item_id, node, SafState.REFUSED, rc, None)

    def expire_saf_items(self, issuer_id: str, now: datetime, expiry_h: float) -> int:
        """Make dead letters of the issuer's items queued ``expiry_h`` hours
        ago or more and still unacknowledged (an outstanding one once its
        lease ended); how many."""
        cutoff = ts(now - timedelta(hours=expiry_h))
        return self.conn.execute(
            "UPDATE saf_items SET state = 'dead', lease_node = '', lease_until = '' "
            "WHERE issuer_id = ?1 AND queued_at <= ?2 AND (state = 'queued' OR "
            "(state = 'outstanding' AND lease_until <= ?3))",
            (issuer_id, cutoff, ts(now)),
        ).rowcount

    def requeue_saf_item(self, item_id: int, now: datetime) -> SafItem | None:
        """Queue a dead or refused item again (due now, its expiry clock
        restarted, its attempts kept: the next send is a repeat); None when
        there is no such item in those states."""
        stamp = ts(now)
        cursor = self.conn.execute(
            "UPDATE saf_items SET state = 'queued', next_attempt_at = ?, queued_at = ? "
            "WHERE id = ? AND state IN ('dead', 'refused')",
            (stamp, stamp, item_id),
        )
        return self.get_saf_item(item_id) if cursor.rowcount == 1 else None

    def saf_counts(self) -> dict[tuple[str, SafState], int]:
        """Items per (issuer, state), for the metrics."""
        rows = self.conn.execute(
            "SELECT issuer_id, state, count(*) FROM saf_items GROUP BY issuer_id, state"
        )
        return {(str(issuer), SafState(state)): int(count) for issuer, state, count in rows}

    def list_saf_items(
        self, states: Collection[SafState] | None, issuer_id: str | None, limit: int
    ) -> list[SafItem]:
        """Items oldest first, optionally of some states and one issuer."""
        clauses: list[str] = []
        params: list[object] = []
        if states is not None:
            clauses.append(f"state IN ({','.join('?' * len(states))})")
            params.extend(str(s) for s in states)
        if issuer_id is not None:
            clauses.append("issuer_id = ?")
            params.append(issuer_id)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        limit = max(1, min(limit, SAF_LIST_LIMIT_MAX))
        rows = self.conn.execute(_SAF_SELECT + where + " ORDER BY id LIMIT ?", (*params, limit))
        return [_saf_item(row) for row in rows]

    # -- stand-in counters -----------------------------------------------------------

    def stand_in_usage(self, pan_hash: bytes, day: str) -> tuple[int, int]:
        """(count, total minor) of the card's stand-in approvals on ``day``."""
        row = self.conn.execute(
            "SELECT count, amount_minor FROM stand_in_daily WHERE pan_hash = ? AND day = ?",
            (pan_hash, day),
        ).fetchone()
        return (0, 0) if row is None else (int(row[0]), int(row[1]))

    def add_stand_in_usage(
        self, pan_hash: bytes, day: str, count: int, amount_minor: int
    ) -> None:
        """Add to :meth:`stand_in_usage` in the decision's transaction."""
        self.conn.execute(
            "INSERT INTO stand_in_daily (pan_hash, day, count, amount_minor) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(pan_hash, day) DO UPDATE SET count = count + excluded.count, "
            "amount_minor = amount_minor + excluded.amount_minor",
            (pan_hash, day, count, amount_minor),
        )


__all__ = [
    "CARDHOLDER_FIELDS",
    "SAF_LIST_LIMIT_MAX",
    "STAN_BLOCK",
    "STAN_MAX",
    "STAN_REUSE_AFTER",
    "LinkStanExhausted",
    "LinksMixin",
]
