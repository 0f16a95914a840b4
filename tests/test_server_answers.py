"""The answer path over real TCP: answers are written straight to the socket
as their batch is decided (no task per request); what the kernel cannot take
at once waits, in order, for a flusher; a peer that vanishes with answers
pending costs only its own connection; with batched logging a batch's
canonical lines are written out with its answers."""

from __future__ import annotations

import contextlib
import io
import json
import socket
import struct
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio

from iso_switch.logs import BatchedStream, configure_logging, flush_logs
from iso_switch.server import app as server_app
from tests.log_helpers import reset_logging
from tests.server_helpers import Running, Terminal, connect, echo_ok, frame, start_switch

# Enough answers (about 150 bytes each) to overflow a small client receive
# buffer and the switch's send buffer while the client is not reading.
PIPELINED = 1500


@pytest.fixture
async def running(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Running]:
    r = await start_switch(nursery, tmp_path)
    yield r
    assert await echo_ok(r)
    r.switch.shutdown()


async def test_answers_that_wait_for_a_slow_reader_arrive_complete_and_in_order(
    running: Running,
) -> None:
    terminal = Terminal()
    async with connect(running) as client:
        client.stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        requests = [terminal.seal(client.codec, terminal.financial(amount=1))
                    for _ in range(PIPELINED)]
        sent = trio.Event()

        async def pour() -> None:
            await client.stream.send_all(b"".join(frame(r.raw) for r in requests))
            sent.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pour)
            # Not reading yet: the in-flight bound stops the switch reading
            # this connection once its answers back up; reading lets it go on.
            await trio.sleep(0.2)
            answers = [await client.receive() for _ in range(PIPELINED)]
            await sent.wait()
    # One connection's batches are decided and answered in arrival order.
    assert [a.fields["11"] for a in answers] == [r.fields["11"] for r in requests]
    assert {a.fields["t"] for a in answers} == {"0210"}
    assert all(len(a.fields["37"]) == 12 for a in answers)
    assert answers[0].fields["39"] == "00"


async def test_a_peer_that_resets_with_answers_pending_costs_only_itself(
    running: Running,
) -> None:
    terminal = Terminal()
    async with connect(running) as client:
        data = b"".join(frame(terminal.seal(client.codec, terminal.financial(amount=1)).raw)
                        for _ in range(200))
        await client.stream.send_all(data)
        # Reset (RST, not FIN) at once: the switch's writes to it fail.
        client.stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with trio.fail_after(15):
        while running.switch.connections:
            await trio.sleep(0.01)
    # The switch goes on serving the same terminal on a new connection.
    async with connect(running) as again:
        answer = await again.call(again_request := terminal.seal(
            again.codec, terminal.financial(amount=1)))
        assert answer["11"] == again_request.fields["11"]
        assert answer["39"] not in {"91", "96"}


@contextlib.contextmanager
def batched_log_capture() -> Iterator[io.StringIO]:
    """Logging as ``iso-switch serve`` configures it, onto a StringIO;
    afterwards nothing of it is left for the next test."""
    stream = io.StringIO()
    configure_logging("json", "info", stream, cache_loggers=False, batched=True)
    try:
        yield stream
    finally:
        reset_logging()


async def test_batched_logging_writes_each_batch_with_its_answers(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ``iso-switch serve`` runs with. With the flush timer out of the
    way, an answer's canonical line is written out with its batch, before
    the client can read the answer; a line logged outside a batch (a
    sign-on) is held until the next flush."""
    monkeypatch.setattr(server_app, "LOG_FLUSH_INTERVAL_S", 3600.0)
    with batched_log_capture() as stream:
        running = await start_switch(nursery, tmp_path)
        terminal = Terminal()
        async with connect(running) as client:
            request = terminal.seal(client.codec, terminal.financial(amount=1), pin="1234",
                                    mac=True)
            answer = await client.call(request)
            assert answer["39"] == "00"
            logged = [json.loads(line) for line in stream.getvalue().splitlines()]
            assert [(e["event"], e["stan"]) for e in logged if e["event"] == "transaction"] == [
                ("transaction", request.fields["11"])]
            assert "476173******0010" in stream.getvalue()

            sign_on = terminal.seal(client.codec, terminal.network("001"))
            assert (await client.call(sign_on))["39"] == "00"
            assert '"network_code": "001"' not in stream.getvalue()  # held
            flush_logs()
            assert '"network_code": "001"' in stream.getvalue()
        running.switch.shutdown()


async def test_batched_logging_writes_other_lines_on_a_timer(running: Running) -> None:
    with batched_log_capture() as stream:
        terminal = Terminal()
        async with connect(running) as client:
            sign_on = terminal.seal(client.codec, terminal.network("001"))
            assert (await client.call(sign_on))["39"] == "00"
            with trio.fail_after(10):  # the timer flushes every 0.1 s
                while '"network_code": "001"' not in stream.getvalue():
                    await trio.sleep(0.02)


def test_a_broken_log_output_never_raises() -> None:
    """The server flushes from trio callbacks: a closed or broken stderr
    must cost log lines, never the process."""
    output = io.StringIO()
    batched = BatchedStream(output)
    batched.write("line\n")
    output.close()
    batched.write_out()  # ValueError from the closed stream: swallowed
    assert batched.lost_writes == 1
