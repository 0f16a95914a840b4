"""DUKPT derivation (the cached host path equals the plain one for any
counter order), KSN checks, and the replay window of interface.md section 4
against a straightforward model."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iso_switch.security import (
    REPLAY_WINDOW_COUNTERS,
    KsnError,
    ReplayState,
    check_replay,
    dukpt,
    dukpt_aes,
    parse_aes_ksn,
    parse_ksn,
)

BDK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
valid_counters = st.integers(1, (1 << 21) - 1).filter(lambda c: c.bit_count() <= 10)


def ksn_of(device: int, counter: int) -> str:
    return "FFFF987654" + f"{(device << 21) | counter:010X}"


@given(st.lists(st.tuples(st.integers(0, 3), valid_counters), min_size=1, max_size=12))
def test_prefix_cache_equals_plain_derivation(requests: list[tuple[int, int]]) -> None:
    deriver = dukpt.DukptDeriver(BDK, cache_entries=8)
    for device, counter in requests:
        ksn = ksn_of(device, counter)
        assert deriver.transaction_key(ksn) == dukpt.derive_transaction_key(BDK, ksn)


def test_sequential_counters_fill_the_cache_within_its_bound() -> None:
    deriver = dukpt.DukptDeriver(BDK, cache_entries=16)
    for counter in range(1, 200):
        deriver.transaction_key(ksn_of(1, counter))
    assert deriver.cached_prefixes <= 16


def test_ksn_parsing() -> None:
    ksn = parse_ksn("ffff9876543210e00001")
    assert ksn.key_set_id == "FFFF987654"
    assert ksn.device_id == "3210E0"
    assert ksn.counter == 1
    assert ksn.device_key == "FFFF9876543210E0"
    assert str(ksn) == "FFFF9876543210E00001"
    assert parse_ksn("FFFF9876543210EFF800").counter == 0x0FF800


@pytest.mark.parametrize(
    "text",
    ["", "FFFF9876543210E0000", "FFFF9876543210E000011", "FFFF9876543210E0000G",
     "FFFF9876543210E00000", " FFFF9876543210E0001"],
)
def test_malformed_ksns_are_refused(text: str) -> None:
    with pytest.raises(KsnError):
        parse_ksn(text)


@given(st.integers(1, (1 << 21) - 1).filter(lambda c: c.bit_count() > 10))
def test_too_many_counter_bits_is_refused(counter: int) -> None:
    with pytest.raises(KsnError, match="one-bits"):
        parse_ksn(ksn_of(5, counter))
    with pytest.raises(KsnError):
        dukpt.DukptDeriver(BDK).transaction_key(ksn_of(5, counter))


def test_aes_ksn_parsing_and_counter_rules() -> None:
    ksn = parse_aes_ksn("123456789012345600000001")
    assert (ksn.bdk_id, ksn.derivation_id, ksn.counter) == ("12345678", "90123456", 1)
    assert str(ksn) == "123456789012345600000001"
    with pytest.raises(KsnError):
        parse_aes_ksn("1234567890123456" + "0001FFFF")  # 17 one-bits
    with pytest.raises(KsnError):
        parse_aes_ksn("1234567890123456" + "00000000")
    with pytest.raises(KsnError):
        dukpt_aes.derive_derivation_key(bytes(16), bytes(4), 0x0001FFFF)


def test_aes_dukpt_256_bit_keys_are_derived() -> None:
    key = dukpt_aes.host_working_key(
        bytes(range(32)), "123456789012345600000003", dukpt_aes.USAGE_MAC_GENERATION,
        dukpt_aes.ALGORITHM_AES256,
    )
    assert len(key) == 32


def test_data_keys_differ_from_other_variants() -> None:
    key = dukpt.derive_transaction_key(BDK, "FFFF9876543210E00001")
    derived = {dukpt.pin_key(key), dukpt.mac_request_key(key), dukpt.mac_response_key(key),
               dukpt.data_request_key(key), dukpt.data_response_key(key)}
    assert len(derived) == 5


# --- replay window -----------------------------------------------------------


def model_accepts(accepted: set[int], counter: int) -> bool:
    """interface.md section 4, literally."""
    if counter in accepted:
        return False
    return not (accepted and counter < max(accepted) - REPLAY_WINDOW_COUNTERS)


@given(st.lists(st.integers(1, 400), max_size=80))
def test_replay_window_matches_the_specification(counters: list[int]) -> None:
    state: ReplayState | None = None
    accepted: set[int] = set()
    for counter in counters:
        expected = model_accepts(accepted, counter)
        ok, new_state = check_replay(state, counter)
        assert ok == expected
        if ok:
            accepted.add(counter)
        else:
            assert new_state == state
        state = new_state
        assert ReplayState.from_tuple(state.to_tuple()) == state


def test_replay_window_edges() -> None:
    ok, state = check_replay(None, 100)
    assert ok
    assert check_replay(state, 100) == (False, state)
    assert check_replay(state, 36)[0]  # exactly 64 below: inside the window
    assert not check_replay(state, 35)[0]  # 65 below: a replay
    ok, later = check_replay(state, 99)
    assert ok
    assert not check_replay(later, 99)[0]
    assert check_replay(later, 1000)[0]


def test_replay_state_fits_a_signed_64_bit_column() -> None:
    state: ReplayState | None = None
    for counter in range(1, 80):
        state = check_replay(state, counter)[1]
    assert state is not None
    highest, bitmap = state.to_tuple()
    assert -(1 << 63) <= bitmap < (1 << 63)
    assert ReplayState.from_tuple((highest, bitmap)) == state


def test_terminal_side_skips_counters_with_too_many_bits_and_matches_the_host() -> None:
    terminal = dukpt.TerminalDukpt.from_bdk(BDK, "FFFF9876543210E00000", counter=0x3FE)
    seen = []
    for _ in range(5):
        ksn, keys = terminal.next_transaction()
        counter = parse_ksn(ksn).counter
        assert counter.bit_count() <= 10
        assert keys.pin == dukpt.pin_key(dukpt.derive_transaction_key(BDK, ksn))
        seen.append(counter)
    assert seen == sorted(seen) and 0x3FF in seen
    exhausted = dukpt.TerminalDukpt.from_bdk(BDK, "FFFF9876543210E00000", counter=0x1FF800)
    with pytest.raises(KsnError):
        exhausted.next_transaction()
