"""Every published vector of tests/data/security/payment_crypto_vectors.json
(copied from the project's shared vector file; each entry names its public
source), run against iso_switch.security."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iso_switch.security import dukpt, dukpt_aes, kcv, mac, pinblock, pinverify, tr31

VECTORS = json.loads(
    (Path(__file__).parent / "data" / "security" / "payment_crypto_vectors.json").read_text()
)
TDES = VECTORS["tdes_dukpt_x9_24_1_2009_A4"]
AES = VECTORS["aes_dukpt_x9_24_3_2017"]
PINS = VECTORS["iso9564_pin_blocks"]


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def test_tdes_dukpt_ipek() -> None:
    assert dukpt.derive_ipek(h(TDES["bdk"]), TDES["initial_ksn"]).hex().upper() == TDES["ipek"]


@pytest.mark.parametrize("tx", TDES["transactions"], ids=lambda tx: tx["ksn"])
def test_tdes_dukpt_transaction_keys_and_pin_blocks(tx: dict[str, str]) -> None:
    bdk = h(TDES["bdk"])
    key = dukpt.derive_transaction_key(bdk, tx["ksn"])
    assert key.hex().upper() == tx["key"]
    assert dukpt.DukptDeriver(bdk).transaction_key(tx["ksn"]) == key
    assert dukpt.derive_transaction_key_from_ipek(h(TDES["ipek"]), tx["ksn"]) == key
    block = pinblock.encrypt_pin_block(dukpt.pin_key(key), TDES["pin"], TDES["pan"], 0)
    assert block.hex().upper() == tx["encrypted_pin_block"]
    assert pinblock.decrypt_pin_block(dukpt.pin_key(key), block, TDES["pan"], 0) == TDES["pin"]


def test_tdes_dukpt_clear_pin_block_and_variants() -> None:
    assert pinblock.encode_iso0(TDES["pin"], TDES["pan"]).hex().upper() == (
        TDES["clear_pin_block_iso0"]
    )
    assert dukpt.PIN_VARIANT.hex().upper() == TDES["variants"]["pin"]
    assert dukpt.MAC_REQUEST_VARIANT.hex().upper() == TDES["variants"]["mac_request"]
    assert dukpt.MAC_RESPONSE_VARIANT.hex().upper() == TDES["variants"]["mac_response"]


def test_tdes_dukpt_counter_1_working_keys_and_macs() -> None:
    wanted = TDES["counter_1_working_keys"]
    key = dukpt.derive_transaction_key(h(TDES["bdk"]), "FFFF9876543210E00001")
    assert dukpt.pin_key(key).hex().upper() == wanted["pin_key"]
    assert dukpt.mac_request_key(key).hex().upper() == wanted["mac_request_key"]
    data = b"4012345678909D987"
    macs = wanted["retail_mac_of_ascii_4012345678909D987"]
    assert mac.retail_mac(dukpt.mac_request_key(key), data).hex().upper().startswith(
        macs["request_first_4_bytes"]
    )
    assert mac.retail_mac(dukpt.mac_response_key(key), data).hex().upper().startswith(
        macs["response_first_4_bytes"]
    )


def test_aes_dukpt_initial_key() -> None:
    initial = dukpt_aes.derive_initial_key(h(AES["bdk"]), AES["initial_key_id"])
    assert initial.hex().upper() == AES["initial_key"]


def test_aes_dukpt_usage_and_algorithm_codes() -> None:
    codes = AES["key_usage_codes"]
    assert f"{dukpt_aes.USAGE_INITIAL_KEY:04X}" == codes["initial_key"]
    assert f"{dukpt_aes.USAGE_INTERMEDIATE:04X}" == codes["intermediate_key"]
    assert f"{dukpt_aes.USAGE_PIN_ENCRYPTION:04X}" == codes["pin_encryption"]
    assert f"{dukpt_aes.USAGE_MAC_GENERATION:04X}" == codes["mac_generation"]
    assert f"{dukpt_aes.USAGE_MAC_VERIFICATION:04X}" == codes["mac_verification"]
    assert f"{dukpt_aes.USAGE_MAC_BOTH:04X}" == codes["mac_both"]
    assert f"{dukpt_aes.USAGE_KEY_ENCRYPTION:04X}" == codes["key_encryption"]
    data = "/".join(f"{u:04X}" for u in (dukpt_aes.USAGE_DATA_ENCRYPT, dukpt_aes.USAGE_DATA_DECRYPT,
                                         dukpt_aes.USAGE_DATA_BOTH))
    assert data == codes["data_request_or_both"]
    algorithms = AES["algorithm_codes"]
    assert f"{dukpt_aes.ALGORITHM_AES128:04X}" == algorithms["AES128"]
    assert f"{dukpt_aes.ALGORITHM_2TDEA:04X}" == algorithms["2TDEA"]
    assert f"{dukpt_aes.ALGORITHM_AES256:04X}" == algorithms["AES256"]
    assert f"{dukpt_aes.ALGORITHM_HMAC:04X}" == algorithms["HMAC"]


def test_aes_dukpt_pin_and_pan_fields() -> None:
    random_part = h(AES["pin_field_iso4"])[8:]
    field = pinblock.encode_iso4_pin_field(AES["pin"], random_part)
    assert field.hex().upper() == AES["pin_field_iso4"]
    assert pinblock.encode_iso4_pan_field(AES["pan"]).hex().upper() == AES["pan_field_iso4"]


@pytest.mark.parametrize("tx", AES["transactions"], ids=lambda tx: str(tx["counter"]))
def test_aes_dukpt_transactions(tx: dict[str, object]) -> None:
    initial = h(AES["initial_key"])
    derivation_id = h(AES["initial_key_id"])[4:]
    counter = int(tx["counter"])  # type: ignore[call-overload]
    derivation = dukpt_aes.derive_derivation_key(initial, derivation_id, counter)
    assert derivation.hex().upper() == tx["derivation_key"]
    pin_key = dukpt_aes.derive_working_key(
        derivation, derivation_id, counter, dukpt_aes.USAGE_PIN_ENCRYPTION,
        dukpt_aes.ALGORITHM_AES128,
    )
    assert pin_key.hex().upper() == tx["pin_key"]
    ksn = AES["initial_key_id"] + f"{counter:08X}"
    assert dukpt_aes.host_working_key(
        h(AES["bdk"]), ksn, dukpt_aes.USAGE_PIN_ENCRYPTION
    ) == pin_key
    random_part = h(AES["pin_field_iso4"])[8:]
    block = pinblock.encrypt_iso4(pin_key, AES["pin"], AES["pan"], random_part)
    assert block.hex().upper() == tx["encrypted_pin_block_iso4"]
    assert pinblock.decrypt_iso4(pin_key, block, AES["pan"]) == AES["pin"]
    if "mac_generation_key" in tx:
        mac_key = dukpt_aes.derive_working_key(
            derivation, derivation_id, counter, dukpt_aes.USAGE_MAC_GENERATION,
            dukpt_aes.ALGORITHM_AES128,
        )
        assert mac_key.hex().upper() == tx["mac_generation_key"]


def test_iso9564_format0() -> None:
    v = PINS["format0"]
    block = pinblock.encode_iso0(v["pin"], v["pan"])
    assert block.hex().upper() == v["clear_block"]
    assert pinblock.decode_iso0(block, v["pan"]) == v["pin"]


def test_iso9564_format3() -> None:
    v = PINS["format3"]
    fill = v["clear_block"]  # fill digits are random; decode the published block
    assert pinblock.decode_iso3(h(fill), v["pan"]) == v["pin"]
    # Rebuild it with the fill recovered from the published block.
    pan_field = int("0000" + v["pan"][:-1][-12:], 16)
    recovered = f"{int(fill, 16) ^ pan_field:016X}"[2 + len(v["pin"]) :]
    assert pinblock.encode_iso3(v["pin"], v["pan"], recovered).hex().upper() == fill


@pytest.mark.parametrize("name", ["format4_ep2", "format4_deterministic"])
def test_iso9564_format4(name: str) -> None:
    v = PINS[name]
    key = h(v["key"])
    assert pinblock.decrypt_iso4(key, h(v["encrypted_block"]), v["pan"]) == v["pin"]
    if name == "format4_deterministic":
        block = pinblock.encrypt_iso4(key, v["pin"], v["pan"], b"\xff" * 8)
        assert block.hex().upper() == v["encrypted_block"]


@pytest.mark.parametrize(
    "vector", VECTORS["iso9797_1_mac_algorithm_3_retail"], ids=lambda v: v["source"][:24]
)
def test_retail_mac(vector: dict[str, object]) -> None:
    data = (
        str(vector["data_ascii"]).encode() if "data_ascii" in vector else h(str(vector["data_hex"]))
    )
    key = h(str(vector["key"]))
    padding = int(vector["padding"])  # type: ignore[call-overload]
    assert mac.retail_mac(key, data, padding).hex().upper() == vector["mac"]
    assert mac.verify_retail_mac(key, data, h(str(vector["mac"])), padding)


@pytest.mark.parametrize(
    "case", VECTORS["aes_cmac_rfc4493"]["cases"], ids=lambda c: str(len(c["message"]))
)
def test_aes_cmac(case: dict[str, str]) -> None:
    key = h(VECTORS["aes_cmac_rfc4493"]["key"])
    assert mac.cmac_aes(key, h(case["message"])).hex() == case["mac"]
    assert mac.verify_cmac_aes(key, h(case["message"]), h(case["mac"]))


def test_key_check_values() -> None:
    values = VECTORS["key_check_values"]
    assert kcv.tdes_kcv(h(values["tdes"]["key"])) == values["tdes"]["kcv"]
    assert kcv.aes_kcv(h(values["aes"]["key"])).startswith(values["aes"]["kcv_cmac_prefix"])


def test_ibm3624_offset() -> None:
    v = VECTORS["pin_verification"]["ibm3624_offset"]
    pvk = h(v["pvk"])
    natural = pinverify.ibm3624_natural_pin(
        pvk, v["validation_data"], 4, v["decimalization_table"]
    )
    assert natural == v["natural_pin"]
    offset = pinverify.ibm3624_offset(
        pvk, v["validation_data"], v["customer_pin"], v["decimalization_table"]
    )
    assert offset == v["offset"]
    assert pinverify.verify_ibm3624_offset(
        pvk, v["validation_data"], v["customer_pin"], v["offset"], v["decimalization_table"]
    )


def test_visa_pvv() -> None:
    v = VECTORS["pin_verification"]["visa_pvv"]
    pvv = pinverify.visa_pvv(h(v["pvk"]), v["pan"], int(v["pvki"]), v["pin"])
    assert pvv == v["pvv"]


@pytest.mark.parametrize("vector", VECTORS["tr31_key_blocks"], ids=lambda v: v["source"][-8:])
def test_tr31_unwrap(vector: dict[str, str]) -> None:
    header, key = tr31.unwrap(h(vector["kbpk"]), vector["key_block"])
    assert key.hex().upper() == vector["key"]
    assert header.version == vector["key_block"][0]
    assert header.key_usage == vector["key_block"][5:7]
