"""``iso-switch saf list`` and ``saf retry`` against a temporary data
directory holding store-and-forward items in every state: the formats, the
filters, masked PANs only, and a retry recorded in the audit log."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from iso_switch.cli import main
from iso_switch.ledger import NewSafItem, SafKind
from iso_switch.processor import ProcessorConfig, open_store
from tests.helpers_ledger import CNY
from tests.helpers_ledger import LEDGER_NOW as NOW

PAN = "5413330089604111"
MASKED = "541333******4111"


def _item(group: str, issuer: str = "bank-b") -> NewSafItem:
    return NewSafItem(
        issuer, group, SafKind.REVERSAL, "0420", "000042", "0301120000", "506012000001",
        12_345, CNY, MASKED, b"sealed", (("3", "000000"), ("41", "TERM0001")))


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """Items 1 queued, 2 dead, 3 refused (bank-b), 4 queued (bank-c)."""
    store = open_store(tmp_path, ProcessorConfig(synchronous="OFF"))
    with store.write():
        ids = [store.enqueue_saf(_item(f"t{n}"), NOW) for n in (1, 2, 3)]
        store.enqueue_saf(_item("t4", "bank-c"), NOW)
        store.claim_saf_items("bank-b", "n", NOW, 3, 5.0)
        store.saf_retry(ids[0], "n", "", NOW, 10.0)
        store.saf_retry(ids[1], "n", "91", NOW, 10.0)
        store.saf_refused(ids[2], "n", "12", NOW)
        store.expire_saf_items("bank-b", NOW + timedelta(hours=72), 72)  # 1 and 2: dead
        store.requeue_saf_item(ids[0], NOW)
    store.close()
    return tmp_path


def _listed(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, object]]:
    assert main(["saf", "list", "--json", *argv]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_saf_list_shows_the_open_items_or_the_dead_or_the_refused(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = ("--data-dir", str(data_dir))
    assert [(i["id"], i["state"]) for i in _listed(capsys, *d)] == [
        (1, "queued"), (4, "queued")]
    assert [i["id"] for i in _listed(capsys, "--dead", *d)] == [2]
    refused = _listed(capsys, "--refused", *d)
    assert [(i["id"], i["last_rc"], i["pan"]) for i in refused] == [(3, "12", MASKED)]
    assert [i["id"] for i in _listed(capsys, "--issuer", "bank-c", *d)] == [4]
    assert set(refused[0]) >= {"issuer", "kind", "mti", "stan", "rrn", "amount_minor",
                               "attempts", "next_attempt_at"}
    assert main(["saf", "list", *d]) == 0
    table = capsys.readouterr().out
    assert "bank-c" in table and MASKED in table and "123.45" in table
    assert PAN not in table and "sealed" not in table
    with pytest.raises(SystemExit):
        main(["saf", "list", "--dead", "--refused", *d])


def test_saf_retry_requeues_a_dead_or_refused_item_and_audits_it(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = ("--data-dir", str(data_dir))
    assert main(["saf", "retry", "3", *d]) == 0
    assert "re-queued" in capsys.readouterr().out
    assert main(["saf", "retry", "3", *d]) == 1  # queued now: nothing to re-queue
    assert main(["saf", "retry", "99", *d]) == 1
    assert "error" in capsys.readouterr().out
    assert [i["id"] for i in _listed(capsys, *d)] == [1, 3, 4]
    store = open_store(data_dir)
    try:
        entries = store.list_audit(10, "saf.retry")
    finally:
        store.close()
    assert len(entries) == 1
    assert (entries[0].target, entries[0].before["state"], entries[0].after["state"]) == (
        "saf:3", "refused", "queued")
    assert PAN not in json.dumps([entries[0].before, entries[0].after])


@pytest.mark.parametrize("action", ["list", "retry"])
def test_each_saf_action_has_help(action: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["saf", action, "--help"])
    assert exited.value.code == 0
    assert "dead" in capsys.readouterr().out
