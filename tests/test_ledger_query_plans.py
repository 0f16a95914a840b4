"""Every query of the SQLite store with a WHERE clause finds its rows
through an index: a full table scan on a request's path costs time in
proportion to the ledger's size, which no test with a small ledger would
notice (an approval-code lookup whose partial index SQLite could not use
scanned every stored decision per approval).

The statements are read from the store's source, so a new query is checked
without a test naming it; SQLite's own planner (``EXPLAIN QUERY PLAN``)
says whether it scans.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from iso_switch.ledger import SqliteLedgerStore

LEDGER_SOURCES = ("sqlite.py", "records.py", "audit.py")
SQL_VERBS = ("SELECT", "UPDATE", "DELETE", "INSERT")
#: Statements allowed to scan a whole table, each for a reason: the ledger
#: check reads every account and hold by design, and retention pruning of
#: remembered reversals runs once per prune interval over a small table.
SCANS_BY_DESIGN = (
    "SELECT id FROM accounts WHERE kind = 'cardholder'",
    "SELECT h.id, h.state,",
    "SELECT id, number, currency, kind FROM accounts WHERE kind = 'due_from'",
    "DELETE FROM remembered_reversals WHERE created_at < ?",
)


def _statements() -> list[tuple[str, int, str]]:
    root = Path(SqliteLedgerStore.__module__.replace(".", "/")).parent
    found = []
    for name in LEDGER_SOURCES:
        path = Path(__file__).resolve().parent.parent / root / name
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                sql = " ".join(node.value.split())
                if sql.split(" ", 1)[0].upper() in SQL_VERBS and " WHERE " in sql.upper():
                    found.append((name, node.lineno, sql))
    return found


def _parameters(sql: str) -> tuple[None, ...]:
    numbered = {int(n) for n in re.findall(r"\?(\d+)", sql)}
    return (None,) * (max(numbered) if numbered else sql.count("?"))


STATEMENTS = _statements()


def test_the_store_has_queries_to_check() -> None:
    assert len(STATEMENTS) > 20


@pytest.mark.parametrize(("source", "line", "sql"), STATEMENTS,
                         ids=[f"{s}:{n}" for s, n, _ in STATEMENTS])
def test_a_query_with_a_where_clause_uses_an_index(tmp_path: Path, source: str, line: int,
                                                  sql: str) -> None:
    store = SqliteLedgerStore(tmp_path / "ledger.sqlite3")
    try:
        try:
            plan = store.conn.execute("EXPLAIN QUERY PLAN " + sql, _parameters(sql)).fetchall()
        except Exception as exc:  # a fragment joined to others at run time
            if "incomplete input" in str(exc):
                pytest.skip("a fragment, completed at run time")
            raise
        scans = [detail for *_, detail in plan if detail.startswith("SCAN ")
                 and " USING " not in detail]
        if sql.startswith(SCANS_BY_DESIGN):
            return
        assert scans == [], f"{source}:{line} scans a whole table: {sql}"
    finally:
        store.close()
