"""Faults of the ledger process (``ledger.worker = "process"``), with real
child processes, over real TCP: a child that cannot start (the switch
answers 91 meanwhile and tries again, with backoff, on later batches), one
that hangs (the wait is bounded; it is killed and replaced; its undecided
requests get 91) and one that dies after committing (its requests get
their stored decisions; nothing is posted twice). And, on the ledger worker
itself, a batch in doubt that mixes a stored decision with a new request.

The faults come from :func:`faulty_ledger_main`, a test-only entry point
for the child: it reads a plan from files in a directory and otherwise runs
the real ``ledger_main``. The switch under test is the production one.
"""

from __future__ import annotations

import functools
import os
import signal
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path

import pytest
import trio

from iso_switch.config import Config
from iso_switch.processor import Outcome, Processor, Request, open_store
from iso_switch.server import Switch, build_hsm
from iso_switch.server.ledger_worker import BatchInDoubt, SubprocessLedger, ledger_main
from tests.server_helpers import (
    ACCOUNT_RICH,
    Client,
    Response,
    Running,
    Sealed,
    Terminal,
    connect,
    make_config,
    start_switch,
)

# Files of the plan, in the plan directory.
FAIL_STARTS = "fail-starts"  # how many starts still to fail (a number)
STARTS = "starts"  # one line appended per start tried
HANG = "hang"  # the next batch with requests never answers
DIE_AFTER_COMMIT = "die-after-commit"  # the next batch commits, then the child exits
# Short, so a hang costs the test little; long enough for a loaded machine's batch.
REPLY_TIMEOUT_S = 5.0
# Bounds a broken test, not the switch's speed.
WAIT_LIMIT_S = 60.0
AMOUNT_MINOR = 1000


def faulty_ledger_main(plan_dir: str, config: Config, conn: Connection) -> None:
    """The ledger child, with the faults ``plan_dir`` asks for."""
    plan = Path(plan_dir)
    with (plan / STARTS).open("a") as starts:
        starts.write(f"{os.getpid()}\n")
    failing = plan / FAIL_STARTS
    left = int(failing.read_text()) if failing.exists() else 0
    if left > 0:
        failing.write_text(str(left - 1))
        conn.send("InjectedStartFault")
        return
    real = Processor.process_batch

    def process_batch(self: Processor, requests: Sequence[Request]) -> list[Outcome]:
        if requests and _take(plan / HANG):
            time.sleep(3600)
        outcomes = real(self, requests)
        if requests and _take(plan / DIE_AFTER_COMMIT):
            os._exit(9)  # committed, never answered
        return outcomes

    Processor.process_batch = process_batch  # type: ignore[method-assign]  # this child only
    ledger_main(config, conn)


def _take(flag: Path) -> bool:
    """Whether ``flag`` was set; clears it, so the next child runs clean."""
    try:
        flag.unlink()
    except FileNotFoundError:
        return False
    return True


async def _start(nursery: trio.Nursery, tmp_path: Path) -> tuple[Running, SubprocessLedger, Path]:
    plan = tmp_path / "plan"
    plan.mkdir()
    config = make_config(tmp_path / "data", ledger__worker="process",
                         ledger__reply_timeout_s=REPLY_TIMEOUT_S)
    hsm = build_hsm(config)
    ledger = SubprocessLedger(config, target=functools.partial(faulty_ledger_main, str(plan)))
    switch = Switch(config, ledger, hsm, handle_signals=False)
    return await start_switch(nursery, tmp_path, switch=switch), ledger, plan


def _balance_minor(tmp_path: Path) -> int:
    store = open_store(tmp_path / "data")
    try:
        account = store.account_by_number(ACCOUNT_RICH)
        assert account is not None
        return account.ledger_balance_minor
    finally:
        store.close()


def _withdrawal(client: Client, terminal: Terminal) -> Sealed:
    return terminal.seal(client.codec, terminal.financial(amount=AMOUNT_MINOR), pin="1234",
                         mac=True)


async def _stop(running: Running, ledger: SubprocessLedger) -> None:
    child = ledger._process
    running.switch.shutdown()
    with trio.fail_after(WAIT_LIMIT_S):
        while child is not None and child.is_alive():
            await trio.sleep(0.05)


