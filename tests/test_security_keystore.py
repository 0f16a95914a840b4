"""The wrapped key store and ``iso-switch keys``: keys at rest are TR-31
blocks under a master key from the environment or a file, the shipped demo
store holds no clear key, and a failed operation overwrites nothing."""

from __future__ import annotations

import argparse
import logging
import secrets
from pathlib import Path

import pytest

from iso_switch.cli import keys_cmd
from iso_switch.security import (
    DEMO_MASTER_KEY,
    MASTER_KEY_ENV,
    KeyStore,
    KeyStoreError,
    KeyUsageError,
    MasterKey,
    SoftwareHsm,
    resolve_master_key,
    tr31,
)

REPO = Path(__file__).resolve().parent.parent
DEMO_BDK_HEX = "0123456789ABCDEFFEDCBA9876543210"


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture
def master() -> MasterKey:
    return MasterKey(secrets.token_bytes(32), "test")


@pytest.fixture
def store_dir(tmp_path: Path, master: MasterKey) -> Path:
    store = KeyStore(tmp_path / "keys", master, create=True)
    store.add("bdk", bytes.fromhex(DEMO_BDK_HEX), "B0", "T", "X", key_set_id="FFFF987654")
    store.generate("pvk", "V2", "T", 16, "C")
    store.generate("mac-aes", "M6", "A", 32, "C")
    return tmp_path / "keys"


def test_shipped_demo_store_has_no_clear_key_and_opens_with_the_demo_master() -> None:
    keys_dir = REPO / "keys"
    for path in keys_dir.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace").upper()
            assert DEMO_BDK_HEX not in text
            assert DEMO_MASTER_KEY.hex().upper() not in text
    store = KeyStore(keys_dir, MasterKey.demo())
    assert store.uses_demo_master_key
    bdk_info = store.info("demo-bdk")
    assert (bdk_info.usage, bdk_info.kcv, bdk_info.key_set_id) == ("B0", "08D7B4", "FFFF987654")
    assert store.bdk_for_key_set("FFFF987654") == bytes.fromhex(DEMO_BDK_HEX)
    hsm = SoftwareHsm(store)
    verification = hsm.make_pin_verification_data("4761739001010010", "1234")
    assert verification.key_name == "demo-pvk"


def test_demo_master_key_logs_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="iso_switch.security"):
        KeyStore(REPO / "keys", MasterKey.demo())
    assert any("DEMO master key" in record.getMessage() for record in caplog.records)


def test_store_round_trip(store_dir: Path, master: MasterKey) -> None:
    store = KeyStore(store_dir, master)
    names = [info.name for info in store.list_keys()]
    assert names == ["bdk", "mac-aes", "pvk"]
    assert store.info("bdk").kcv == "08D7B4"
    assert store.key_set_ids() == ["FFFF987654"]
    assert (store_dir / "mac-aes.tr31").read_text().startswith("D")
    assert (store_dir / "bdk.tr31").read_text().startswith("B")
    assert store.info("bdk").created.endswith("Z")


def test_wrong_master_key_is_a_clear_error(store_dir: Path) -> None:
    before = snapshot(store_dir)
    with pytest.raises(KeyStoreError, match="wrong master key"):
        KeyStore(store_dir, MasterKey(secrets.token_bytes(32), "wrong"))
    assert snapshot(store_dir) == before


def test_corrupted_or_renamed_block_is_refused(store_dir: Path, master: MasterKey) -> None:
    path = store_dir / "pvk.tr31"
    text = path.read_text().strip()
    path.write_text(text[:-3] + ("000" if text[-3:] != "000" else "111") + "\n")
    before = snapshot(store_dir)
    with pytest.raises(KeyStoreError, match=r"pvk\.tr31.*MAC"):
        KeyStore(store_dir, master)
    assert snapshot(store_dir) == before
    path.write_text(text + "\n")
    path.rename(store_dir / "other.tr31")
    with pytest.raises(KeyStoreError, match="holds a key named"):
        KeyStore(store_dir, master)


def test_duplicate_names_and_bad_names_are_refused(store_dir: Path, master: MasterKey) -> None:
    store = KeyStore(store_dir, master)
    before = snapshot(store_dir)
    with pytest.raises(KeyStoreError, match="already exists"):
        store.generate("pvk", "V2")
    with pytest.raises(KeyStoreError):
        store.generate("../evil", "V2")
    with pytest.raises(KeyStoreError, match="key set"):
        store.add("bdk2", secrets.token_bytes(16), "B0", "T", "X", key_set_id="FFFF987654")
    with pytest.raises(KeyUsageError):
        store.generate("weird", "ZZ")
    assert snapshot(store_dir) == before


def test_usage_enforced_on_stored_keys(store_dir: Path, master: MasterKey) -> None:
    store = KeyStore(store_dir, master)
    with pytest.raises(KeyUsageError):
        store.key_for("pvk", (tr31.USAGE_MAC_ISO9797_ALG3,), tr31.MODE_GENERATE)
    with pytest.raises(KeyUsageError):
        store.key_for("bdk", (tr31.USAGE_BDK,), tr31.MODE_ENCRYPT)


