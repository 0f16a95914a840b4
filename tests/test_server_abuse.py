"""Hostile and broken clients over real TCP (interface.md section 1): each is
cut off or answered, the switch keeps serving, and after every test a
well-behaved client on another connection still gets its echo answered.
Also: no full PAN, track 2, PIN block or MAC ever reaches a log line."""

from __future__ import annotations

import contextlib
import io
import random
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from iso_switch.logs import configure_logging
from tests.log_helpers import reset_logging
from tests.server_helpers import (
    BIN_LISTENER,
    CARD_RICH,
    HEX_LISTENER,
    Running,
    Terminal,
    connect,
    echo_ok,
    frame,
    start_switch,
)

FRAME_TIMEOUT_S = 0.5
MAX_CONNECTIONS = 3
LISTENERS = [HEX_LISTENER, BIN_LISTENER]
TRACK2_TAIL = "=28121010000000"


@pytest.fixture
async def running(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Running]:
    r = await start_switch(nursery, tmp_path,
                           timeouts__frame_read_timeout_s=FRAME_TIMEOUT_S,
                           limits__max_connections=MAX_CONNECTIONS)
    yield r
    await _wait_for_connections(r, 0)  # every abusive connection is gone, none leaked
    assert await echo_ok(r, HEX_LISTENER) and await echo_ok(r, BIN_LISTENER)
    r.switch.shutdown()


@pytest.mark.parametrize("listener", LISTENERS)
async def test_oversized_length_header_closes_that_connection(running: Running, listener: str
                                                              ) -> None:
    async with connect(running, listener) as client:
        await client.send_raw(b"\xff\xff" + b"0800" * 100)
        assert await client.closed_by_switch()


@pytest.mark.parametrize("listener", LISTENERS)
async def test_keep_alives_are_ignored(running: Running, listener: str) -> None:
    async with connect(running, listener) as client:
        await client.send_raw(b"\x00\x00" * 5)
        terminal = Terminal()
        response = await client.call(terminal.seal(client.codec, terminal.network("301")))
        assert response["39"] == "00"


@pytest.mark.parametrize("seed", range(4))
async def test_garbage_bytes(running: Running, seed: int) -> None:
    rng = random.Random(seed)
    garbage = bytes(rng.randrange(256) for _ in range(3000))
    async with connect(running, LISTENERS[seed % 2]) as client:
        with contextlib.suppress(trio.BrokenResourceError):  # already cut off
            await client.send_raw(garbage)
        # Whatever the switch makes of it, it ends the connection (an error,
        # or the frame timeout on a length the garbage never completes).
        while (raw := await client.receive_frame()) is not None:
            assert len(raw) >= 4


@pytest.mark.parametrize("listener", LISTENERS)
async def test_unreadable_mti_closes_the_connection(running: Running, listener: str) -> None:
    async with connect(running, listener) as client:
        await client.send(b"\x01\x02garbage that is no message")
        assert await client.closed_by_switch()


@pytest.mark.parametrize("listener", LISTENERS)
@pytest.mark.parametrize(("mti", "response_mti"), [("0200", "0210"), ("0100", "0110"),
                                                    ("0400", "0410"), ("0800", "0810")])
async def test_readable_mti_undecodable_body_gets_30(running: Running, listener: str, mti: str,
                                                     response_mti: str) -> None:
    async with connect(running, listener) as client:
        await client.send(mti.encode() + b"\x00\x01 not a bitmap")
        response = await client.receive()
        assert response["t"] == response_mti and response["39"] == "30"
        assert "64" not in response.fields
        if not mti.startswith("08"):
            assert len(response["37"]) == 12  # DE37 on every 01xx/02xx/04xx response
        # The connection stays usable.
        terminal = Terminal()
        assert (await client.call(terminal.seal(client.codec, terminal.network("301"))))[
            "39"] == "00"


