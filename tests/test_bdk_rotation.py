"""A rotated base derivation key stays usable for the key set it had during
a grace period, then is refused (63); its devices' replay state stays
theirs; the new BDK's devices work at once. The key set identifier alone
picks the BDK, so no KSN is ever tried under two keys."""

from __future__ import annotations

import json
import logging
import secrets
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from iso_switch.acquirer.mac import MacLayout, MacVerdict, verify_request_mac
from iso_switch.codec import Codec, load_spec
from iso_switch.config import Config, ConfigError, KeysConfig, parse_config
from iso_switch.processor import ProcessorConfig, Request, open_default
from iso_switch.security import KeyStore, KeyStoreError, KsnError, MasterKey, SoftwareHsm
from iso_switch.security.demo import demo_keys_in
from iso_switch.security.dukpt import derive_transaction_key, mac_request_key, pin_key
from iso_switch.security.mac import retail_mac
from iso_switch.security.pinblock import encode_iso0
from tests.helpers_ledger import CARD_RICH

ROOT = Path(__file__).resolve().parent.parent
VECTORS = json.loads(
    (ROOT / "tests" / "data" / "security" / "payment_crypto_vectors.json").read_text()
)["tdes_dukpt_x9_24_1_2009_A4"]
OLD_BDK = bytes.fromhex(VECTORS["bdk"])  # the public ANSI X9.24 test BDK
OLD_SET, NEW_SET = "FFFF987654", "FFFF987655"
GRACE_S = 720 * 3600.0
DEVICE = "3210E0"


class Clock:
    """Epoch seconds that a test moves."""

    def __init__(self, now_s: float) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


def ksn_of(key_set: str, counter: int, device: str = DEVICE) -> str:
    return f"{key_set}{(int(device, 16) << 16) | counter:010X}"


@pytest.fixture
def rotated(tmp_path: Path) -> tuple[KeyStore, Path]:
    """A copy of the demo key store whose BDK was rotated to key set NEW_SET."""
    keys = tmp_path / "keys"
    shutil.copytree(ROOT / "keys", keys)
    store = KeyStore(keys, MasterKey.demo())
    store.rotate("demo-bdk", NEW_SET)
    return store, keys


def hsm_for(store: KeyStore, grace_s: float = GRACE_S,
            after_rotation_s: float = 60.0) -> tuple[SoftwareHsm, Clock]:
    retired = store.retired_bdk(OLD_SET)
    assert retired is not None
    clock = Clock(retired.retired_at.timestamp() + after_rotation_s)
    return SoftwareHsm(store, bdk_grace_s=grace_s, clock=clock), clock


# --- the key store keeps the rotated BDK -------------------------------------------


def test_the_rotated_bdk_is_kept_with_its_rotation_time(rotated: tuple[KeyStore, Path]) -> None:
    keys = rotated[1]
    reopened = KeyStore(keys, MasterKey.demo())
    retired = reopened.retired_bdk(OLD_SET)
    assert retired is not None
    assert (retired.key, retired.kcv, retired.key_version) == (OLD_BDK, "08D7B4", "00")
    assert abs(retired.retired_at.timestamp() - datetime.now(UTC).timestamp()) < 120
    assert reopened.bdk_for_key_set(OLD_SET) is None  # no longer the current BDK
    assert reopened.info("demo-bdk").key_set_id == NEW_SET
    assert OLD_BDK.hex().upper() not in (keys / "retired" / "demo-bdk.v00.tr31").read_text()
    assert [b.key_set_id for b in reopened.retired_bdks()] == [OLD_SET]
    assert OLD_BDK.hex() not in repr(retired).lower()


def test_a_new_bdk_never_takes_a_rotated_key_set(rotated: tuple[KeyStore, Path]) -> None:
    store, keys = rotated
    for candidate in (store, KeyStore(keys, MasterKey.demo())):
        with pytest.raises(KeyStoreError, match="rotated BDK"):
            candidate.add("bdk2", secrets.token_bytes(16), "B0", "T", "X", key_set_id=OLD_SET)
        with pytest.raises(KeyStoreError, match="rotated BDK"):
            candidate.rotate("demo-bdk", OLD_SET)


def test_master_key_rotation_rewraps_the_rotated_bdk(rotated: tuple[KeyStore, Path]) -> None:
    store, keys = rotated
    before = store.retired_bdk(OLD_SET)
    new_master = MasterKey(secrets.token_bytes(32), "new")
    store.rewrap(new_master)
    again = KeyStore(keys, new_master).retired_bdk(OLD_SET)
    assert again is not None and before is not None
    assert (again.key, again.retired_at) == (before.key, before.retired_at)


