"""The ledger and admin subcommands against a temporary data directory.

The parser is built from this issue's command modules only, so the test
does not depend on the other groups of ``iso-switch``."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from iso_switch.cli import admin_cmd, ledger_cmd
from iso_switch.processor import ProcessorConfig, open_store, seed_demo
from tests.helpers_ledger import FakeHsm, financial, make_env


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="iso-switch")
    sub = parser.add_subparsers(dest="command", required=True)
    ledger_cmd.register(sub)
    admin_cmd.register(sub)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    from tests.helpers_ledger import START

    store = open_store(tmp_path, ProcessorConfig(synchronous="OFF"))
    seed_demo(store, FakeHsm(), ProcessorConfig(), START)
    store.close()
    return tmp_path


def test_listings_and_check(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = ["--data-dir", str(data_dir)]
    assert run(["ledger", "check", *d]) == 0
    assert "ledger ok" in capsys.readouterr().out
    for group in (["accounts", "list"], ["cards", "list"], ["terminals", "list"],
                  ["merchants", "list"], ["issuer", "list"], ["journal"], ["alerts"],
                  ["review", "list"], ["blacklist", "list"]):
        assert run([*group, *d]) == 0
    out = capsys.readouterr().out
    assert "476173******0010" in out and "4761739001010010" not in out
    assert "TERM0002" in out and "6222020000009999" in out


def test_admin_changes(data_dir: Path, capsys: pytest.CaptureFixture[str],
                       monkeypatch: pytest.MonkeyPatch) -> None:
    d = ["--data-dir", str(data_dir)]
    assert run(["accounts", "create", "6222020000000072", "--opening-minor", "5000", *d]) == 0
    assert run(["accounts", "create", "6222020000000072", *d]) == 1
    assert run(["issuer", "down", *d]) == 0
    assert run(["issuer", "up", "nosuch", *d]) == 1
    assert run(["cards", "state", "1", "lost", *d]) == 0
    assert run(["cards", "reset-pin", "1", *d]) == 0
    assert run(["terminals", "create", "TERM0009", "--merchant", "MERCHANT0000001",
                "--no-mac", *d]) == 0
    assert run(["blacklist", "add", "terminal", "TERM0009", *d]) == 0
    monkeypatch.setenv(admin_cmd.PAN_ENV, "4761739001010010")
    assert run(["blacklist", "add", "pan", *d]) == 0
    assert run(["ledger", "check", *d]) == 0
    store = open_store(data_dir)
    assert store.load_issuers()["onus"].available is False
    assert store.get_card(1).state == "lost"  # type: ignore[union-attr]
    assert ("terminal", "TERM0009") in store.load_blacklist()
    assert store.account_by_number("6222020000000072").ledger_balance_minor == 5000  # type: ignore[union-attr]


def test_review_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = make_env(tmp_path, start=datetime.now(UTC))  # the CLI decides on the real clock
    env.send(financial(env, code="400000", amount=300_000, pin="1234",
                       **{"103": "6222020000000023"}))
    d = ["--data-dir", str(tmp_path)]
    assert run(["review", "list", *d]) == 0
    assert "pending" in capsys.readouterr().out
    assert run(["review", "approve", "1", *d]) == 0
    assert run(["review", "approve", "1", *d]) == 0  # idempotent
    assert run(["review", "decline", "1", *d]) == 1
    assert run(["review", "decline", "99", *d]) == 1
    env.processor.reload()
    assert env.balance("6222020000000023") == (305_000, 305_000)


def test_ledger_init_seeds_through_the_demo_key_store(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    keys = Path(__file__).resolve().parent.parent / "keys"
    d = ["--data-dir", str(tmp_path), "--keys-dir", str(keys), "--demo"]
    assert run(["ledger", "init", *d]) == 0
    assert run(["ledger", "init", *d]) == 0
    assert "already seeded" in capsys.readouterr().out
    store = open_store(tmp_path)
    assert len(store.list_cards()) == 5
    assert store.list_cards()[0].pvd_method == "pvv"


def test_check_allows_a_due_hold_the_switch_has_yet_to_expire(
        data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A hold past its expiry stays pending until the switch's next
    housekeeping: `ledger check` notes it; only one pending past the grace
    (the switch has not run) is a violation."""
    from tests.helpers_ledger import ACCOUNT_RICH, SETTLEMENT

    d = ["--data-dir", str(data_dir)]
    now = datetime.now(UTC)
    store = open_store(data_dir)
    card = store.account_by_number(ACCOUNT_RICH)
    merchant = store.account_by_number(SETTLEMENT)
    assert card is not None and merchant is not None
    with store.write():
        store.hold(card.id, merchant.id, 100, card.currency, now - timedelta(minutes=10), "h1",
                   now - timedelta(days=7))
    capsys.readouterr()
    assert run(["ledger", "check", *d]) == 0
    out = capsys.readouterr().out
    assert "ledger ok" in out and "note: 1 hold(s) past their expiry" in out

    with store.write():
        store.hold(card.id, merchant.id, 100, card.currency,
                   now - ledger_cmd.EXPIRY_GRACE - timedelta(minutes=1), "h2",
                   now - timedelta(days=8))
    store.close()
    assert run(["ledger", "check", *d]) == 1
    out = capsys.readouterr().out
    assert out.count("VIOLATION") == 1 and "pending past its expiry" in out
