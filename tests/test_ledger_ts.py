"""``ts`` (the timestamp spelling of every column) is built with isoformat
for speed: it must spell exactly what strftime spelled before, or stored
keys, expiries and retention cut-offs would compare differently."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iso_switch.ledger.model import parse_ts, ts

_OFFSETS = st.integers(min_value=-23 * 60, max_value=23 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)


def _strftime_spelling(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@given(st.datetimes(timezones=st.one_of(st.just(UTC), _OFFSETS)))
def test_ts_spells_what_strftime_spelled(moment: datetime) -> None:
    try:
        expected = _strftime_spelling(moment)
    except OverflowError:
        with pytest.raises(OverflowError):
            ts(moment)
        return
    assert ts(moment) == expected


@given(st.datetimes(min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30),
                    timezones=st.just(UTC)))
def test_ts_round_trips(moment: datetime) -> None:
    assert parse_ts(ts(moment)) == moment


def test_ts_refuses_naive_times() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ts(datetime(2026, 1, 1))
