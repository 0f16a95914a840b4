"""A terminal's refund policy: refunds allowed or not (``58``) and a cap on
what the terminal may refund per business day (``61``). A refund needs no
PIN and counts toward no card limit, so this policy is what bounds the
money a terminal can pay out; the demo terminals keep refunds without a
cap, and a terminal made with the admin CLI has none unless asked."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
import trio

from iso_switch.acquirer import check_refund_cap, check_refund_policy
from iso_switch.codes import ResponseCode, TxnType
from iso_switch.ledger import SqliteLedgerStore, TerminalRow
from iso_switch.ledger.schema import MIGRATIONS
from iso_switch.processor import Processor, ProcessorConfig, open_store, seed_demo
from iso_switch.processor.seed import DEMO_TERMINALS
from iso_switch.server import build_switch
from tests import server_helpers
from tests.helpers_ledger import (
    ACCOUNT_RICH,
    SETTLEMENT,
    START,
    Clock,
    Env,
    FakeHsm,
    financial,
    reversal,
)
from tests.test_audit import run as run_cli  # the admin and audit commands' parser

MERCHANT = "MERCHANT0000001"
REFUND = "200000"
CAP_MINOR = 3_000
NO_REFUNDS = TerminalRow("TERM0007", MERCHANT, False, frozenset({"00", "20"}),
                         refunds_allowed=False)
CAPPED = TerminalRow("TERM0008", MERCHANT, False, frozenset({"00", "20"}),
                     refund_day_minor=CAP_MINOR)


def env_with(tmp_path: Path, *terminals: TerminalRow) -> Env:
    """The demo ledger plus ``terminals``, under a processor that read them."""
    config = ProcessorConfig(synchronous="OFF")
    store = open_store(tmp_path, config)
    clock = Clock(START)
    hsm = FakeHsm()
    seed_demo(store, hsm, config, clock.now)
    with store.write():
        for terminal in terminals:
            store.upsert_terminal(terminal)
    return Env(Processor(store, hsm, config, clock=clock), clock)


def refund(env: Env, terminal: str, amount: int) -> dict[str, str]:
    return financial(env, code=REFUND, amount=amount, terminal=terminal)


# -- the pure checks ----------------------------------------------------------------


def test_the_refund_policy_check_answers_58_for_refunds_only() -> None:
    assert check_refund_policy(False, TxnType.REFUND) is ResponseCode.NOT_PERMITTED_TO_TERMINAL
    assert check_refund_policy(True, TxnType.REFUND) is None
    assert check_refund_policy(False, TxnType.PURCHASE) is None


def test_the_refund_cap_check_answers_61_above_the_cap_only() -> None:
    assert check_refund_cap(TxnType.REFUND, 1_000, 2_000, 3_000) is None  # exactly the cap
    assert check_refund_cap(TxnType.REFUND, 1_001, 2_000, 3_000) is (
        ResponseCode.EXCEEDS_AMOUNT_LIMIT)
    assert check_refund_cap(TxnType.REFUND, 10**9, 10**9, None) is None  # no cap
    assert check_refund_cap(TxnType.PURCHASE, 5_000, 0, 3_000) is None


# -- refunds not allowed ----------------------------------------------------------------


def test_a_refund_on_a_terminal_without_refunds_is_58_and_posts_nothing(
        tmp_path: Path) -> None:
    env = env_with(tmp_path, NO_REFUNDS)
    before = env.balance(ACCOUNT_RICH), env.balance(SETTLEMENT)
    request = refund(env, NO_REFUNDS.id, 2_000)
    first = env.send(request)
    assert first["39"] == "58" and "38" not in first
    assert (env.balance(ACCOUNT_RICH), env.balance(SETTLEMENT)) == before
    stored = env.store.journal(1)[0]
    assert (stored.rc, stored.state, stored.effective_minor) == ("58", "declined", 0)
    again = env.send(request)  # a repeat: the stored decision, not a new one
    assert again == first
    assert env.store.count_txns() == 1
    # The same terminal still does purchases, and the demo terminal refunds.
    assert env.send(financial(env, terminal=NO_REFUNDS.id))["39"] == "00"
    assert env.send(refund(env, "TERM0003", 2_000))["39"] == "00"


def test_a_refused_terminal_answers_58_before_the_card_is_looked_at(tmp_path: Path) -> None:
    env = env_with(tmp_path, NO_REFUNDS)
    unknown_card = "4761739001010069"  # on file nowhere: the card's 14 comes later
    assert env.send(financial(env, code=REFUND, pan=unknown_card,
                              terminal=NO_REFUNDS.id))["39"] == "58"


# -- the daily cap -----------------------------------------------------------------------


def test_refunds_up_to_the_cap_are_approved_and_the_one_crossing_it_is_61(
        tmp_path: Path) -> None:
    env = env_with(tmp_path, CAPPED)
    assert env.send(refund(env, CAPPED.id, 1_000))["39"] == "00"
    assert env.send(refund(env, CAPPED.id, 1_500))["39"] == "00"
    before = env.balance(ACCOUNT_RICH)
    crossing = refund(env, CAPPED.id, 501)
    assert env.send(crossing)["39"] == "61"
    assert env.balance(ACCOUNT_RICH) == before
    assert env.send(crossing)["39"] == "61"  # a repeat is the same answer, counted once
    assert env.send(refund(env, CAPPED.id, 500))["39"] == "00"  # exactly the cap
    assert env.send(refund(env, CAPPED.id, 1))["39"] == "61"
    assert env.store.terminal_refunds(CAPPED.id, "2025-03-01") == CAP_MINOR
    # Other terminals' refunds and this terminal's purchases are not capped by it.
    assert env.send(refund(env, "TERM0003", 9_000))["39"] == "00"
    assert env.send(financial(env, terminal=CAPPED.id, amount=9_000))["39"] == "00"


def test_a_reversed_refund_gives_its_amount_back_to_the_cap(tmp_path: Path) -> None:
    env = env_with(tmp_path, CAPPED)
    first = refund(env, CAPPED.id, 2_000)
    assert env.send(first)["39"] == "00"
    assert env.send(refund(env, CAPPED.id, 1_000))["39"] == "00"
    back = reversal(env, first)
    assert env.send(back)["39"] == "00"
    assert env.send(back)["39"] == "00"  # a repeated reversal gives back nothing more
    assert env.store.terminal_refunds(CAPPED.id, "2025-03-01") == 1_000
    partial = refund(env, CAPPED.id, 2_000)
    assert env.send(partial)["39"] == "00"
    assert env.send(refund(env, CAPPED.id, 1))["39"] == "61"
    # A partial reversal (DE95: 500 of the 2000 stays) gives back 1500.
    assert env.send(reversal(env, partial, actual=500))["39"] == "00"
    assert env.store.terminal_refunds(CAPPED.id, "2025-03-01") == 1_500
    assert env.send(refund(env, CAPPED.id, 1_500))["39"] == "00"
    assert env.send(refund(env, CAPPED.id, 1))["39"] == "61"


def test_the_cap_is_per_business_day_in_the_switchs_time_zone(tmp_path: Path) -> None:
    """START is 12:00 in Asia/Shanghai: the business day ends at 16:00 UTC."""
    env = env_with(tmp_path, CAPPED)
    yesterday = refund(env, CAPPED.id, CAP_MINOR)
    assert env.send(yesterday)["39"] == "00"
    env.clock.advance(timedelta(hours=11, minutes=59, seconds=59))  # 23:59:59 local
    assert env.send(refund(env, CAPPED.id, 1))["39"] == "61"
    env.clock.advance(timedelta(seconds=1))  # 00:00:00 local, still 2025-03-01 in UTC
    assert env.send(refund(env, CAPPED.id, 2_000))["39"] == "00"
    # Reversing yesterday's refund gives back to yesterday, not to today.
    assert env.send(reversal(env, yesterday))["39"] == "00"
    assert env.store.terminal_refunds(CAPPED.id, "2025-03-01") == 0
    assert env.store.terminal_refunds(CAPPED.id, "2025-03-02") == 2_000
    assert env.send(refund(env, CAPPED.id, 1_001))["39"] == "61"


def test_an_uncapped_terminal_counts_its_refunds_so_a_later_cap_sees_the_day(
        tmp_path: Path) -> None:
    env = env_with(tmp_path)
    assert env.send(refund(env, "TERM0003", 4_000))["39"] == "00"
    terminal = env.processor.terminals["TERM0003"]
    with env.store.write():
        env.store.upsert_terminal(dataclasses.replace(terminal, refund_day_minor=5_000))
    env.processor.reload()
    assert env.send(refund(env, "TERM0003", 1_001))["39"] == "61"
    assert env.send(refund(env, "TERM0003", 1_000))["39"] == "00"


# -- the demo terminals, the migration ----------------------------------------------------


def test_the_demo_terminals_refund_without_a_cap() -> None:
    assert all(t.refunds_allowed and t.refund_day_minor is None for t in DEMO_TERMINALS)


def test_terminals_of_an_older_ledger_keep_refunds_without_a_cap(tmp_path: Path) -> None:
    """The migration changes no deployed terminal's answers, and counts the
    refunds already in the journal toward the day."""
    path = tmp_path / "ledger.db"
    conn = sqlite3.connect(path)
    version = next(n for n, m in enumerate(MIGRATIONS) if "refunds_allowed" in m)
    for migration in MIGRATIONS[:version]:
        conn.executescript(migration)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.execute("INSERT INTO terminals VALUES ('TERMOLD1', 'M', 1, '00,20')")
    txn = ("INSERT INTO txns (key, content, mti, rc, rrn, auth_code, de54, created_at, terminal,"
           " stan, pan_masked, code, amount_minor, currency, state, effective_minor, business_day)"
           " VALUES (?, x'', ?, '00', '', '', '', '', 'TERMOLD1', '', '', ?, ?, 156, ?, ?, ?)")
    conn.executemany(txn, [
        ("k1", "0200", "200000", 700, "posted", 700, "2025-03-01"),
        ("k2", "0200", "200000", 900, "reversed", 0, "2025-03-01"),  # reversed: gives back
        ("k3", "0400", "200000", 900, "reversal", 900, "2025-03-01"),  # the reversal itself
        ("k4", "0200", "000000", 500, "posted", 500, "2025-03-01"),  # a purchase
    ])
    conn.commit()
    conn.close()
    migrated = SqliteLedgerStore(path, synchronous="OFF")
    assert migrated.migrate() == len(MIGRATIONS)
    terminal = migrated.load_terminals()["TERMOLD1"]
    assert terminal.refunds_allowed and terminal.refund_day_minor is None
    assert migrated.terminal_refunds("TERMOLD1", "2025-03-01") == 700
    migrated.close()


# -- the admin CLI ------------------------------------------------------------------


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    store = open_store(tmp_path, ProcessorConfig(synchronous="OFF"))
    seed_demo(store, FakeHsm(), ProcessorConfig(), START)
    store.close()
    return tmp_path


def _terminal(data_dir: Path, terminal_id: str) -> TerminalRow:
    store = open_store(data_dir, ProcessorConfig(synchronous="OFF"))
    try:
        return store.load_terminals()[terminal_id]
    finally:
        store.close()


def test_a_terminal_created_with_the_cli_refunds_nothing(data_dir: Path) -> None:
    """The regression: a CLI-made terminal used to accept refunds without
    PIN or limit."""
    assert run_cli(["terminals", "create", "TERM0009", "--merchant", MERCHANT, "--no-mac",
                    "--data-dir", str(data_dir)]) == 0
    terminal = _terminal(data_dir, "TERM0009")
    assert not terminal.refunds_allowed and TxnType.REFUND in terminal.allowed_codes
    config = ProcessorConfig(synchronous="OFF")
    store = open_store(data_dir, config)
    clock = Clock(START)
    env = Env(Processor(store, FakeHsm(), config, clock=clock), clock)
    assert env.send(refund(env, "TERM0009", 1_000))["39"] == "58"
    assert env.send(financial(env, terminal="TERM0009"))["39"] == "00"
    store.close()


def test_the_cli_sets_the_policy_and_audits_it(data_dir: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    d = ["--data-dir", str(data_dir)]
    create = ["terminals", "create", "TERM0009", "--merchant", MERCHANT]
    assert run_cli([*create, "--refunds-per-day-minor", "50000", *d]) == 0
    assert _terminal(data_dir, "TERM0009").refund_day_minor == 50_000
    assert run_cli([*create, "--refunds-uncapped", *d]) == 0
    uncapped = _terminal(data_dir, "TERM0009")
    assert uncapped.refunds_allowed and uncapped.refund_day_minor is None
    assert run_cli([*create, *d]) == 0  # saving again without a policy: no refunds
    assert not _terminal(data_dir, "TERM0009").refunds_allowed
    capsys.readouterr()
    assert run_cli(["terminals", "list", *d]) == 0
    listing = capsys.readouterr().out
    assert "TERM0009" in listing and "refunds no" in listing and "refunds uncapped" in listing
    assert run_cli(["audit", "--json", "--action", "terminal.save", *d]) == 0
    saves = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    last, middle = saves[0], saves[1]  # newest first
    assert (middle["before"]["refunds_allowed"], middle["before"]["refund_day_minor"]) == (
        True, 50_000)
    assert (middle["after"]["refunds_allowed"], middle["after"]["refund_day_minor"]) == (
        True, None)
    assert (last["after"]["refunds_allowed"], last["after"]["refund_day_minor"]) == (
        False, None)


@pytest.mark.parametrize("value", ["0", "-5", "ten"])
def test_the_cli_refuses_a_cap_that_is_not_a_positive_amount(
        data_dir: Path, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        run_cli(["terminals", "create", "TERM0009", "--merchant", MERCHANT,
                 "--refunds-per-day-minor", value, "--data-dir", str(data_dir)])
    assert "refunds-per-day-minor" in capsys.readouterr().err


def test_the_cli_refuses_both_a_cap_and_no_cap(data_dir: Path) -> None:
    with pytest.raises(SystemExit):
        run_cli(["terminals", "create", "TERM0009", "--merchant", MERCHANT,
                 "--refunds-per-day-minor", "100", "--refunds-uncapped",
                 "--data-dir", str(data_dir)])


# -- over real TCP ------------------------------------------------------------------------


async def test_refund_policy_end_to_end(nursery: trio.Nursery, tmp_path: Path) -> None:
    switch = build_switch(server_helpers.make_config(tmp_path), handle_signals=False)
    store = switch.processor.store
    assert isinstance(store, SqliteLedgerStore)
    with store.write():
        store.upsert_terminal(NO_REFUNDS)
        store.upsert_terminal(CAPPED)
    switch.processor.reload()
    running = await server_helpers.start_switch(nursery, tmp_path, switch)
    refused, capped = (server_helpers.Terminal(NO_REFUNDS.id),
                       server_helpers.Terminal(CAPPED.id))
    async with server_helpers.connect(running) as client:
        def sealed(terminal: server_helpers.Terminal, amount: int) -> server_helpers.Sealed:
            return terminal.seal(client.codec, terminal.financial(code=REFUND, amount=amount))

        no = await client.call(sealed(refused, 1_000))
        first = sealed(capped, 2_000)
        ok = await client.call(first)
        over = await client.call(sealed(capped, 1_001))
        back = await client.call(capped.seal(client.codec, capped.follow_up("0400", first.fields)))
        after = await client.call(sealed(capped, 3_000))
    assert (no["39"], ok["39"], over["39"], back["39"], after["39"]) == (
        "58", "00", "61", "00", "00")
    running.switch.shutdown()