@pytest.mark.parametrize("listener", LISTENERS)
async def test_truncated_frame_then_close(running: Running, listener: str) -> None:
    terminal = Terminal()
    async with connect(running, listener) as client:
        raw = frame(terminal.seal(client.codec, terminal.financial()).raw)
        await client.send_raw(raw[: len(raw) // 2])
    async with connect(running, listener) as client:
        await client.send_raw(raw[:1])


async def test_slow_client_is_cut_off_by_the_frame_timeout(running: Running) -> None:
    terminal = Terminal()
    async with connect(running) as client:
        raw = frame(terminal.seal(client.codec, terminal.financial()).raw)
        sent = 0

        async def dribble() -> None:
            nonlocal sent
            for byte in raw:
                try:
                    await client.send_raw(bytes([byte]))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
                sent += 1
                await trio.sleep(FRAME_TIMEOUT_S / 4)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(dribble)
            assert await client.closed_by_switch()
            nursery.cancel_scope.cancel()
        # Each byte came well within the frame timeout, the frame as a whole did not.
        assert sent < len(raw)


async def test_connections_over_the_cap_are_closed(running: Running) -> None:
    terminal = Terminal()
    async with connect(running) as a, connect(running) as b, connect(running, BIN_LISTENER) as c:
        for client in (a, b, c):
            assert (await client.call(terminal.seal(client.codec, terminal.network("301"))))[
                "39"] == "00"
        async with connect(running) as over:
            with contextlib.suppress(trio.BrokenResourceError):
                await over.send(terminal.seal(over.codec, terminal.network("301")))
            assert await over.closed_by_switch()
        # The ones inside the cap are still served.
        assert (await a.call(terminal.seal(a.codec, terminal.network("301"))))["39"] == "00"
    await _wait_for_connections(running, MAX_CONNECTIONS - 1)


async def _wait_for_connections(running: Running, at_most: int) -> None:
    """The switch notices connections closed by their peer asynchronously."""
    with trio.fail_after(10):
        while running.switch.connections > at_most:
            await trio.sleep(0.01)


async def test_client_that_never_reads_blocks_only_itself(running: Running) -> None:
    terminal = Terminal()
    async with connect(running) as hog:
        hog.stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        echo = frame(terminal.seal(hog.codec, terminal.network("301")).raw)
        flood = echo * 50_000  # about 2 MB of requests, never a response read

        async def pour() -> None:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await hog.stream.send_all(flood)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pour)
            await trio.sleep(0.2)
            for listener in LISTENERS:
                assert await echo_ok(running, listener)
            nursery.cancel_scope.cancel()
    await _wait_for_connections(running, MAX_CONNECTIONS - 1)


async def test_logs_hold_no_pan_track_pin_block_or_mac(nursery: trio.Nursery, tmp_path: Path
                                                       ) -> None:
    stream = io.StringIO()
    configure_logging("json", "debug", stream, cache_loggers=False)
    try:
        running = await start_switch(nursery, tmp_path, timeouts__frame_read_timeout_s=0.5)
        secrets = {CARD_RICH, CARD_RICH + TRACK2_TAIL}
        term1 = Terminal("TERM0001")
        term3 = Terminal("TERM0003", dukpt=term1.dukpt)  # one device: KSNs never repeat
        for listener in LISTENERS:
            async with connect(running, listener) as client:
                sealed = [
                    term1.seal(client.codec, term1.financial(), pin="1234", mac=True),
                    term1.seal(client.codec, term1.financial(), pin="9999", mac=True),
                    term1.seal(client.codec, term1.financial(code="310000", amount=0),
                               pin="1234", mac=True),
                    term3.seal(client.codec, _track2_only(term3.financial()), pin="1234"),
                ]
                for request in sealed:
                    response = await client.call(request)
                    for name in ("52", "64", "128"):
                        if name in request.fields:
                            secrets.add(request.fields[name])
                        if name in response.fields:
                            secrets.add(response[name])
                tampered = term1.seal(client.codec, term1.financial(), mac=True)
                # Change the MAC's last byte (to another hex digit on 8583).
                last = tampered.raw[-1:]
                await client.send(tampered.raw[:-1] + (b"1" if last == b"0" else b"0"))
                secrets.add(tampered.fields["64"])
                assert (await client.receive())["39"] == "63"
                # An undecodable body that carries a PAN and track 2.
                sealed_t2 = term3.seal(client.codec, _track2_only(term3.financial()))
                await client.send(sealed_t2.raw[:-3] + b"\xff")
                assert (await client.receive())["39"] == "30"
                await client.send(b"0200" + b"\xff" * 8 + CARD_RICH.encode())
                assert (await client.receive())["39"] == "30"
            async with connect(running, listener) as client:  # an oversized frame
                await client.send_raw(b"\xff\xff" + CARD_RICH.encode())
                assert await client.closed_by_switch()
        running.switch.shutdown()
        await trio.sleep(0.1)
    finally:
        reset_logging()
    text = stream.getvalue()
    assert '"transaction"' in text and "476173******0010" in text  # the log did run
    leaks = [s for s in secrets if s.upper() in text.upper()]
    assert not leaks


def _track2_only(fields: dict[str, str]) -> dict[str, str]:
    out = dict(fields)
    out["35"] = out.pop("2") + TRACK2_TAIL
    return out