def test_pin_and_pan_hash_keys_still_refuse_rotation(rotated: tuple[KeyStore, Path]) -> None:
    store, _ = rotated
    for name in ("demo-pvk", "demo-pvk-ibm3624", "demo-pan-hash"):
        with pytest.raises(KeyStoreError, match="cannot be rotated"):
            store.rotate(name)


def test_a_rotated_demo_bdk_is_still_a_demo_key(rotated: tuple[KeyStore, Path]) -> None:
    store, _ = rotated
    assert any("rotated (KCV 08D7B4)" in found for found in demo_keys_in(store))


# --- the HSM: the published vectors under the rotated BDK --------------------------


def test_within_grace_the_old_bdk_derives_the_published_keys(
        rotated: tuple[KeyStore, Path]) -> None:
    hsm, clock = hsm_for(rotated[0])
    first = VECTORS["transactions"][0]
    keys = hsm.dukpt_keys(first["ksn"])
    assert keys.pin == bytes.fromhex(VECTORS["counter_1_working_keys"]["pin_key"])
    data = b"4012345678909D987"
    mac = retail_mac(keys.mac_request, data)
    assert mac[:4].hex().upper() == (
        VECTORS["counter_1_working_keys"]["retail_mac_of_ascii_4012345678909D987"]
        ["request_first_4_bytes"])
    assert hsm.verify_request_mac(first["ksn"], data, mac)
    pvd = hsm.make_pin_verification_data(VECTORS["pan"], VECTORS["pin"])
    for tx in VECTORS["transactions"][:4]:
        block = bytes.fromhex(tx["encrypted_pin_block"])
        assert hsm.verify_pin(tx["ksn"], block, VECTORS["pan"], pvd) is True
    clock.now_s += GRACE_S  # the grace period is over: every KSN at once
    assert not hsm.verify_request_mac(first["ksn"], data, mac)
    with pytest.raises(KsnError, match="grace period"):
        hsm.check_ksn(first["ksn"])
    with pytest.raises(KsnError):
        hsm.verify_pin(VECTORS["transactions"][1]["ksn"],
                       bytes.fromhex(VECTORS["transactions"][1]["encrypted_pin_block"]),
                       VECTORS["pan"], pvd)


def test_no_grace_refuses_the_old_bdk_at_once(rotated: tuple[KeyStore, Path]) -> None:
    hsm, _ = hsm_for(rotated[0], grace_s=0.0, after_rotation_s=0.0)
    with pytest.raises(KsnError):
        hsm.check_ksn(VECTORS["transactions"][0]["ksn"])


def test_the_mac_step_answers_by_key_set(rotated: tuple[KeyStore, Path]) -> None:
    store, _ = rotated
    new_bdk = store.bdk_for_key_set(NEW_SET)
    assert new_bdk is not None
    hsm, clock = hsm_for(store)
    layout = MacLayout.of(Codec(load_spec("ascii87-hex")))

    def verdict(bdk: bytes, k: str) -> MacVerdict | None:
        fields = {"t": "0200", "11": "000001", "41": "TERM0001", "62": k}
        head = layout.head(fields, "64")
        sealed = head + retail_mac(mac_request_key(derive_transaction_key(bdk, k)),
                                   head).hex().upper().encode()
        return verify_request_mac(hsm, layout, sealed, layout.codec.decode(sealed))

    assert verdict(OLD_BDK, ksn_of(OLD_SET, 7)) is MacVerdict.OK
    assert verdict(new_bdk, ksn_of(NEW_SET, 1)) is MacVerdict.OK
    # a KSN of the old key set MACed under the new BDK is not tried twice: bad
    assert verdict(new_bdk, ksn_of(OLD_SET, 8)) is MacVerdict.BAD
    clock.now_s += GRACE_S
    assert verdict(OLD_BDK, ksn_of(OLD_SET, 9)) is MacVerdict.NO_KEY
    assert verdict(new_bdk, ksn_of(NEW_SET, 2)) is MacVerdict.OK


