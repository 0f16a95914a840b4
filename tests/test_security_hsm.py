"""SoftwareHsm as the server and issuer use it: the DUKPT request flow of
interface.md section 4, PIN verification and PIN tries, key usage
enforcement, device binding, and key management through the HSM."""

from __future__ import annotations

import secrets

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iso_switch.security import (
    KeyUsageError,
    KsnError,
    PinBlockError,
    PinVerificationData,
    SoftwareHsm,
    decide_pin_try,
    dukpt,
    mac,
    pinblock,
    tr31,
)

BDK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")  # interface.md section 6 demo BDK
PAN = "4761739001010010"


@pytest.fixture(scope="module")
def hsm() -> SoftwareHsm:
    return SoftwareHsm.from_bdks({"FFFF987654": BDK}, pvk=secrets.token_bytes(16))


def terminal(ksn: str) -> bytes:
    return dukpt.derive_transaction_key(BDK, ksn)


def test_request_mac_verify_and_response_mac(hsm: SoftwareHsm) -> None:
    ksn = "FFFF9876543210E00007"
    key = terminal(ksn)
    message = b"0200" + secrets.token_bytes(120)
    good = mac.retail_mac(dukpt.mac_request_key(key), message)
    assert hsm.verify_request_mac(ksn, message, good)
    assert not hsm.verify_request_mac(ksn, message + b"0", good)
    assert not hsm.verify_request_mac(ksn, message, good[:7])
    assert not hsm.verify_request_mac("FFFF9876543210E00008", message, good)
    response = b"0210" + secrets.token_bytes(50)
    assert hsm.generate_response_mac(ksn, response) == mac.retail_mac(
        dukpt.mac_response_key(key), response
    )


@pytest.mark.parametrize(
    "ksn",
    ["", "nonsense", "FFFF9876543210E0000", "AAAA9876543210E00001", "FFFF9876543210EFFFFF",
     "FFFF9876543210E00000"],
)
def test_request_mac_is_false_never_raises_for_bad_ksns(hsm: SoftwareHsm, ksn: str) -> None:
    assert hsm.verify_request_mac(ksn, b"data", bytes(8)) is False
    with pytest.raises(KsnError):
        hsm.generate_response_mac(ksn, b"data")
    with pytest.raises(KsnError):
        hsm.check_ksn(ksn)


@given(
    pin=st.text("0123456789", min_size=4, max_size=12),
    method=st.sampled_from(["pvv", "ibm3624"]),
    counter=st.integers(1, 5000).filter(lambda c: c.bit_count() <= 10),
)
@settings(max_examples=60)
def test_pin_verification_round_trip(pin: str, method: str, counter: int) -> None:
    hsm = SoftwareHsm.from_bdks({"FFFF987654": BDK}, pvk=bytes(range(16)))
    verification = hsm.make_pin_verification_data(PAN, pin, method)
    assert verification.method == method
    ksn = "FFFF9876543210" + f"{0xE00000 | counter:06X}"
    block = pinblock.encrypt_pin_block(dukpt.pin_key(terminal(ksn)), pin, PAN, 0)
    assert hsm.verify_pin(ksn, block, PAN, verification)
    wrong = ("0" if pin[0] != "0" else "1") + pin[1:]
    bad_block = pinblock.encrypt_pin_block(dukpt.pin_key(terminal(ksn)), wrong, PAN, 0)
    assert not hsm.verify_pin(ksn, bad_block, PAN, verification)
    assert not hsm.verify_pin(ksn, block, "4761739001010028", verification)


def test_pin_block_that_does_not_decode_is_a_wrong_pin(hsm: SoftwareHsm) -> None:
    verification = hsm.make_pin_verification_data(PAN, "1234")
    assert not hsm.verify_pin("FFFF9876543210E00009", secrets.token_bytes(8), PAN, verification)
    assert not hsm.verify_pin("FFFF9876543210E00009", b"short", PAN, verification)
    with pytest.raises(KsnError):
        hsm.verify_pin("FFFF0000003210E00009", bytes(8), PAN, verification)


def test_verification_data_with_an_unknown_method_fails_closed(hsm: SoftwareHsm) -> None:
    ksn = "FFFF9876543210E0000A"
    block = pinblock.encrypt_pin_block(dukpt.pin_key(terminal(ksn)), "1234", PAN, 0)
    assert not hsm.verify_pin(ksn, block, PAN, PinVerificationData("clear", 1, "1234", "pvk"))
    with pytest.raises(PinBlockError):
        hsm.make_pin_verification_data(PAN, "1234", "clear")


