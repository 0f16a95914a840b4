"""What the SQLite store adds to the issuer-link contract: the migration of
an older ledger, the wrap of the link trace numbers (fast-forwarded in the
file, as a million draws would take minutes), and a file with no clear PAN
in it after forwards and store-and-forward items were written."""

from __future__ import annotations

import secrets
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from iso_switch.ledger import (
    AccountKind,
    Forward,
    LinkStanExhausted,
    NewSafItem,
    SafKind,
    SqliteLedgerStore,
    ts,
)
from iso_switch.ledger.links import STAN_MAX
from iso_switch.ledger.schema import MIGRATIONS
from tests.helpers_ledger import CNY
from tests.helpers_ledger import LEDGER_NOW as NOW

PAN = "5413330089604111"
ISSUER = "bank-b"


def test_an_older_ledger_gains_the_link_tables_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    version = next(n for n, m in enumerate(MIGRATIONS) if "saf_items" in m)
    conn = sqlite3.connect(path)
    for migration in MIGRATIONS[:version]:
        conn.executescript(migration)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.execute("INSERT INTO accounts (number, currency, kind, created_at) "
                 "VALUES ('6222020000009999', 156, 'settlement', ?)", (ts(NOW),))
    conn.commit()
    conn.close()
    store = SqliteLedgerStore(path, synchronous="OFF")
    try:
        assert store.schema_version == len(MIGRATIONS)
        assert store.account_by_number("6222020000009999") is not None
        with store.write():
            assert store.next_link_stan(ISSUER, NOW) == "000001"
            store.due_from_account(ISSUER, CNY, NOW)
        assert store.list_saf_items(None, None, 10) == []
        assert store.check_invariants(NOW) == []
    finally:
        store.close()


def test_link_trace_numbers_wrap_but_not_within_24_hours(tmp_path: Path) -> None:
    """The last 1,000 numbers of a cycle, then the wrap: 000001 comes again
    only once the block after its block (001001-002000) began a day ago."""
    store = SqliteLedgerStore(tmp_path / "ledger.sqlite3", synchronous="OFF")
    try:
        with store.write():
            store.next_link_stan(ISSUER, NOW)
            store.next_link_stan(ISSUER, NOW)
        # Fast-forward: 000001-998999 went out, the block from 001001 began at NOW.
        store.conn.execute("UPDATE link_stans SET counter = ?", (STAN_MAX - 1_000,))
        store.conn.execute("INSERT INTO link_stan_blocks VALUES (?, 1, ?)", (ISSUER, ts(NOW)))
        with store.write():
            tail = [store.next_link_stan(ISSUER, NOW) for _ in range(1_000)]
        assert tail[0] == "999000" and tail[-1] == "999999"
        with store.write(), pytest.raises(LinkStanExhausted):
            store.next_link_stan(ISSUER, NOW + timedelta(hours=23, minutes=59))
        day = NOW + timedelta(hours=24)
        with store.write():
            again = [store.next_link_stan(ISSUER, day) for _ in range(1_001)]
        assert again[0] == "000001" and again[-1] == "001001"
        # Block 001001-002000 checks the block after it: not used in this test.
    finally:
        store.close()


def _sealed(key: bytes, pan: str) -> bytes:
    nonce = secrets.token_bytes(12)
    return nonce + AESGCM(key).encrypt(nonce, pan.encode(), b"iso-switch saf DE2")


def test_no_clear_pan_anywhere_in_the_ledger_file(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    store = SqliteLedgerStore(path, synchronous="FULL")
    key = AESGCM.generate_key(bit_length=256)
    masked = PAN[:6] + "******" + PAN[-4:]
    with store.write():
        store.create_account("M", CNY, AccountKind.SETTLEMENT, NOW)
        stan = store.next_link_stan(ISSUER, NOW)
        store.record_forward(Forward(
            "key-1", ISSUER, "0200", stan, "0301120000", "506012000001", 1_500, CNY, masked,
            _sealed(key, PAN), "node-1"), NOW)
        store.enqueue_saf(NewSafItem(
            ISSUER, "key-1", SafKind.REVERSAL, "0420", store.next_link_stan(ISSUER, NOW),
            "0301120005", "506012000001", 1_500, CNY, masked, _sealed(key, PAN),
            (("3", "000000"), ("4", "000000001500"), ("90", "0200" + stan + "0" * 32))), NOW)
    store.close()
    files = [p for p in tmp_path.iterdir() if p.name.startswith("ledger.sqlite3")]
    assert files
    for file in files:
        data = file.read_bytes()
        assert PAN.encode() not in data, file.name
        assert PAN.encode("utf-16-le") not in data, file.name
    reopened = SqliteLedgerStore(path, synchronous="OFF")
    try:
        item = reopened.list_saf_items(None, None, 1)[0]
        sealed = item.item.sealed
        assert AESGCM(key).decrypt(sealed[:12], sealed[12:], b"iso-switch saf DE2") == PAN.encode()
    finally:
        reopened.close()
