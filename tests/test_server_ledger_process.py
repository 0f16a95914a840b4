"""The processor in its own process (``ledger.worker = "process"``, the
default of ``iso-switch serve``): decisions, PIN checks and MACs work as in
the thread, a ledger process that dies is replaced and its batch resent
(idempotent by key), and shutdown stops it."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import trio

from iso_switch.server.ledger_worker import SubprocessLedger
from tests.server_helpers import Terminal, connect, start_switch


async def test_ledger_process_decides_and_survives_a_kill(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    running = await start_switch(nursery, tmp_path, ledger__worker="process")
    ledger = running.switch.ledger
    assert isinstance(ledger, SubprocessLedger)
    with pytest.raises(AttributeError):
        _ = running.switch.processor  # not in this process
    terminal = Terminal(terminal_id="TERM0001")
    async with connect(running) as client:
        first = terminal.seal(client.codec, terminal.financial(), pin="1234", mac=True)
        answer = await client.call(first)
        assert answer["39"] == "00"
        wrong_pin = terminal.seal(client.codec, terminal.financial(), pin="9999", mac=True)
        assert (await client.call(wrong_pin))["39"] == "55"

        pid = ledger.pid
        assert pid is not None and pid != os.getpid()
        os.kill(pid, signal.SIGKILL)
        after = await client.call(
            terminal.seal(client.codec, terminal.financial(), pin="1234", mac=True))
        assert after["39"] == "00"
        assert ledger.restarts == 1 and ledger.pid != pid
        # What the dead process committed is still there, exactly once.
        again = await client.call(first)
        assert (again["37"], again["38"], again["39"]) == (
            answer["37"], answer["38"], answer["39"])
    child = ledger._process
    running.switch.shutdown()
    with trio.fail_after(30):
        while child is not None and child.is_alive():
            await trio.sleep(0.05)
