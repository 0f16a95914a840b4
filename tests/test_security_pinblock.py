"""PIN blocks and MACs: round trips for any PIN (4-12 digits) and any PAN,
negative cases, and psec as a second opinion on the same algorithms."""

from __future__ import annotations

import contextlib
import secrets
import warnings

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from iso_switch.security import PinBlockError, mac, pinblock
from iso_switch.security.errors import MacError

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import psec

# psec still calls cryptography's deprecated TripleDES spellings.
pytestmark = pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")

pins = st.text(alphabet="0123456789", min_size=4, max_size=12)
pans = st.text(alphabet="0123456789", min_size=13, max_size=19)
tdes_keys = st.binary(min_size=16, max_size=16)
aes_keys = st.sampled_from([16, 24, 32]).flatmap(lambda n: st.binary(min_size=n, max_size=n))


@given(pin=pins, pan=pans, key=tdes_keys, fmt=st.sampled_from([0, 1, 3]))
def test_tdes_formats_round_trip(pin: str, pan: str, key: bytes, fmt: int) -> None:
    block = pinblock.encrypt_pin_block(key, pin, pan, fmt)
    assert len(block) == 8
    assert pinblock.decrypt_pin_block(key, block, pan, fmt) == pin


@given(pin=pins, pan=pans, key=aes_keys)
def test_format4_round_trip(pin: str, pan: str, key: bytes) -> None:
    block = pinblock.encrypt_pin_block(key, pin, pan, 4)
    assert len(block) == 16
    assert pinblock.decrypt_pin_block(key, block, pan, 4) == pin


@given(pin=pins, pan=pans)
def test_psec_agrees_on_format0_and_3(pin: str, pan: str) -> None:
    assert pinblock.encode_iso0(pin, pan) == psec.pinblock.encode_pinblock_iso_0(pin, pan)
    assert psec.pinblock.decode_pinblock_iso_0(pinblock.encode_iso0(pin, pan), pan) == pin
    assert psec.pinblock.decode_pinblock_iso_3(pinblock.encode_iso3(pin, pan), pan) == pin
    assert pinblock.decode_iso3(psec.pinblock.encode_pinblock_iso_3(pin, pan), pan) == pin


@given(pin=pins, pan=pans, key=st.binary(min_size=16, max_size=16))
def test_psec_agrees_on_format4(pin: str, pan: str, key: bytes) -> None:
    ours = pinblock.encrypt_iso4(key, pin, pan)
    assert psec.pinblock.decipher_pinblock_iso_4(key, ours, pan) == pin
    theirs = psec.pinblock.encipher_pinblock_iso_4(key, pin, pan)
    assert pinblock.decrypt_iso4(key, theirs, pan) == pin
    assert pinblock.encode_iso4_pan_field(pan) == psec.pinblock.encode_pan_field_iso_4(pan)


@given(pin=pins, pan=pans, other=pans, key=tdes_keys)
def test_wrong_pan_never_yields_the_pin_silently_in_format0(
    pin: str, pan: str, other: str, key: bytes
) -> None:
    assume(other[:-1][-12:] != pan[:-1][-12:])
    block = pinblock.encrypt_pin_block(key, pin, pan, 0)
    with contextlib.suppress(PinBlockError):
        assert pinblock.decrypt_pin_block(key, block, other, 0) != pin


def test_wrong_key_and_corrupted_block_are_refused() -> None:
    key = secrets.token_bytes(16)
    pan = "4761739001010010"
    block = pinblock.encrypt_pin_block(key, "1234", pan, 0)
    refused = 0
    for _ in range(50):
        try:
            pinblock.decrypt_pin_block(secrets.token_bytes(16), block, pan, 0)
        except PinBlockError:
            refused += 1
    assert refused >= 45  # a random key decodes to a valid block ~never
    corrupted = bytes([block[0] ^ 0x80]) + block[1:]
    with pytest.raises(PinBlockError):
        pinblock.decrypt_pin_block(key, corrupted[:7], pan, 0)
    aes = secrets.token_bytes(16)
    block4 = pinblock.encrypt_iso4(aes, "1234", pan)
    with pytest.raises(PinBlockError):
        pinblock.decrypt_iso4(aes, bytes([block4[0] ^ 1]) + block4[1:], pan)