def test_pin_tries_three_wrong_then_blocked() -> None:
    tries = 0
    answers = []
    for correct in (False, False, False, True, True):
        decision = decide_pin_try(tries, correct)
        answers.append(decision.response_code)
        tries = decision.wrong_tries
    assert answers == ["55", "55", "55", "75", "75"]
    assert decide_pin_try(2, True) == decide_pin_try(0, True)
    assert decide_pin_try(2, True).wrong_tries == 0
    assert decide_pin_try(2, False).blocked


def test_pin_translation_under_a_stored_zone_key(hsm: SoftwareHsm) -> None:
    store = hsm.key_store
    if "zpk" not in store:
        store.generate("zpk", "P0", "T", 16, "B")
        store.generate("zpk-aes", "P0", "A", 16, "B")
    ksn = "FFFF9876543210E0000B"
    block = pinblock.encrypt_pin_block(dukpt.pin_key(terminal(ksn)), "4321", PAN, 0)
    zpk = store.key_for("zpk", ("P0",), tr31.MODE_DECRYPT)
    out = hsm.translate_pin(ksn, block, PAN, "zpk", 3)
    assert pinblock.decrypt_pin_block(zpk, out, PAN, 3) == "4321"
    out4 = hsm.translate_pin(ksn, block, PAN, "zpk-aes", 4)
    aes = store.key_for("zpk-aes", ("P0",), tr31.MODE_DECRYPT)
    assert pinblock.decrypt_pin_block(aes, out4, PAN, 4) == "4321"
    with pytest.raises(PinBlockError):
        hsm.translate_pin(ksn, block, PAN, "zpk", 1)
    with pytest.raises(PinBlockError):
        hsm.translate_pin(ksn, block, PAN, "zpk", 4)


def test_key_usage_is_enforced_by_the_hsm(hsm: SoftwareHsm) -> None:
    store = hsm.key_store
    if "usage-pin" not in store:
        store.generate("usage-pin", "P0", "T", 16, "E")
        store.generate("usage-mac", "M3", "T", 16, "C")
        store.generate("usage-cmac", "M6", "A", 32, "V")
    with pytest.raises(KeyUsageError):
        hsm.generate_mac("usage-pin", b"data")  # a PIN key cannot MAC
    tag = hsm.generate_mac("usage-mac", b"data")
    assert hsm.verify_mac("usage-mac", b"data", tag)
    assert not hsm.verify_mac("usage-mac", b"datb", tag)
    with pytest.raises(KeyUsageError):
        hsm.generate_mac("usage-cmac", b"data")  # verify-only
    with pytest.raises(KeyUsageError):
        hsm.translate_pin("FFFF9876543210E0000C", bytes(8), PAN, "usage-mac")  # a MAC key
    with pytest.raises(KeyUsageError):
        hsm.export_key("usage-mac", "usage-pin")  # a PIN key cannot wrap keys


def test_import_export_through_a_kek(hsm: SoftwareHsm) -> None:
    store = hsm.key_store
    if "kek" not in store:
        store.generate("kek", "K0", "T", 24, "B")
        store.generate("exportable-mac", "M3", "T", 16, "C", exportable=True)
        store.generate("secret-mac", "M3", "T", 16, "C")
    block = hsm.export_key("exportable-mac", "kek")
    info = hsm.import_key("imported-mac", block, "kek")
    assert info.kcv == hsm.key_info("exportable-mac").kcv
    assert info.usage == "M3"
    with pytest.raises(KeyUsageError):
        hsm.export_key("secret-mac", "kek")
    tampered = block[:-1] + ("0" if block[-1] != "0" else "1")
    with pytest.raises(tr31.KeyBlockError):
        hsm.import_key("never-stored", tampered, "kek")
    assert "never-stored" not in store


def test_two_key_sets_pick_their_own_bdk() -> None:
    other_bdk = secrets.token_bytes(16)
    hsm = SoftwareHsm.from_bdks({"FFFF987654": BDK, "1111111111": other_bdk})
    for bdk, ksn in ((BDK, "FFFF9876543210E00003"), (other_bdk, "1111111111AAAAE00003")):
        key = dukpt.derive_transaction_key(bdk, ksn)
        tag = mac.retail_mac(dukpt.mac_request_key(key), b"msg")
        assert hsm.verify_request_mac(ksn, b"msg", tag)