async def test_a_child_that_cannot_start_is_tried_again_with_backoff(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    running, ledger, plan = await _start(nursery, tmp_path)
    terminal = Terminal(terminal_id="TERM0001")
    async with connect(running) as client:
        assert (await client.call(_withdrawal(client, terminal)))["39"] == "00"
        before = _balance_minor(tmp_path)
        (plan / FAIL_STARTS).write_text("2")
        pid = ledger.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        # Every request while no child runs is answered 91 (never 96) and
        # posts nothing; later batches try again until one starts.
        answers: list[str] = []
        with trio.fail_after(WAIT_LIMIT_S):
            while not answers or answers[-1] != "00":
                answers.append((await client.call(_withdrawal(client, terminal)))["39"])
        assert answers[0] == "91" and set(answers[:-1]) == {"91"}, answers
        assert len(answers) > 3  # batches came faster than the backoff let starts happen
        starts = (plan / STARTS).read_text().split()
        assert len(starts) == 1 + 3  # the first child, two that failed, the one that runs
        assert ledger.restarts == 1 and ledger.pid not in (None, pid)
        assert _balance_minor(tmp_path) == before - AMOUNT_MINOR  # the last one only
    await _stop(running, ledger)


async def _fault_one_request(client: Client, ledger: SubprocessLedger, plan: Path,
                             fault: str, tmp_path: Path) -> tuple[Sealed, Response, int]:
    """After an approved withdrawal, one more with ``fault`` planned: the
    request, its answer (checked: from a new child), the balance before it."""
    terminal = Terminal(terminal_id="TERM0001")
    assert (await client.call(_withdrawal(client, terminal)))["39"] == "00"
    before = _balance_minor(tmp_path)
    pid = ledger.pid
    (plan / fault).touch()
    request = _withdrawal(client, terminal)
    answer = await client.call(request)
    assert ledger.restarts == 1 and ledger.pid not in (None, pid)
    return request, answer, before


async def test_a_hung_child_is_killed_and_its_undecided_requests_get_91(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    running, ledger, plan = await _start(nursery, tmp_path)
    async with connect(running) as client:
        started = trio.current_time()
        request, answer, before = await _fault_one_request(client, ledger, plan, HANG, tmp_path)
        assert answer["39"] == "91"
        assert trio.current_time() - started >= REPLY_TIMEOUT_S
        assert _balance_minor(tmp_path) == before  # nothing of it was posted
        # Nothing was stored for it: sent again, it is decided now.
        assert (await client.call(request))["39"] == "00"
        assert _balance_minor(tmp_path) == before - AMOUNT_MINOR
    await _stop(running, ledger)


async def test_a_child_that_dies_after_committing_answers_the_stored_decision(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    running, ledger, plan = await _start(nursery, tmp_path)
    async with connect(running) as client:
        request, answer, before = await _fault_one_request(client, ledger, plan,
                                                           DIE_AFTER_COMMIT, tmp_path)
        assert answer["39"] == "00" and answer.get("38")
        assert _balance_minor(tmp_path) == before - AMOUNT_MINOR
        # A repeat gets the same decision, and posts nothing again.
        repeat = await client.call(request)
        decision = ("37", "38", "39")
        assert [repeat[k] for k in decision] == [answer[k] for k in decision]
        assert _balance_minor(tmp_path) == before - AMOUNT_MINOR
    await _stop(running, ledger)


def test_a_batch_in_doubt_gets_stored_decisions_and_nothing_else(tmp_path: Path) -> None:
    """A hung child's batch, read back by its successor: a request whose
    decision was stored (here by an earlier batch: a repeat) gets it, one
    with none gets nothing (the server answers it 91)."""
    plan = tmp_path / "plan"
    plan.mkdir()
    config = make_config(tmp_path / "data", ledger__worker="process",
                         ledger__reply_timeout_s=REPLY_TIMEOUT_S)
    ledger = SubprocessLedger(config, target=functools.partial(faulty_ledger_main, str(plan)))
    try:
        terminal = Terminal()  # TERM0003: no MAC required
        earlier = Request(terminal.financial(), "absent", datetime.now(UTC))
        [stored] = ledger.process_batch([earlier])
        assert stored.response["39"] == "00"
        before = _balance_minor(tmp_path)
        (plan / HANG).touch()
        with pytest.raises(BatchInDoubt) as doubt:
            ledger.process_batch([Request(terminal.financial(), "absent", datetime.now(UTC)),
                                  earlier])
        fresh, repeat = doubt.value.recalled
        assert fresh is None
        assert repeat is not None and repeat.response == stored.response
        assert ledger.restarts == 1
        assert _balance_minor(tmp_path) == before  # nothing of the batch was posted
    finally:
        ledger.close()
