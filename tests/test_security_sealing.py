"""The cardholder sealer: SAF items' DE2/DE14/DE35 round-trip, bound to
their item, and nothing opens (or leaks) under the wrong key or an edit."""

from __future__ import annotations

import secrets

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iso_switch.security.keystore import KeyStore, MasterKey
from iso_switch.security.sealing import SEAL_VERSION, CardholderSealer, SealError

PAN = "5413330089010608"
FIELDS = {"2": PAN, "14": "2912", "35": f"{PAN}=29121010000012345678"}
ITEM = {"issuer_id": "bank-b", "txn_group": "T0001:000123:250101120000", "kind": "reversal"}
KEY = bytes(range(32))


def _no_pan(exc: pytest.ExceptionInfo[SealError]) -> None:
    assert PAN not in str(exc.value)
    assert PAN[6:12] not in str(exc.value)


def test_round_trip_and_format() -> None:
    sealer = CardholderSealer(KEY)
    blob = sealer.seal(FIELDS, **ITEM)
    assert blob[0] == SEAL_VERSION
    assert PAN.encode() not in blob
    assert sealer.open(blob, **ITEM) == FIELDS
    assert sealer.seal(FIELDS, **ITEM) != blob  # a fresh nonce every time


@pytest.mark.parametrize("field", ["issuer_id", "txn_group", "kind"])
def test_another_items_identity_refused(field: str) -> None:
    sealer = CardholderSealer(KEY)
    blob = sealer.seal(FIELDS, **ITEM)
    with pytest.raises(SealError, match="authentication") as exc:
        sealer.open(blob, **{**ITEM, field: ITEM[field] + "x"})
    _no_pan(exc)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_bit_flip_refused(data: st.DataObject) -> None:
    sealer = CardholderSealer(KEY)
    blob = bytearray(sealer.seal(FIELDS, **ITEM))
    bit = data.draw(st.integers(0, len(blob) * 8 - 1))
    blob[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(SealError) as exc:
        sealer.open(bytes(blob), **ITEM)
    _no_pan(exc)


@given(st.binary(max_size=80))
def test_garbage_refused(blob: bytes) -> None:
    with pytest.raises(SealError):
        CardholderSealer(KEY).open(blob, **ITEM)


def test_wrong_key_refused_naming_only_kcvs() -> None:
    blob = CardholderSealer(KEY).seal(FIELDS, **ITEM)
    other = CardholderSealer(secrets.token_bytes(32))
    with pytest.raises(SealError, match="does not hold") as exc:
        other.open(blob, **ITEM)
    _no_pan(exc)
    assert KEY.hex() not in str(exc.value).lower()


def test_rotated_key_opens_old_blobs_and_seals_under_new() -> None:
    new_key = secrets.token_bytes(32)
    old_blob = CardholderSealer(KEY).seal(FIELDS, **ITEM)
    rotated = CardholderSealer(new_key, older_keys=(KEY,))
    assert rotated.open(old_blob, **ITEM) == FIELDS
    new_blob = rotated.seal(FIELDS, **ITEM)
    with pytest.raises(SealError, match="does not hold"):
        CardholderSealer(KEY).open(new_blob, **ITEM)


def test_repr_hides_key() -> None:
    sealer = CardholderSealer(KEY)
    text = repr(sealer) + str(sealer)
    assert KEY.hex() not in text.lower()
    assert sealer.key_id in text


def test_short_key_refused() -> None:
    with pytest.raises(SealError, match="AES-256"):
        CardholderSealer(bytes(16))


def test_from_store_uses_a_d0_aes_key_only() -> None:
    store = KeyStore(None, MasterKey(bytes(32), "test"))
    store.generate("saf-seal", "D0", "A", 32, "B")
    store.generate("mac", "M7", "H", 32, "C")
    sealer = CardholderSealer.from_store(store, "saf-seal")
    assert sealer.key_id == store.info("saf-seal").kcv
    assert sealer.open(sealer.seal(FIELDS, **ITEM), **ITEM) == FIELDS
    with pytest.raises(SealError, match="cannot seal"):
        CardholderSealer.from_store(store, "mac")
    with pytest.raises(SealError, match="cannot seal"):
        CardholderSealer.from_store(store, "missing")
