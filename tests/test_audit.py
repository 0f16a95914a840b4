"""The audit log: every administrative action of the CLI is recorded with
who (the OS user), what, when, and the state before and after; PANs masked;
the log refuses to be edited or erased."""

from __future__ import annotations

import argparse
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from iso_switch.cli import admin_cmd, audit_cmd, ledger_cmd
from iso_switch.ledger.audit import os_user
from iso_switch.processor import ProcessorConfig, open_store, seed_demo
from tests.helpers_ledger import FakeHsm

PAN = "4761739001010010"


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="iso-switch")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (ledger_cmd, admin_cmd, audit_cmd):
        module.register(sub)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    store = open_store(tmp_path, ProcessorConfig(synchronous="OFF"))
    seed_demo(store, FakeHsm(), ProcessorConfig(), datetime.now(UTC))
    store.close()
    return tmp_path


def _entries(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    capsys.readouterr()
    assert run(["audit", "--json", "--data-dir", str(data_dir)]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_every_admin_action_is_recorded(data_dir: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    d = ["--data-dir", str(data_dir)]
    assert run(["accounts", "create", "6222020000000072", "--opening-minor", "5000", *d]) == 0
    assert run(["cards", "state", "1", "lost", *d]) == 0
    assert run(["cards", "reset-pin", "1", *d]) == 0
    assert run(["terminals", "create", "TERM0001", "--merchant", "MERCHANT0000001",
                "--no-mac", *d]) == 0
    assert run(["merchants", "create", "M2", "--settlement", "6222020000009999",
                "--cash", "6222020000009990", *d]) == 0
    assert run(["issuer", "down", *d]) == 0
    assert run(["accounts", "close", "6222020000000072", *d]) == 0
    monkeypatch.setenv(admin_cmd.PAN_ENV, PAN)
    assert run(["blacklist", "add", "pan", "--reason", "fraud", *d]) == 0
    assert run(["blacklist", "remove", "pan", *d]) == 0
    entries = _entries(data_dir, capsys)
    actions = [e["action"] for e in reversed(entries)]
    assert actions == ["account.create", "card.state", "card.pin_reset", "terminal.save",
                       "merchant.save", "issuer.down", "account.close", "blacklist.add",
                       "blacklist.remove"]
    assert {e["actor"] for e in entries} == {os_user()}
    by_action = {e["action"]: e for e in entries}
    assert by_action["card.state"]["before"] == {"state": "active"}
    assert by_action["card.state"]["after"] == {"state": "lost"}
    assert by_action["card.state"]["target"] == "476173******0010"
    assert by_action["terminal.save"]["before"]["mac_required"] is True  # type: ignore[index]
    assert by_action["terminal.save"]["after"]["mac_required"] is False  # type: ignore[index]
    assert by_action["account.create"]["after"]["opening_minor"] == 5000  # type: ignore[index]
    assert by_action["blacklist.add"]["target"] == "pan:476173******0010"
    text = json.dumps(entries)
    assert PAN not in text


def test_a_refused_action_records_nothing(data_dir: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["cards", "state", "99", "lost", "--data-dir", str(data_dir)]) == 1
    assert _entries(data_dir, capsys) == []


def test_the_log_cannot_be_edited_or_erased(data_dir: Path) -> None:
    assert run(["issuer", "down", "--data-dir", str(data_dir)]) == 0
    store = open_store(data_dir)
    try:
        for statement in ("UPDATE audit_log SET actor = 'someone else'",
                          "DELETE FROM audit_log"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                store.conn.execute(statement)
        assert len(store.list_audit()) == 1
    finally:
        store.close()


def test_the_listing_is_newest_first_and_filters(data_dir: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    d = ["--data-dir", str(data_dir)]
    assert run(["issuer", "down", *d]) == 0
    assert run(["issuer", "up", *d]) == 0
    capsys.readouterr()
    assert run(["audit", "--action", "issuer.up", *d]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and "issuer.up" in lines[0] and "onus" in lines[0]
