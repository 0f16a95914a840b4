"""Regression tests for secrets and durability at rest: file modes, fsync'd
key writes, the master key file's permissions, TR-31 versions accepted on
import, keys that must not be rotated in place, and the ledger's refusal of
anything short of WAL with synchronous FULL/EXTRA."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

import pytest

from iso_switch.config import ConfigError, parse_config
from iso_switch.ledger.sqlite import NotDurable, SqliteLedgerStore
from iso_switch.processor import open_store
from iso_switch.security.errors import KeyBlockError, KeyStoreError
from iso_switch.security.keystore import KeyStore, MasterKey
from iso_switch.security.tr31 import KeyBlockHeader, wrap

KBPK = bytes.fromhex("89E88CF7931444F334BD7547FC3F380C")
# TR-31:2018 A.7.2.1 (a version A block: variant binding, 4-byte MAC).
VERSION_A_BLOCK = "A0072P0TE00E0000F5161ED902807AF26F1D62263644BD24192FDB3193C730301CEE8701"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def loose_umask():  # type: ignore[no-untyped-def]
    old = os.umask(0o022)
    yield
    os.umask(old)


def _store(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path / "keys", MasterKey.from_hex(secrets.token_hex(32), "test"),
                    create=True)


def test_ledger_files_and_data_dir_are_private(tmp_path: Path, loose_umask: None) -> None:
    data = tmp_path / "data"
    store = open_store(data)
    with store.write():
        store.set_meta("x", "y")
    try:
        assert _mode(data) == 0o700
        for name in ("ledger.sqlite3", "ledger.sqlite3-wal", "ledger.sqlite3-shm"):
            assert _mode(data / name) == 0o600, name
    finally:
        store.close()


def test_an_existing_world_readable_ledger_is_tightened(tmp_path: Path,
                                                        loose_umask: None) -> None:
    path = tmp_path / "ledger.sqlite3"
    SqliteLedgerStore(path, synchronous="FULL").close()
    path.chmod(0o644)
    SqliteLedgerStore(path, synchronous="FULL").close()
    assert _mode(path) == 0o600


def test_key_files_are_private(tmp_path: Path, loose_umask: None) -> None:
    store = _store(tmp_path)
    store.generate("zpk", "P0")
    assert _mode(tmp_path / "keys") == 0o700
    assert _mode(tmp_path / "keys" / "zpk.tr31") == 0o600


def test_a_rotated_key_keeps_private_files(tmp_path: Path, loose_umask: None) -> None:
    store = _store(tmp_path)
    store.generate("zpk", "P0")
    store.rotate("zpk")
    assert _mode(tmp_path / "keys" / "zpk.tr31") == 0o600
    assert _mode(tmp_path / "keys" / "retired") == 0o700


@pytest.mark.parametrize("usage,algorithm,length", [("V2", "T", 16), ("V1", "T", 16),
                                                     ("M7", "H", 32)])
def test_keys_other_data_depends_on_are_not_rotated(tmp_path: Path, usage: str,
                                                    algorithm: str, length: int) -> None:
    store = _store(tmp_path)
    store.generate("k", usage, algorithm, length)
    kcv = store.info("k").kcv
    with pytest.raises(KeyStoreError, match="new name"):
        store.rotate("k")
    assert store.info("k").kcv == kcv


def test_import_refuses_version_a_and_c_blocks(tmp_path: Path) -> None:
    store = _store(tmp_path)
    with pytest.raises(KeyBlockError, match="version A is refused"):
        store.import_block("zpk", VERSION_A_BLOCK, KBPK)
    assert "zpk" not in store
    block = wrap(KBPK, KeyBlockHeader("B", "P0", "T", "E", "00", "E"), bytes(range(16)))
    assert store.import_block("zpk", block, KBPK).usage == "P0"


def test_a_readable_master_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    path.write_text(secrets.token_hex(32))
    path.chmod(0o644)
    with pytest.raises(KeyStoreError, match="readable by others"):
        MasterKey.from_file(path)
    path.chmod(0o600)
    assert MasterKey.from_file(path).kcv


def test_synchronous_normal_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"ledger\.synchronous"):
        parse_config({"ledger": {"synchronous": "NORMAL"}})
    assert parse_config({"ledger": {"synchronous": "EXTRA"}}).ledger.synchronous == "EXTRA"


def test_a_database_that_cannot_do_wal_is_refused(tmp_path: Path) -> None:
    # An in-memory database cannot enter WAL: it would silently lose
    # every decision on a crash.
    with pytest.raises(NotDurable, match="WAL"):
        SqliteLedgerStore(":memory:", synchronous="FULL")
