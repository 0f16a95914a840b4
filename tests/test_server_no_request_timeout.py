"""``timeouts.no_request_timeout_s`` over real TCP: a client that sends
only keep-alives (zero-length frames) is closed once the bound passes,
though it is never silent long enough for the idle timeout, while a client
sending requests all along keeps its connection."""

from __future__ import annotations

import contextlib
from pathlib import Path

import trio

from tests.server_helpers import Client, Terminal, connect, start_switch

NO_REQUEST_S = 1.0
KEEP_ALIVE_EVERY_S = 0.1
KEEP_ALIVE = b"\x00\x00"
# The requesting client keeps going well past the bound.
REQUESTING_FOR_S = 3 * NO_REQUEST_S


async def _keep_alives(client: Client) -> None:
    """Keep-alives until the switch closes the connection."""
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        while True:
            await client.send_raw(KEEP_ALIVE)
            await trio.sleep(KEEP_ALIVE_EVERY_S)


async def test_keep_alives_alone_do_not_hold_a_connection(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    running = await start_switch(nursery, tmp_path, timeouts__no_request_timeout_s=NO_REQUEST_S)
    terminal = Terminal()
    started = trio.current_time()  # before the switch accepts: its clock starts later
    async with connect(running) as idler, connect(running) as worker:
        closed_after_s: list[float] = []

        async def idle() -> None:
            async with trio.open_nursery() as inner:
                inner.start_soon(_keep_alives, idler)
                assert await idler.closed_by_switch()
                closed_after_s.append(trio.current_time() - started)
                inner.cancel_scope.cancel()

        nursery.start_soon(idle)
        answers = 0
        while trio.current_time() - started < REQUESTING_FOR_S:
            echo = await worker.call(terminal.seal(worker.codec, terminal.network("301")))
            assert echo["39"] == "00"
            answers += 1
            await worker.send_raw(KEEP_ALIVE)
            await trio.sleep(KEEP_ALIVE_EVERY_S)
        assert closed_after_s and closed_after_s[0] >= NO_REQUEST_S
        # The client with requests is still served after three bounds.
        echo = await worker.call(terminal.seal(worker.codec, terminal.network("301")))
        assert echo["39"] == "00" and answers > 3
    running.switch.shutdown()