def test_rotate_keeps_the_old_block_retired(store_dir: Path, master: MasterKey) -> None:
    store = KeyStore(store_dir, master)
    old = store.info("mac-aes")
    new = store.rotate("mac-aes")
    assert new.key_version == "01" and new.kcv != old.kcv and new.usage == old.usage
    assert (store_dir / "retired" / "mac-aes.v00.tr31").exists()
    with pytest.raises(KeyStoreError, match="cannot be rotated"):
        store.rotate("pvk")  # every PIN on file would stop verifying
    with pytest.raises(KeyStoreError, match="new key set"):
        store.rotate("bdk")
    rotated = store.rotate("bdk", key_set_id="FFFF987655")
    assert rotated.key_set_id == "FFFF987655"
    reopened = KeyStore(store_dir, master)
    assert reopened.info("mac-aes").kcv == new.kcv
    assert reopened.bdk_for_key_set("FFFF987654") is None


def test_master_key_rotation(store_dir: Path, master: MasterKey) -> None:
    store = KeyStore(store_dir, master)
    kcvs = {info.name: info.kcv for info in store.list_keys()}
    new_master = MasterKey(secrets.token_bytes(32), "new")
    store.rewrap(new_master)
    reopened = KeyStore(store_dir, new_master)
    assert {info.name: info.kcv for info in reopened.list_keys()} == kcvs
    with pytest.raises(KeyStoreError, match="wrong master key"):
        KeyStore(store_dir, master)


def test_master_key_sources(tmp_path: Path) -> None:
    key_hex = secrets.token_hex(32)
    from_env = resolve_master_key(environ={MASTER_KEY_ENV: key_hex})
    assert from_env.kcv == MasterKey.from_hex(key_hex, "x").kcv
    path = tmp_path / "master.hex"
    path.write_text(key_hex + "\n")
    path.chmod(0o600)
    assert resolve_master_key(path, environ={}).kcv == from_env.kcv
    with pytest.raises(KeyStoreError, match="no master key"):
        resolve_master_key(environ={})
    assert resolve_master_key(environ={}, allow_demo=True).is_demo
    with pytest.raises(KeyStoreError, match="hex"):
        resolve_master_key(environ={MASTER_KEY_ENV: "zz"})
    with pytest.raises(KeyStoreError, match="32 bytes"):
        resolve_master_key(environ={MASTER_KEY_ENV: "00" * 16})
    with pytest.raises(KeyStoreError, match="cannot read"):
        resolve_master_key(tmp_path / "missing", environ={})


# --- the CLI ---------------------------------------------------------------


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="iso-switch")
    keys_cmd.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


def test_cli_generate_list_import_rotate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    keys_dir = str(tmp_path / "store")
    master_hex = secrets.token_hex(32)
    monkeypatch.setenv(MASTER_KEY_ENV, master_hex)
    assert run_cli(["keys", "generate", "kek", "--usage", "K0", "--mode", "B",
                    "--keys-dir", keys_dir]) == 0
    clear = secrets.token_hex(16).upper()
    monkeypatch.setenv("NEW_BDK", clear)
    assert run_cli(["keys", "import", "bdk", "--clear-from-env", "NEW_BDK", "--usage", "B0",
                    "--key-set-id", "ABCDEF0123", "--keys-dir", keys_dir]) == 0
    assert run_cli(["keys", "list", "--keys-dir", keys_dir]) == 0
    out = capsys.readouterr().out
    assert "bdk" in out and "B0" in out and "ABCDEF0123" in out
    assert clear not in out.upper() and master_hex.upper() not in out.upper()
    for path in (tmp_path / "store").iterdir():
        assert clear not in path.read_text().upper()

    store = KeyStore(keys_dir, MasterKey.from_hex(master_hex, "t"))
    kek = store.key_for("kek", ("K0",), tr31.MODE_ENCRYPT)
    block = tr31.wrap(kek, tr31.KeyBlockHeader("B", "M3", "T", "C"), secrets.token_bytes(16))
    assert run_cli(["keys", "import", "mac", "--block", block, "--kek", "kek",
                    "--keys-dir", keys_dir]) == 0
    before = snapshot(tmp_path / "store")
    bad = block[:-1] + ("0" if block[-1] != "0" else "1")
    assert run_cli(["keys", "import", "mac2", "--block", bad, "--kek", "kek",
                    "--keys-dir", keys_dir]) == 1
    err = capsys.readouterr().err
    assert "MAC" in err and "nothing was changed" in err
    assert snapshot(tmp_path / "store") == before
    assert run_cli(["keys", "rotate", "mac", "--keys-dir", keys_dir]) == 0
    new_master = secrets.token_hex(32)
    monkeypatch.setenv("NEXT_MASTER", new_master)
    assert run_cli(["keys", "rotate", "--new-master-key-env", "NEXT_MASTER",
                    "--keys-dir", keys_dir]) == 0
    assert run_cli(["keys", "list", "--keys-dir", keys_dir]) == 1
    assert "wrong master key" in capsys.readouterr().err
    monkeypatch.setenv(MASTER_KEY_ENV, new_master)
    assert run_cli(["keys", "list", "--keys-dir", keys_dir]) == 0


def test_cli_lists_the_shipped_demo_store(capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MASTER_KEY_ENV, raising=False)
    assert run_cli(["keys", "list", "--keys-dir", str(REPO / "keys")]) == 0
    captured = capsys.readouterr()
    assert "demo-bdk" in captured.out and "08D7B4" in captured.out
    assert "DEMO" in captured.err
    assert DEMO_BDK_HEX not in captured.out


def test_cli_help_mentions_every_action(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        run_cli(["keys", "--help"])
    out = capsys.readouterr().out
    for action in ("generate", "import", "list", "rotate"):
        assert action in out
