"""The processor's hot-path shortcuts decide exactly as the plain lookups
did: the store's folded queries return what the separate ones return, and
the in-memory filter of remembered reversals never hides one, whether this
processor or another process remembered it, across rollbacks and batches."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iso_switch.issuer import pan_hash
from iso_switch.processor import Processor, ProcessorConfig, Request, open_store
from tests.helpers_ledger import (
    ACCOUNT_RICH,
    CARD_POOR,
    CARD_RICH,
    Env,
    FakeHsm,
    financial,
    make_env,
    reversal,
)

_PROCESSOR_FOR_RRN = Processor.__new__(Processor)
_PROCESSOR_FOR_RRN.zone = ZoneInfo("Asia/Shanghai")
_PROCESSOR_FOR_RRN._local_last = (None, datetime.fromtimestamp(0, UTC))


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return make_env(tmp_path)


def test_cached_card_is_the_card(env: Env) -> None:
    store, key = env.store, env.processor.config.pan_hash_key
    for pan in (CARD_RICH, CARD_POOR, CARD_RICH):
        assert store.cached_card_by_hash(pan_hash(key, pan)) == store.card_by_hash(
            pan_hash(key, pan))
    assert store.cached_card_by_hash(pan_hash(key, "4761739999999999")) is None


def test_card_changed_by_another_process_is_seen_by_the_next_batch(
    env: Env, tmp_path: Path,
) -> None:
    assert env.send(financial(env))["39"] == "00"  # the card is cached now
    admin = open_store(tmp_path, ProcessorConfig(synchronous="OFF"))
    card = admin.card_by_hash(pan_hash(env.processor.config.pan_hash_key, CARD_RICH))
    with admin.write():
        admin.set_card_state(card.id, "lost")
    assert env.send(financial(env))["39"] == "41"
    with admin.write():
        admin.set_card_state(card.id, "active")
    assert env.send(financial(env))["39"] == "00"
    admin.close()


def test_pin_tries_written_in_a_failed_request_are_not_kept(
    env: Env, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A wrong PIN writes the card's tries, then the request fails (96) and
    # rolls back: the next request must see the tries as they were (0).
    calls = {"n": 0}
    real = env.store.insert_txn

    def fail_first(txn: object) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("disk trouble")
        real(txn)  # type: ignore[arg-type]

    monkeypatch.setattr(env.store, "insert_txn", fail_first)
    assert env.send(financial(env, pin="0000"))["39"] == "96"
    card = env.store.cached_card_by_hash(
        pan_hash(env.processor.config.pan_hash_key, CARD_RICH))
    assert card.pin_tries == 0
    for _ in range(2):
        assert env.send(financial(env, pin="0000"))["39"] == "55"
    assert env.send(financial(env, pin="1234"))["39"] == "00"  # 2 wrong: not blocked


def test_card_cache_starts_again_past_its_limit(env: Env,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import iso_switch.ledger.records as records

    monkeypatch.setattr(records, "CARD_CACHE_MAX", 1)
    store, key = env.store, env.processor.config.pan_hash_key
    for pan in (CARD_RICH, CARD_POOR, CARD_RICH):
        assert store.cached_card_by_hash(pan_hash(key, pan)) == store.card_by_hash(
            pan_hash(key, pan))
        assert len(store._card_cache) == 1


def test_card_whose_account_is_missing_still_answers_96(env: Env) -> None:
    with env.store.write():
        env.store.conn.execute("DELETE FROM accounts WHERE number = ?", (ACCOUNT_RICH,))
    assert env.send(financial(env))["39"] == "96"


@given(st.lists(st.tuples(st.sampled_from(["2025-03-01", "2025-03-02", "2025-03-03"]),
                          st.integers(-10_000, 10_000), st.integers(-3, 3)), max_size=8),
       st.sampled_from(["2025-03-01", "2025-03-02", "2025-03-04"]))
def test_card_usage_is_daily_usage_then_usual_debit(
    tmp_path_factory: pytest.TempPathFactory, rows: list[tuple[str, int, int]], day: str,
) -> None:
    store = open_store(tmp_path_factory.mktemp("usage"), ProcessorConfig(synchronous="OFF"))
    try:
        with store.write():
            for row_day, amount, count in rows:
                store.add_daily_usage(7, row_day, amount, count)
                store.add_daily_usage(8, row_day, 1, 1)  # another card never counts
        assert store.card_usage(7, day) == (*store.daily_usage(7, day), *store.usual_debit(7))
    finally:
        store.close()


def test_reversal_remembered_by_another_process_declines_the_late_original(
    env: Env, tmp_path: Path,
) -> None:
    # This processor has loaded its filter (empty); another one, on its own
    # connection, remembers a reversal: the next batch must still see it.
    original = financial(env, amount=1_000)
    other = Processor(open_store(tmp_path, ProcessorConfig(synchronous="OFF")), FakeHsm(),
                      env.processor.config, clock=env.clock)
    assert other.process(Request(reversal(env, original), "absent", env.clock.now)) \
        .response["39"] == "00"
    assert env.send(original)["39"] == "05"
    assert env.balance(ACCOUNT_RICH) == (1_000_000, 1_000_000)


def test_reversal_remembered_earlier_in_the_batch_declines_the_original(env: Env) -> None:
    original = financial(env, amount=1_000)
    now = env.clock.now
    outcomes = env.processor.process_batch([
        Request(reversal(env, original), "absent", now), Request(original, "absent", now),
    ])
    assert [o.response["39"] for o in outcomes] == ["00", "05"]


def test_reversal_remembered_before_a_restart_declines_the_original(
    env: Env, tmp_path: Path,
) -> None:
    original = financial(env, amount=1_000)
    assert env.send(reversal(env, original))["39"] == "00"
    restarted = Processor(open_store(tmp_path, ProcessorConfig(synchronous="OFF")),
                          FakeHsm(), env.processor.config, clock=env.clock)
    assert restarted.process(Request(original, "absent", env.clock.now)).response["39"] == "05"


def test_filter_off_past_its_limit_still_decides(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    import iso_switch.processor.core as core

    monkeypatch.setattr(core, "REMEMBERED_FILTER_MAX", 0)
    original = financial(env, amount=1_000)
    assert env.send(reversal(env, original))["39"] == "00"
    assert env.processor._remembered is None
    assert env.send(original)["39"] == "05"
    assert env.send(financial(env, amount=1_000))["39"] == "00"


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31),
                    timezones=st.just(UTC)), st.integers(0, 10**9))
def test_rrn_spells_year_digit_and_day_of_year(moment: datetime, seq: int) -> None:
    processor = _PROCESSOR_FOR_RRN
    local = moment.astimezone(processor.zone)
    expected = f"{local.year % 10}{local.timetuple().tm_yday:03d}{seq % 10**8:08d}"
    assert processor._rrn(seq, moment) == expected
    assert processor._rrn(seq, moment) == expected  # again, from the kept local time
    assert processor._business_day(moment) == local.date().isoformat()
