"""The demo link keys of a remote issuer (interface section 7): their check
values are the published ones, the switch's copy (``keys/``) and the issuer
simulator's copy (``examples/remote-issuer-keys/``) hold the same keys for
the uses each side has, and both are refused outside demo mode.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from iso_switch.bootstrap import DemoKeyRefused, build_hsm
from iso_switch.config import load_config
from iso_switch.security import tr31
from iso_switch.security.demo import DEMO_KEY_KCVS, demo_keys_in
from iso_switch.security.errors import KeyUsageError
from iso_switch.security.hsm import SoftwareHsm
from iso_switch.security.keystore import KeyStore, MasterKey

ROOT = Path(__file__).resolve().parent.parent
SWITCH_KEYS = ROOT / "keys"
ISSUER_KEYS = ROOT / "examples" / "remote-issuer-keys"
# Interface section 7: name -> (usage, published KCV).
LINK_KEYS = {"demo-zpk-bank-b": ("P0", "D4BE7B"), "demo-zak-bank-b": ("M3", "0031A8")}


@pytest.mark.parametrize("directory", [SWITCH_KEYS, ISSUER_KEYS])
def test_link_keys_have_the_published_check_values(directory: Path) -> None:
    store = KeyStore(directory, MasterKey.demo())
    for name, (usage, kcv) in LINK_KEYS.items():
        info = store.info(name)
        assert (info.usage, info.algorithm, info.kcv) == (usage, "T", kcv)
        assert DEMO_KEY_KCVS[kcv] == name


def test_each_side_may_use_the_zone_pin_key_only_its_way() -> None:
    switch = KeyStore(SWITCH_KEYS, MasterKey.demo())
    issuer = KeyStore(ISSUER_KEYS, MasterKey.demo())
    pin_key = switch.key_for("demo-zpk-bank-b", (tr31.USAGE_PIN_ENCRYPTION,), tr31.MODE_ENCRYPT)
    assert pin_key == issuer.key_for("demo-zpk-bank-b", (tr31.USAGE_PIN_ENCRYPTION,),
                                     tr31.MODE_DECRYPT)
    with pytest.raises(KeyUsageError):
        switch.key_for("demo-zpk-bank-b", (tr31.USAGE_PIN_ENCRYPTION,), tr31.MODE_DECRYPT)
    with pytest.raises(KeyUsageError):
        issuer.key_for("demo-zpk-bank-b", (tr31.USAGE_PIN_ENCRYPTION,), tr31.MODE_ENCRYPT)
    for store in (switch, issuer):
        for mode in (tr31.MODE_GENERATE, tr31.MODE_VERIFY):
            store.key_for("demo-zak-bank-b", (tr31.USAGE_MAC_ISO9797_ALG3,), mode)


def test_the_link_zone_pin_key_is_not_the_edge_zone_pin_key() -> None:
    # The switch rewraps terminal PIN blocks under its own zone key; the
    # issuer's encrypt-only key must not make that choice ambiguous.
    assert SoftwareHsm(KeyStore(SWITCH_KEYS, MasterKey.demo())).zone_pin_key_name() == "demo-zpk"


def test_the_issuer_simulator_store_holds_demo_keys_only() -> None:
    store = KeyStore(ISSUER_KEYS, MasterKey.demo())
    assert len(demo_keys_in(store)) == len(store.list_keys()) == 2


@pytest.mark.parametrize("name", sorted(LINK_KEYS))
def test_a_link_key_under_another_name_is_refused_outside_the_demo(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    master_hex = secrets.token_hex(32)
    monkeypatch.setenv("ISO_SWITCH_MASTER_KEY", master_hex)
    master = MasterKey.from_hex(master_hex, "test")
    store = KeyStore(tmp_path / "data" / "keys", master, create=True)
    demo = KeyStore(SWITCH_KEYS, MasterKey.demo())
    usage, kcv = LINK_KEYS[name]
    mode = tr31.MODE_ENCRYPT if usage == "P0" else tr31.MODE_GENERATE
    store.add("bank-b-link", demo.key_for(name, (usage,), mode), usage, "T",
              demo.info(name).mode_of_use)
    config_file = tmp_path / "switch.toml"
    config_file.write_text(f'data_dir = "{tmp_path / "data"}"\n', encoding="utf-8")
    with pytest.raises(DemoKeyRefused, match=rf"bank-b-link \(KCV {kcv}\)"):
        build_hsm(load_config(config_file), warn=False)