@pytest.mark.parametrize("pin", ["123", "1234567890123", "12a4", "", "１２３４"])
def test_bad_pins_are_refused(pin: str) -> None:
    with pytest.raises(PinBlockError):
        pinblock.encode_iso0(pin, "4761739001010010")


@pytest.mark.parametrize("pan", ["", "1234567", "47617390010100101234", "4761x39001010010"])
def test_bad_pans_are_refused(pan: str) -> None:
    with pytest.raises(PinBlockError):
        pinblock.encode_iso0("1234", pan)


@given(pin=pins, pan=pans, src=st.sampled_from([0, 1, 3]), dst=st.sampled_from([0, 3, 4]))
def test_translation_round_trip(pin: str, pan: str, src: int, dst: int) -> None:
    source_key = secrets.token_bytes(16)
    dest_key = secrets.token_bytes(16)
    block = pinblock.encrypt_pin_block(source_key, pin, pan, src)
    out = pinblock.translate_pin_block(source_key, block, src, dest_key, dst, pan)
    assert pinblock.decrypt_pin_block(dest_key, out, pan, dst) == pin


@pytest.mark.parametrize("src", [0, 3, 4])
def test_translation_to_format1_is_refused(src: int) -> None:
    pan = "4761739001010010"
    key = secrets.token_bytes(16)
    block = pinblock.encrypt_pin_block(key, "1234", pan, src)
    with pytest.raises(PinBlockError, match="format 1"):
        pinblock.translate_pin_block(key, block, src, secrets.token_bytes(16), 1, pan)


def test_translation_checks_the_pan_on_both_sides() -> None:
    pan = "4761739001010010"
    key = secrets.token_bytes(16)
    block = pinblock.encrypt_pin_block(key, "1234", pan, 0)
    with pytest.raises(PinBlockError, match="same PAN"):
        pinblock.translate_pin_block(key, block, 0, key, 3, pan, dest_pan="4761739001010028")


# --- MACs ------------------------------------------------------------------


@given(key=tdes_keys, data=st.binary(max_size=600), padding=st.sampled_from([1, 2]))
def test_retail_mac_matches_psec(key: bytes, data: bytes, padding: int) -> None:
    ours = mac.retail_mac(key, data, padding)
    assert ours == psec.mac.generate_retail_mac(key[:8], key[8:], data, padding)
    assert mac.verify_retail_mac(key, data, ours, padding)


@given(key=tdes_keys, data=st.binary(min_size=1, max_size=300), flip=st.integers(0, 7))
def test_retail_mac_rejects_any_changed_byte(key: bytes, data: bytes, flip: int) -> None:
    good = mac.retail_mac(key, data)
    changed = bytearray(data)
    changed[flip % len(data)] ^= 0x01
    assert not mac.verify_retail_mac(key, bytes(changed), good)
    assert not mac.verify_retail_mac(key, data, good[:4])
    assert not mac.verify_retail_mac(bytes(b ^ 0x02 for b in key), data, good)


def test_retail_mac_padding_edge_cases() -> None:
    key = bytes(range(16))
    assert mac.pad_iso9797(b"", 1) == bytes(8)
    assert mac.pad_iso9797(b"", 2) == b"\x80" + bytes(7)
    assert mac.pad_iso9797(b"12345678", 2) == b"12345678\x80" + bytes(7)
    assert mac.retail_mac(key, b"") == mac.retail_mac(key, bytes(8))
    with pytest.raises(MacError):
        mac.retail_mac(key, b"x", padding=3)
    with pytest.raises(MacError):
        mac.retail_mac(key[:8], b"x")


@given(key=aes_keys, data=st.binary(max_size=200))
def test_cmac_verify(key: bytes, data: bytes) -> None:
    tag = mac.cmac_aes(key, data)
    assert mac.verify_cmac_aes(key, data, tag)
    assert mac.verify_cmac_aes(key, data, tag[:8])
    assert not mac.verify_cmac_aes(key, data + b"x", tag)
    assert not mac.verify_cmac_aes(key, data, tag[:3])
