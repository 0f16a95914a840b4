"""TR-31 key blocks: round trips for every version and key size, psec as a
second opinion, and tampering of any kind refused."""

from __future__ import annotations

import warnings

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iso_switch.security import KeyBlockError, KeyUsageError, tr31

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import psec

pytestmark = pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")

KBPK_SIZES = {"A": [16, 24], "B": [16, 24], "C": [16, 24], "D": [16, 24, 32]}
blocks = st.sampled_from(["A", "B", "C", "D"]).flatmap(
    lambda v: st.tuples(
        st.just(v),
        st.sampled_from(KBPK_SIZES[v]).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
    )
)
keys = st.one_of(
    st.tuples(st.just("T"), st.sampled_from([16, 24])),
    st.tuples(st.just("A"), st.sampled_from([16, 24, 32])),
).flatmap(lambda t: st.tuples(st.just(t[0]), st.binary(min_size=t[1], max_size=t[1])))
optional = st.lists(
    st.tuples(st.sampled_from(["0N", "0T", "KS", "BI"]),
              st.text(alphabet="0123456789ABCDEF-", max_size=30)),
    max_size=3,
)


@given(version_kbpk=blocks, algorithm_key=keys, opts=optional)
def test_wrap_unwrap_round_trip_and_psec_agrees(
    version_kbpk: tuple[str, bytes], algorithm_key: tuple[str, bytes],
    opts: list[tuple[str, str]],
) -> None:
    version, kbpk = version_kbpk
    algorithm, key = algorithm_key
    header = tr31.KeyBlockHeader(version, "P0", algorithm, "E", "01", "E", tuple(opts))
    block = wrap = tr31.wrap(kbpk, header, key)
    assert len(wrap) == int(wrap[1:5])
    got_header, got_key = tr31.unwrap(kbpk, block)
    assert got_key == key
    assert got_header == header
    _, psec_key = psec.tr31.unwrap(kbpk, block)
    assert psec_key == key


@given(version_kbpk=blocks, key=st.binary(min_size=16, max_size=16))
def test_psec_blocks_unwrap_here(version_kbpk: tuple[str, bytes], key: bytes) -> None:
    version, kbpk = version_kbpk
    block = psec.tr31.wrap(kbpk, f"{version}0000M3TC00E0000", key)
    header, got = tr31.unwrap(kbpk, block)
    assert got == key
    assert (header.key_usage, header.mode_of_use) == ("M3", "C")


@given(position=st.integers(0, 200), version=st.sampled_from(["B", "D"]))
def test_any_changed_character_is_refused(position: int, version: str) -> None:
    kbpk = bytes(range(32 if version == "D" else 24))
    header = tr31.KeyBlockHeader(version, "P0", "T", "E", "00", "N", (("0N", "pin-key"),))
    block = tr31.wrap(kbpk, header, bytes(range(100, 116)))
    index = position % len(block)
    replacement = "0" if block[index] != "0" else "1"
    tampered = block[:index] + replacement + block[index + 1 :]
    with pytest.raises((KeyBlockError, KeyUsageError)):
        tr31.unwrap(kbpk, tampered)


def test_wrong_kbpk_and_truncation_are_refused() -> None:
    kbpk = bytes(range(16))
    block = tr31.wrap(kbpk, tr31.KeyBlockHeader("B", "P0", "T", "E"), bytes(16))
    with pytest.raises(KeyBlockError, match="MAC"):
        tr31.unwrap(bytes(range(1, 17)), block)
    with pytest.raises(KeyBlockError):
        tr31.unwrap(kbpk, block[:-2])
    with pytest.raises(KeyBlockError):
        tr31.unwrap(bytes(32), "D0016P0AE00E0000")
    with pytest.raises(KeyBlockError):
        tr31.unwrap(bytes(31), block)


def test_usage_and_mode_are_enforced() -> None:
    pin_key = tr31.KeyBlockHeader("B", "P0", "T", "E")
    with pytest.raises(KeyUsageError):
        tr31.require_use(pin_key, ("M3",), tr31.MODE_GENERATE)  # a PIN key cannot MAC
    with pytest.raises(KeyUsageError):
        tr31.require_use(pin_key, ("P0",), tr31.MODE_DECRYPT)  # encrypt-only
    tr31.require_use(pin_key, ("P0",), tr31.MODE_ENCRYPT)
    verify_only = tr31.KeyBlockHeader("B", "M3", "T", "V")
    with pytest.raises(KeyUsageError):
        tr31.require_use(verify_only, ("M3",), tr31.MODE_GENERATE)
    with pytest.raises(KeyUsageError):
        tr31.wrap(bytes(16), tr31.KeyBlockHeader("B", "B0", "T", "E"), bytes(16))