def test_cipher_contexts_are_per_thread() -> None:
    """MACs (trio thread) and PIN checks (writer thread) never share an
    OpenSSL context: each thread has its own caches."""
    import threading

    from iso_switch.security import _ciphers

    key = bytes(range(16))
    here = _ciphers._tdes_ecb_encryptor(_ciphers.tdes_key24(key))
    there: list[object] = []
    worker = threading.Thread(
        target=lambda: there.append(_ciphers._tdes_ecb_encryptor(_ciphers.tdes_key24(key))))
    worker.start()
    worker.join()
    assert there and there[0] is not here
    assert _ciphers._tdes_ecb_encryptor(_ciphers.tdes_key24(key)) is here


def test_one_hsm_serves_two_threads() -> None:
    """The switch shares one SoftwareHsm between its trio thread (MACs) and
    the writer thread (PINs): concurrent derivations agree with a fresh,
    single-threaded derivation and the caches stay within their bounds."""
    import threading

    hsm = SoftwareHsm.from_bdks({"FFFF987654": BDK}, ksn_cache_entries=64,
                                prefix_cache_entries=128)
    ksns = [f"FFFF9876543210E{device:01X}{counter:04X}" for device in range(4)
            for counter in range(1, 200) if bin(counter).count("1") <= 10]
    results: dict[int, list[bytes]] = {}

    def work(worker: int) -> None:
        order = ksns if worker % 2 == 0 else list(reversed(ksns))
        results[worker] = [hsm.dukpt_keys(k).mac_request for k in order * 2]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected = {k: dukpt.mac_request_key(dukpt.derive_transaction_key(BDK, k)) for k in ksns}
    for worker, keys in results.items():
        order = ksns if worker % 2 == 0 else list(reversed(ksns))
        assert keys == [expected[k] for k in order * 2]


@given(
    pin=st.text("0123456789", min_size=4, max_size=12),
    counter=st.integers(1, 5000).filter(lambda c: c.bit_count() <= 10),
    pan=st.sampled_from([PAN, "4761739001010028"]),
)
@settings(max_examples=60)
def test_a_rewrapped_pin_block_verifies_exactly_as_under_the_dukpt_key(
    pin: str, counter: int, pan: str
) -> None:
    """Edge translation (front) + zone verification (ledger) answers what
    DUKPT verification answers: right PIN, wrong PIN, wrong PAN, garbage."""
    hsm = SoftwareHsm.from_bdks({"FFFF987654": BDK}, pvk=bytes(range(16)))
    hsm.generate_key("zpk", "P0")
    verification = hsm.make_pin_verification_data(PAN, pin)
    ksn = "FFFF9876543210" + f"{0xE00000 | counter:06X}"
    key = dukpt.pin_key(terminal(ksn))
    wrong = ("0" if pin[0] != "0" else "1") + pin[1:]
    blocks = [pinblock.encrypt_pin_block(key, pin, PAN, 0),
              pinblock.encrypt_pin_block(key, wrong, PAN, 0), bytes(8)]
    for block in blocks:
        zone = hsm.rewrap_pin_block(ksn, block.hex().upper())
        assert zone is not None and zone != block
        assert hsm.verify_zone_pin(zone, pan, verification) == hsm.verify_pin(
            ksn, block, pan, verification)
    right = hsm.rewrap_pin_block(ksn, blocks[0].hex())  # lower-case hex is hex too
    assert right is not None and hsm.verify_zone_pin(right, PAN, verification)
    # A short block is a wrong PIN and leaves nothing behind for the next one.
    assert not hsm.verify_zone_pin(b"short", PAN, verification)
    assert hsm.verify_zone_pin(right, PAN, verification)


def test_no_rewrap_without_a_zone_key_or_with_a_bad_block_or_ksn() -> None:
    """Then the caller verifies under the DUKPT key, as without translation."""
    bare = SoftwareHsm.from_bdks({"FFFF987654": BDK}, pvk=bytes(range(16)))
    assert bare.zone_pin_key_name() is None
    assert bare.rewrap_pin_block("FFFF9876543210E00001", "00" * 8) is None
    hsm = SoftwareHsm.from_bdks({"FFFF987654": BDK}, pvk=bytes(range(16)))
    hsm.generate_key("zpk", "P0")
    assert hsm.zone_pin_key_name() == "zpk"
    assert hsm.rewrap_pin_block("FFFF9876543210E00001", "00" * 8) is not None
    for ksn, block in [("FFFF0000003210E00001", "00" * 8),  # unknown key set
                       ("FFFF9876543210E00001", "0G" * 8),  # not hex
                       ("FFFF9876543210E00001", "00" * 7),  # short
                       ("not a ksn", "00" * 8)]:
        assert hsm.rewrap_pin_block(ksn, block) is None
    hsm.generate_key("zpk2", "P0")  # two zone keys: none is chosen
    assert hsm.zone_pin_key_name() is None
