"""Demo mode (interface section 8): demo data and demo keys only in the demo.

``serve`` without ``--config`` is the demo; a configuration file is a real
deployment unless it says ``demo = true``. Outside the demo the switch
refuses the demo master key and every demo key at start (naming them), seeds
nothing, takes the PAN hash key from the key store and refuses a key other
than the one the ledger's cards were hashed under.
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

import pytest

from iso_switch.bootstrap import DemoKeyRefused, build_hsm
from iso_switch.cli import main
from iso_switch.config import load_config
from iso_switch.processor import PanHashKeyMismatch, ProcessorConfig, open_store
from iso_switch.security.demo import demo_keys_in, pan_hash_key, pan_hash_key_name
from iso_switch.security.errors import KeyStoreError
from iso_switch.security.keystore import DEMO_MASTER_KEY, KeyStore, MasterKey
from iso_switch.server import open_processor
from tests.log_helpers import reset_logging

CHECKOUT_KEYS = Path(__file__).resolve().parent.parent / "keys"
# The public ANSI X9.24 test BDK: a demo key under any name.
ANSI_TEST_BDK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")


def _real_store(directory: Path, master: MasterKey) -> KeyStore:
    store = KeyStore(directory, master, create=True)
    store.generate("bdk", "B0", key_set_id="A1B2C3D4E5")
    store.generate("pvk", "V2")
    store.generate("pan-hash", "M7", "H", 32)
    return store


@pytest.fixture
def real_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, MasterKey]:
    master_hex = secrets.token_hex(32)
    monkeypatch.setenv("ISO_SWITCH_MASTER_KEY", master_hex)
    master = MasterKey.from_hex(master_hex, "test")
    directory = tmp_path / "data" / "keys"
    _real_store(directory, master)
    return directory, master


def _config_file(tmp_path: Path, text: str = "") -> Path:
    path = tmp_path / "switch.toml"
    path.write_text(f'data_dir = "{tmp_path / "data"}"\n{text}', encoding="utf-8")
    return path


def test_without_a_file_the_switch_is_the_demo() -> None:
    assert load_config(None).demo is True
    assert load_config(None, {"data_dir": "/elsewhere"}).demo is True


def test_a_file_is_not_the_demo_unless_it_says_so(tmp_path: Path) -> None:
    assert load_config(_config_file(tmp_path)).demo is False
    assert load_config(_config_file(tmp_path, "demo = true\n")).demo is True


def test_a_real_configuration_does_not_fall_back_to_the_checkout_demo_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The reproduced hole: a custom data_dir without keys/ ran on the demo
    # keys under the demo master key, seeded, and took MAC-less refunds.
    monkeypatch.delenv("ISO_SWITCH_MASTER_KEY", raising=False)
    config = load_config(_config_file(tmp_path))
    with pytest.raises(KeyStoreError, match="no master key"):
        build_hsm(config, warn=False)


def test_the_demo_master_key_is_refused_outside_the_demo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ISO_SWITCH_MASTER_KEY", DEMO_MASTER_KEY.hex())
    config = load_config(_config_file(tmp_path, f'[keys]\ndir = "{CHECKOUT_KEYS}"\n'))
    with pytest.raises(DemoKeyRefused, match="DEMO master key"):
        build_hsm(config, warn=False)


def test_a_demo_key_under_another_name_is_refused_by_its_kcv(
    tmp_path: Path, real_keys: tuple[Path, MasterKey]
) -> None:
    directory, master = real_keys
    KeyStore(directory, master).add("my-bdk", ANSI_TEST_BDK, "B0", key_set_id="FFFF987654")
    config = load_config(_config_file(tmp_path))
    with pytest.raises(DemoKeyRefused, match=r"my-bdk \(KCV 08D7B4\)"):
        build_hsm(config, warn=False)


def test_a_key_named_demo_is_refused(tmp_path: Path, real_keys: tuple[Path, MasterKey]) -> None:
    directory, master = real_keys
    KeyStore(directory, master).generate("demo-zpk-bank-b", "P0")
    assert demo_keys_in(KeyStore(directory, master))[0].startswith("demo-zpk-bank-b")
    with pytest.raises(DemoKeyRefused, match="demo-zpk-bank-b"):
        build_hsm(load_config(_config_file(tmp_path)), warn=False)


def test_every_shipped_key_is_known_as_a_demo_key() -> None:
    store = KeyStore(CHECKOUT_KEYS, MasterKey.demo())
    assert len(demo_keys_in(store)) == len(store.list_keys()) >= 8


def test_outside_the_demo_nothing_is_seeded(
    tmp_path: Path, real_keys: tuple[Path, MasterKey]
) -> None:
    config = load_config(_config_file(tmp_path))
    processor = open_processor(config, build_hsm(config, warn=False))
    try:
        store = processor.store
        assert store.load_terminals() == {}
        assert store.load_merchants() == {}
        assert store.list_cards() == []
        assert store.account_by_number("6222020000000015") is None
    finally:
        processor.store.close()


def test_cli_serve_refuses_demo_keys_with_an_error_naming_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ISO_SWITCH_MASTER_KEY", DEMO_MASTER_KEY.hex())
    keys = tmp_path / "data" / "keys"
    shutil.copytree(CHECKOUT_KEYS, keys)
    try:
        assert main(["serve", "--config", str(_config_file(tmp_path))]) == 1
    finally:
        reset_logging()  # serve configured logging before it refused to start
    err = capsys.readouterr().err
    assert "DEMO master key" in err
    assert DEMO_MASTER_KEY.hex() not in err.lower()


def _demo_config(tmp_path: Path):  # type: ignore[no-untyped-def]
    return load_config(_config_file(tmp_path, f'demo = true\n[keys]\ndir = "{CHECKOUT_KEYS}"\n'))


def test_demo_seeding_is_insert_if_absent(tmp_path: Path) -> None:
    config = _demo_config(tmp_path)
    hsm = build_hsm(config, warn=False)
    first = open_processor(config, hsm)
    store = first.store
    cards, terminals = len(store.list_cards()), store.load_terminals()
    balance = store.account_by_number("6222020000000015")
    assert (cards, len(terminals)) == (5, 3)
    # An operator changes a demo terminal; a restart must not undo it.
    changed = terminals["TERM0003"]
    store_type = type(changed)
    with store.write():
        store.upsert_terminal(store_type(changed.id, changed.merchant_id, True,
                                         changed.allowed_codes))
    store.close()
    again = open_processor(config, hsm)
    try:
        assert len(again.store.list_cards()) == cards
        assert again.store.load_terminals()["TERM0003"].mac_required is True
        assert again.store.account_by_number("6222020000000015") == balance
    finally:
        again.store.close()


def test_the_pan_hash_key_comes_from_the_key_store(tmp_path: Path) -> None:
    config = _demo_config(tmp_path)
    processor = open_processor(config, build_hsm(config, warn=False))
    try:
        key, _ = pan_hash_key(KeyStore(CHECKOUT_KEYS, MasterKey.demo()))
        assert processor.config.pan_hash_key == key
        assert "pan_hash_key" not in repr(processor.config)
    finally:
        processor.store.close()


def test_a_ledger_refuses_a_different_pan_hash_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _demo_config(tmp_path)
    open_processor(config, build_hsm(config, warn=False)).store.close()
    # Another key store (another node, or a rotated key) with its own key.
    master_hex = secrets.token_hex(32)
    monkeypatch.setenv("ISO_SWITCH_MASTER_KEY", master_hex)
    other_keys = tmp_path / "other-keys"
    _real_store(other_keys, MasterKey.from_hex(master_hex, "test"))
    other = load_config(_config_file(tmp_path, f'[keys]\ndir = "{other_keys}"\n'))
    with pytest.raises(PanHashKeyMismatch, match="KCV 0FFFD5F3AE"):
        open_processor(other, build_hsm(other, warn=False))


def test_the_pan_hash_key_name_is_configured_or_the_only_one(tmp_path: Path) -> None:
    master = MasterKey.from_hex(secrets.token_hex(32), "test")
    store = KeyStore(tmp_path / "keys", master, create=True)
    with pytest.raises(KeyStoreError, match=r"keys\.pan_hash_key"):
        pan_hash_key_name(store)
    store.generate("hash-a", "M7", "H", 32)
    assert pan_hash_key_name(store) == "hash-a"
    store.generate("hash-b", "M7", "H", 32)
    with pytest.raises(KeyStoreError, match="hash-a, hash-b"):
        pan_hash_key_name(store)
    assert pan_hash_key_name(store, "hash-b") == "hash-b"


def test_processor_config_never_shows_its_key() -> None:
    assert "pan_hash_key" not in repr(ProcessorConfig())


def test_a_store_outside_the_demo_gets_no_cards_from_ledger_init(
    tmp_path: Path, real_keys: tuple[Path, MasterKey], capsys: pytest.CaptureFixture[str]
) -> None:
    directory, _ = real_keys
    data = tmp_path / "ledger"
    assert main(["ledger", "init", "--data-dir", str(data), "--keys-dir", str(directory)]) == 1
    assert "demo key store" in capsys.readouterr().out
    store = open_store(data)
    try:
        assert store.list_cards() == []
    finally:
        store.close()
