"""The ledger's spelled-out one-transfer path (``transfer``) against the
general one (``move`` of one POSTED entry): for any sequence of transfers,
good and refused, both return the same ids or raise the same errors and
leave the same rows."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iso_switch.ledger import Entry, LedgerError, SqliteLedgerStore, TransferKind
from tests.helpers_ledger import CNY, USD, small_ledger
from tests.helpers_ledger import LEDGER_NOW as NOW

# Account ids 1..5 exist (1 is closed, 5 is in USD); 6 does not.
ACCOUNT_IDS = st.integers(1, 6)
TRANSFERS = st.lists(
    st.tuples(ACCOUNT_IDS, ACCOUNT_IDS, st.integers(-5, 60_000), st.sampled_from([CNY, USD])),
    max_size=12,
)


def _apply(store: SqliteLedgerStore, transfers: list[tuple[int, int, int, int]],
           general: bool) -> list[object]:
    results: list[object] = []
    with store.write():
        for debit, credit, amount, currency in transfers:
            try:
                if general:
                    results.append(store.move(
                        [Entry(TransferKind.POSTED, debit, credit, amount, currency, ref="t")],
                        NOW)[0])
                else:
                    results.append(store.transfer(debit, credit, amount, currency, "t", NOW))
            except LedgerError as exc:
                results.append(type(exc).__name__)
    return results


def _rows(store: SqliteLedgerStore) -> tuple[list[tuple[object, ...]], ...]:
    return (store.conn.execute("SELECT * FROM accounts ORDER BY id").fetchall(),
            store.conn.execute("SELECT * FROM transfers ORDER BY id").fetchall())


@given(TRANSFERS)
def test_transfer_is_move_of_one_posted_entry(
    tmp_path_factory: pytest.TempPathFactory, transfers: list[tuple[int, int, int, int]],
) -> None:
    directory = tmp_path_factory.mktemp("transfer")
    fast = small_ledger(directory / "fast.sqlite3")
    general = small_ledger(directory / "general.sqlite3")
    try:
        assert _apply(fast, transfers, False) == _apply(general, transfers, True)
        assert _rows(fast) == _rows(general)
        assert fast.check_invariants() == []
    finally:
        fast.close()
        general.close()


def test_transfer_needs_an_open_transaction(tmp_path: Path) -> None:
    store = small_ledger(tmp_path / "ledger.sqlite3")
    with pytest.raises(RuntimeError, match="open transaction"):
        store.transfer(2, 3, 1, CNY, "t", NOW)
    store.close()
