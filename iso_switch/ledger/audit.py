"""The audit log: who did what to the switch's reference data, and when.

Every administrative action (card state, PIN-try reset, blacklist, terminal
and merchant profiles, review decisions, accounts and their opening
balances, key import and rotation) appends one entry: the actor (the OS user
for the CLI, the operator for the console), the action, its target, and the
state before and after as JSON. The table refuses UPDATE and DELETE
(triggers in the schema), so the log is append-only even for code that
would try. Entries never hold a full PAN, a PIN or key material: targets
are masked PANs, account numbers, terminal ids, key names and KCVs.
"""

from __future__ import annotations

import getpass
import json
import os
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from iso_switch.ledger.model import ts

AUDIT_LIST_LIMIT_MAX = 10_000


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: str
    actor: str
    action: str
    target: str
    before: dict[str, Any]
    after: dict[str, Any]


def os_user() -> str:
    """The operating-system user running an admin command (the CLI's actor);
    the numeric uid when the name cannot be found (no passwd entry)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


def _json(state: Mapping[str, Any] | None) -> str:
    return json.dumps(dict(state or {}), sort_keys=True, separators=(",", ":"), default=str)


class AuditMixin:
    """Store methods for the audit log (mixed into the SQLite store)."""

    conn: sqlite3.Connection

    def append_audit(self, actor: str, action: str, target: str,
                     before: Mapping[str, Any] | None, after: Mapping[str, Any] | None,
                     now: datetime) -> int:
        """Append one entry, in the caller's transaction, so the action and
        its record commit together or not at all."""
        cursor = self.conn.execute(
            "INSERT INTO audit_log (at, actor, action, target, before, after) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (ts(now), actor, action, target, _json(before), _json(after)),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def list_audit(self, limit: int = 100, action: str | None = None) -> list[AuditEntry]:
        """The newest ``limit`` entries (optionally of one action), newest first."""
        limit = max(1, min(limit, AUDIT_LIST_LIMIT_MAX))
        sql = "SELECT id, at, actor, action, target, before, after FROM audit_log"
        params: tuple[Any, ...] = ()
        if action is not None:
            sql += " WHERE action = ?"
            params = (action,)
        rows = self.conn.execute(sql + " ORDER BY id DESC LIMIT ?", (*params, limit))
        return [AuditEntry(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), json.loads(r[6]))
                for r in rows]


__all__ = ["AUDIT_LIST_LIMIT_MAX", "AuditEntry", "AuditMixin", "os_user"]
