"""The processor with the real SoftwareHsm and the shipped demo keys:
open_default seeds PVVs through the HSM, and DUKPT-encrypted PIN blocks
(as a terminal makes them, interface.md section 4) are verified."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from iso_switch.processor import ProcessorConfig, Request, open_default
from iso_switch.security.dukpt import derive_transaction_key, pin_key
from iso_switch.security.hsm import SoftwareHsm
from iso_switch.security.keystore import KeyStore, MasterKey
from iso_switch.security.pinblock import encode_iso0
from tests.helpers_ledger import CARD_RICH, ksn

ROOT = Path(__file__).resolve().parent.parent
DEMO_BDK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")  # public ANSI X9.24 test key


def terminal_pin_block(pin: str, pan: str, ksn_hex: str) -> str:
    key = pin_key(derive_transaction_key(DEMO_BDK, ksn_hex))
    encryptor = Cipher(TripleDES(key + key[:8]), modes.ECB()).encryptor()
    return (encryptor.update(encode_iso0(pin, pan)) + encryptor.finalize()).hex().upper()


@pytest.fixture(scope="module")
def hsm() -> SoftwareHsm:
    return SoftwareHsm(KeyStore(ROOT / "keys", MasterKey.demo()))


def test_demo_pins_verify_through_the_hsm(tmp_path: Path, hsm: SoftwareHsm) -> None:
    processor = open_default(tmp_path, hsm, ProcessorConfig(synchronous="OFF"), seed_demo_data=True)
    now = datetime.now(UTC)

    def withdraw(pin: str, counter: int, stan: str) -> str:
        k = ksn(counter)
        fields = {
            "t": "0200", "2": CARD_RICH, "3": "010000", "4": "000000010000",
            "7": now.strftime("%m%d%H%M%S"), "11": stan, "12": "120000", "13": "0301",
            "22": "051", "41": "TERM0003", "42": "MERCHANT0000001", "49": "156",
            "52": terminal_pin_block(pin, CARD_RICH, k), "62": k,
        }
        return processor.process(Request(fields, "absent", now)).response["39"]

    assert withdraw("1234", 1, "000001") == "00"
    assert withdraw("9999", 2, "000002") == "55"
    assert withdraw("1234", 2, "000003") == "63"  # the KSN counter was used already
    # a second open_default on the same directory seeds nothing more
    again = open_default(tmp_path, hsm, ProcessorConfig(synchronous="OFF"), seed_demo_data=True)
    assert len(again.store.list_cards()) == 5


def test_forged_pin_blocks_do_not_lock_the_card(tmp_path: Path, hsm: SoftwareHsm) -> None:
    # Random DE52s under made-up KSNs on the MAC-optional terminal used to
    # count as wrong tries: 55, 55, 55, then 75 for the real cardholder.
    import secrets

    processor = open_default(tmp_path, hsm, ProcessorConfig(synchronous="OFF"),
                             seed_demo_data=True)
    now = datetime.now(UTC)

    def withdraw(de52: str, k: str, stan: str) -> str:
        fields = {
            "t": "0200", "2": CARD_RICH, "3": "010000", "4": "000000010000",
            "7": now.strftime("%m%d%H%M%S"), "11": stan, "12": "120000", "13": "0301",
            "22": "051", "41": "TERM0003", "42": "MERCHANT0000001", "49": "156",
            "52": de52, "62": k,
        }
        return processor.process(Request(fields, "absent", now)).response["39"]

    pvd, forged = _pvd_of(processor), 0
    for n in range(12):
        k = ksn(1, device=0x100000 + n)
        block = secrets.token_hex(8).upper()
        # nearly every random block fails to decode as format 0
        if hsm.verify_pin(k, bytes.fromhex(block), CARD_RICH, pvd) is None:
            forged += 1
            assert withdraw(block, k, f"{n + 1:06d}") == "55"
    assert forged >= 8
    card = processor.store.list_cards()[0]
    assert (card.pin_tries, card.pin_blocked) == (0, False)
    real = ksn(2)
    assert withdraw(terminal_pin_block("1234", CARD_RICH, real), real, "000099") == "00"


def _pvd_of(processor):  # type: ignore[no-untyped-def]
    from iso_switch.security.hsm import PinVerificationData

    card = processor.store.list_cards()[0]
    return PinVerificationData(card.pvd_method, card.pvd_pvki, card.pvd_value, card.pvd_key_name)
