"""The pipe format between the switch and its ledger process: batches of
requests and their outcomes cross as marshal-ed plain values, and come out
equal to what went in (pickle only as a fallback for odd values)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from iso_switch.processor import Outcome, Request
from iso_switch.server.ledger_worker import (
    _dumps,
    _Failed,
    pack_outcomes,
    pack_requests,
    unpack_outcomes,
    unpack_requests,
)

field_keys = st.sampled_from(["t", "2", "3", "4", "7", "11", "35", "41", "42", "52", "62", "64"])
field_values = st.text(max_size=40)
aware = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=8)), timezone(timedelta(hours=-5))]),
)
requests = st.builds(
    Request,
    fields=st.dictionaries(field_keys, field_values),
    mac_status=st.sampled_from(["valid", "invalid", "absent"]),
    received_at=aware,
    listener=st.text(max_size=10),
    pin_zone=st.one_of(st.none(), st.binary(min_size=8, max_size=8)),
)
log_values = st.one_of(st.none(), st.integers(), st.text(max_size=20), st.booleans())
outcomes = st.builds(
    Outcome,
    response=st.dictionaries(field_keys, field_values),
    mac_response=st.booleans(),
    log=st.dictionaries(st.text(max_size=12), log_values),
)


@given(st.lists(requests, max_size=20))
def test_requests_round_trip_exactly(batch: list[Request]) -> None:
    data = pack_requests(batch)
    assert data[:1] == b"m"  # plain values: marshal, not pickle
    back = unpack_requests(data)
    assert back == batch
    # The same instant, now in UTC (the processor's business day needs the instant).
    assert all(r.received_at.tzinfo is UTC for r in back)


@given(st.lists(outcomes, max_size=20))
def test_outcomes_round_trip_exactly(batch: list[Outcome]) -> None:
    assert unpack_outcomes(pack_outcomes(batch)) == batch


def test_a_value_marshal_cannot_write_falls_back_to_pickle() -> None:
    odd = Outcome({"t": "0210", "39": "00"}, True, {"when": datetime(2026, 1, 2, tzinfo=UTC)})
    data = pack_outcomes([odd])
    assert data[:1] == b"p"
    assert unpack_outcomes(data) == [odd]


def test_a_failed_batch_is_told_apart_from_outcomes() -> None:
    assert unpack_outcomes(_dumps(("failed", "commit"))) == _Failed("commit")
    assert unpack_outcomes(pack_outcomes([])) == []
