"""Time and failure at the writer: the decision deadline (91, nothing posted)
and a batch whose commit fails (96 for all of it, nothing posted)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import trio

from tests.server_helpers import Terminal, connect, fail_once, start_switch

# Upper bound on how long the stalled batch waits for the test (a safety net
# for a broken test, never reached when it passes).
STALL_LIMIT_S = 30.0


def stall_first_batch(monkeypatch: pytest.MonkeyPatch, processor: object
                      ) -> tuple[threading.Event, threading.Event]:
    """Make the processor's first batch block (a stalled disk): returns
    ``stalled`` (set once that batch is in the pump thread) and ``release``
    (set it to let the batch finish)."""
    original = processor.process_batch  # type: ignore[attr-defined]
    stalled = threading.Event()
    release = threading.Event()
    first = {"batch": True}

    def stalling_first_batch(requests):  # type: ignore[no-untyped-def]
        if first["batch"]:
            first["batch"] = False
            stalled.set()
            release.wait(STALL_LIMIT_S)
        return original(requests)

    monkeypatch.setattr(processor, "process_batch", stalling_first_batch)
    return stalled, release


async def test_deadline_answers_91_and_posts_nothing(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No timing guesses: the first batch blocks (a stalled disk) until the
    test has seen the queued request answered 91, so the order is forced."""
    running = await start_switch(nursery, tmp_path, timeouts__decision_deadline_s=1.0)
    # ``release`` once the test has its 91: the batch then finishes.
    stalled, release = stall_first_batch(monkeypatch, running.switch.processor)
    terminal = Terminal()
    taken = terminal.financial()
    queued = terminal.financial()
    answers: dict[str, str] = {}
    async with connect(running) as first_client, connect(running) as second:

        async def call(client, fields, name):  # type: ignore[no-untyped-def]
            answers[name] = (await client.call(terminal.seal(client.codec, fields)))["39"]

        async with trio.open_nursery() as inner:
            inner.start_soon(call, first_client, taken, "taken")
            await trio.to_thread.run_sync(stalled.wait, STALL_LIMIT_S)
            await call(second, queued, "queued")  # waits out its deadline: 91
            release.set()
        # Taken into a batch: its real decision, even past the deadline.
        assert answers == {"taken": "00", "queued": "91"}
        # The 91 stored nothing: the same request now is decided afresh.
        again = await second.call(terminal.seal(second.codec, queued))
        assert again["39"] == "00"
        retransmitted = await second.call(terminal.seal(second.codec, queued))
        assert retransmitted["37"] == again["37"]
    running.switch.shutdown()


async def test_failed_commit_answers_96_and_posts_nothing(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = await start_switch(nursery, tmp_path)
    fail_once(monkeypatch, running.switch.processor.store, "commit", OSError("disk full"))
    terminal = Terminal()
    request = terminal.financial()
    async with connect(running) as client:
        first = await client.call(terminal.seal(client.codec, request))
        assert first["39"] == "96"
        assert len(first["37"]) == 12  # DE37 on every 02xx response
        # Nothing of that batch is durable: the same key is decided afresh.
        second = await client.call(terminal.seal(client.codec, request))
        assert second["39"] == "00"
        assert second["37"] != first["37"]
    running.switch.shutdown()


async def test_processor_bug_answers_96_and_the_switch_goes_on(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = await start_switch(nursery, tmp_path)
    processor = running.switch.processor
    # A bug that leaves a transaction open, then raises.
    fail_once(monkeypatch, processor, "process_batch", KeyError("a bug"),
              before=processor.store.begin)
    terminal = Terminal()
    async with connect(running) as client:
        first = await client.call(terminal.seal(client.codec, terminal.financial()))
        second = await client.call(terminal.seal(client.codec, terminal.financial()))
    assert (first["39"], second["39"]) == ("96", "00")
    running.switch.shutdown()


async def test_a_request_waiting_for_room_in_the_writer_queue_answers_91(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer queue is bounded: with its one slot held by a stalled
    batch, the next request waits for room, and past its deadline answers
    91 without ever being queued (so nothing is decided or posted)."""
    from iso_switch.server import build_switch
    from tests.server_helpers import make_config

    switch = build_switch(make_config(tmp_path, timeouts__decision_deadline_s=1.0),
                          handle_signals=False)
    switch._queue_slots = trio.Semaphore(1)  # the bound, made small enough to reach
    running = await start_switch(nursery, tmp_path, switch=switch)
    stalled, release = stall_first_batch(monkeypatch, switch.processor)
    terminal = Terminal()
    answers: dict[str, str] = {}
    async with connect(running) as one, connect(running) as two:

        async def call(client, fields, name):  # type: ignore[no-untyped-def]
            answers[name] = (await client.call(terminal.seal(client.codec, fields)))["39"]

        waiting = terminal.financial()
        async with trio.open_nursery() as inner:
            inner.start_soon(call, one, terminal.financial(), "taken")
            await trio.to_thread.run_sync(stalled.wait, STALL_LIMIT_S)
            await call(two, waiting, "waiting")
            release.set()
        assert answers == {"taken": "00", "waiting": "91"}
        # Never queued, never decided: the same request now is decided afresh.
        assert (await two.call(terminal.seal(two.codec, waiting)))["39"] == "00"
    assert switch._queue_slots.value == 1  # every slot came back
    running.switch.shutdown()