def test_the_first_use_per_device_is_logged_without_key_material(
        rotated: tuple[KeyStore, Path], caplog: pytest.LogCaptureFixture) -> None:
    hsm, _ = hsm_for(rotated[0])
    data = b"covered bytes"
    with caplog.at_level(logging.INFO, logger="iso_switch.security"):
        for counter in (1, 2, 3):
            k = ksn_of(OLD_SET, counter)
            assert hsm.verify_request_mac(k, data, retail_mac(hsm.dukpt_keys(k).mac_request,
                                                               data))
    lines = [r.getMessage() for r in caplog.records if "rotated BDK" in r.getMessage()]
    assert len(lines) == 1
    assert "demo-bdk version 00" in lines[0] and "08D7B4" in lines[0] and DEVICE in lines[0]
    assert OLD_BDK.hex().upper() not in lines[0].upper()


# --- the processor: old devices within and after grace, new devices -------------


def pin_block(bdk: bytes, pin: str, k: str) -> str:
    key = pin_key(derive_transaction_key(bdk, k))
    encryptor = Cipher(TripleDES(key + key[:8]), modes.ECB()).encryptor()
    return (encryptor.update(encode_iso0(pin, CARD_RICH)) + encryptor.finalize()).hex().upper()


def test_withdrawals_from_old_and_new_devices(rotated: tuple[KeyStore, Path],
                                              tmp_path: Path) -> None:
    store, _ = rotated
    new_bdk = store.bdk_for_key_set(NEW_SET)
    assert new_bdk is not None
    hsm, clock = hsm_for(store)
    processor = open_default(tmp_path / "var", hsm, ProcessorConfig(synchronous="OFF"),
                             seed_demo_data=True)
    stans = iter(range(1, 100))

    def withdraw(bdk: bytes, k: str) -> str:
        now = datetime.fromtimestamp(clock.now_s, UTC)
        fields = {
            "t": "0200", "2": CARD_RICH, "3": "010000", "4": "000000001000",
            "7": now.strftime("%m%d%H%M%S"), "11": f"{next(stans):06d}", "12": "120000",
            "13": "0301", "22": "051", "41": "TERM0003", "42": "MERCHANT0000001", "49": "156",
            "52": pin_block(bdk, "1234", k), "62": k,
        }
        return processor.process(Request(fields, "absent", now)).response["39"]

    assert withdraw(OLD_BDK, ksn_of(OLD_SET, 5)) == "00"  # old device, within grace
    assert withdraw(OLD_BDK, ksn_of(OLD_SET, 5)) == "63"  # its replay state holds
    # the same device re-injected under the new BDK: its own replay state
    assert withdraw(new_bdk, ksn_of(NEW_SET, 1)) == "00"
    clock.now_s += GRACE_S
    assert withdraw(OLD_BDK, ksn_of(OLD_SET, 6)) == "63"  # old device, after grace
    assert withdraw(new_bdk, ksn_of(NEW_SET, 2)) == "00"
    card = processor.store.list_cards()[0]  # type: ignore[attr-defined]
    assert (card.pin_tries, card.pin_blocked) == (0, False)


# --- configuration ---------------------------------------------------------------


def test_grace_is_configured_in_hours() -> None:
    assert KeysConfig().bdk_rotation_grace_h == 720
    assert parse_config({"keys": {"bdk_rotation_grace_h": 0}}).keys \
        .bdk_rotation_grace_h == 0
    with pytest.raises(ConfigError, match="bdk_rotation_grace_h"):
        parse_config({"keys": {"bdk_rotation_grace_h": -1}})
    assert isinstance(Config().keys, KeysConfig)


def test_bootstrap_gives_the_hsm_the_configured_grace(rotated: tuple[KeyStore, Path],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from iso_switch.bootstrap import build_hsm

    _, keys = rotated
    k = ksn_of(OLD_SET, 1)
    for hours, usable in ((720, True), (0, False)):
        config = parse_config({"demo": True, "data_dir": str(keys.parent),
                                      "keys": {"bdk_rotation_grace_h": hours}})
        hsm = build_hsm(config, warn=False)
        try:
            hsm.check_ksn(k)
            assert usable
        except KsnError:
            assert not usable


def test_keys_list_shows_the_rotated_bdk(rotated: tuple[KeyStore, Path],
                                         capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_security_keystore import run_cli

    monkeypatch.delenv("ISO_SWITCH_MASTER_KEY", raising=False)
    assert run_cli(["keys", "list", "--keys-dir", str(rotated[1])]) == 0
    out = capsys.readouterr().out
    assert "rotated BDKs" in out
    assert f"demo-bdk version 00  KCV 08D7B4  key set {OLD_SET}" in out
    assert OLD_BDK.hex().upper() not in out.upper()
