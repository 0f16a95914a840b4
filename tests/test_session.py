"""Session bookkeeping and the 0800 -> 0810 answer (interface section 3)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iso_switch.protocol import (
    MAX_IN_FLIGHT_PER_CONNECTION,
    InFlightLimitExceeded,
    LocalProtocolError,
    NetworkCode,
    Session,
    SignOnState,
    answer_network_management,
)

ECHO_0800 = {"t": "0800", "7": "0101120000", "11": "000001", "70": "301"}


@pytest.mark.parametrize("code", ["001", "002", "301"])
def test_known_codes_are_approved_and_echoed(code: str) -> None:
    request = {**ECHO_0800, "70": code, "41": "TERM0001"}
    assert answer_network_management(request) == {
        "t": "0810",
        "7": "0101120000",
        "11": "000001",
        "41": "TERM0001",
        "70": code,
        "39": "00",
    }


def test_de41_is_echoed_only_when_present_and_other_fields_ignored() -> None:
    response = answer_network_management({**ECHO_0800, "42": "MERCHANT0000001", "2": "1" * 16})
    assert response == {"t": "0810", "7": "0101120000", "11": "000001", "70": "301", "39": "00"}


def test_unknown_network_code_is_12() -> None:
    response = answer_network_management({**ECHO_0800, "70": "999"})
    assert response["39"] == "12"
    assert response["70"] == "999"


@pytest.mark.parametrize("missing", ["7", "11", "70"])
def test_missing_mandatory_field_is_30(missing: str) -> None:
    request = {k: v for k, v in ECHO_0800.items() if k != missing}
    response = answer_network_management(request)
    assert response["39"] == "30"
    assert missing not in response
    assert answer_network_management({**ECHO_0800, missing: ""})["39"] == "30"


def test_missing_field_wins_over_unknown_code() -> None:
    assert answer_network_management({"70": "999", "7": "0101120000"})["39"] == "30"


@given(st.dictionaries(st.sampled_from(["t", "7", "11", "41", "70", "3"]), st.text(max_size=12)))
def test_answer_is_total_and_pure(fields: dict[str, str]) -> None:
    before = dict(fields)
    response = answer_network_management(fields)
    assert fields == before
    assert response["t"] == "0810"
    assert response["39"] in {"00", "12", "30"}
    assert set(response) <= {"t", "7", "11", "41", "70", "39"}


def test_sign_on_and_sign_off_are_kept_and_block_nothing() -> None:
    session = Session()
    assert session.sign_on_state is SignOnState.NOT_SIGNED_ON
    assert session.can_accept  # no sign-on needed to send requests
    session.network_management({**ECHO_0800, "70": NetworkCode.SIGN_ON, "41": "TERM0001"})
    assert session.sign_on_state is SignOnState.SIGNED_ON
    assert session.terminal_id == "TERM0001"
    session.network_management({**ECHO_0800, "70": NetworkCode.ECHO})
    assert session.sign_on_state is SignOnState.SIGNED_ON
    session.network_management({**ECHO_0800, "70": "002"})
    assert session.sign_on_state is SignOnState.SIGNED_OFF
    assert session.terminal_id == "TERM0001"
    assert session.can_accept  # still accepts after sign-off
    session.begin_request()


def test_rejected_sign_on_changes_nothing() -> None:
    session = Session()
    response = session.network_management({"70": "001", "41": "TERM0001"})
    assert response["39"] == "30"
    assert session.sign_on_state is SignOnState.NOT_SIGNED_ON
    assert session.terminal_id is None


def test_in_flight_is_bounded() -> None:
    session = Session(max_in_flight=3)
    for _ in range(3):
        assert session.can_accept
        session.begin_request()
    assert session.in_flight == 3
    assert not session.can_accept
    with pytest.raises(InFlightLimitExceeded) as info:
        session.begin_request()
    assert isinstance(info.value, LocalProtocolError)
    session.end_request()
    assert session.can_accept
    session.begin_request()
    assert session.requests_total == 4


def test_end_without_begin_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        Session().end_request()


def test_default_bound_and_bad_bound() -> None:
    assert Session().max_in_flight == MAX_IN_FLIGHT_PER_CONNECTION == 64
    with pytest.raises(ValueError):
        Session(max_in_flight=0)


def test_repr_is_short_and_safe() -> None:
    session = Session()
    session.network_management({**ECHO_0800, "70": "001", "41": "TERM0001"})
    assert repr(session) == "Session(signed_on, terminal='TERM0001', in_flight=0/64)"
