"""``iso-switch-load`` against a live switch (port 0) and load-card provisioning."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from iso_switch.issuer import pan_valid
from simulators._provision import load_card_pan, provision_cards
from simulators.load import main, parse_mix
from tests.server_helpers import start_switch

CARDS = 50
# What the default mix may answer on fresh load cards: approvals only.
EXPECTED_CODES = {"00"}


@given(st.integers(0, 10**8 - 1))
def test_load_pans_are_luhn_valid_on_us_and_not_demo_cards(index: int) -> None:
    pan = load_card_pan(index)
    assert len(pan) == 16 and pan.startswith("4761738") and pan_valid(pan)


def test_parse_mix() -> None:
    assert parse_mix("purchase=70,balance=20,withdraw=10") == {
        "purchase": 70, "balance": 20, "withdraw": 10}
    for bad in ("bogus=1", "purchase=x", "purchase=0", "purchase=-1"):
        with pytest.raises(Exception):  # noqa: B017 (argparse's ArgumentTypeError)
            parse_mix(bad)


async def _load(port: int, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    status = await trio.to_thread.run_sync(main, ["--port", str(port), *argv], out)
    return status, out.getvalue()


def test_provisioning_is_idempotent(tmp_path: Path) -> None:
    first = provision_cards(tmp_path, 5)
    again = provision_cards(tmp_path, 7)
    assert (first.created, first.existing) == (5, 0)
    assert (again.created, again.existing) == (2, 5)


async def test_load_run_counts_every_request_once(nursery: trio.Nursery,
                                                  tmp_path: Path) -> None:
    data = tmp_path / "switch"
    provision_cards(data, CARDS)
    running = await start_switch(nursery, data)
    state = tmp_path / "load-state.json"
    common = ("--terminals", "5", "--cards", str(CARDS), "--state", str(state), "--seed", "7",
              "--no-progress", "--json")

    status, out = await _load(running.port(), *common, "--count", "100")
    result = json.loads(out)
    assert status == 0
    assert result["sent"] == 100 == sum(result["response_codes"].values())
    assert set(result["response_codes"]) <= EXPECTED_CODES, result["response_codes"]
    assert result["mode"] == "closed-loop" and result["terminals"] == 5
    assert result["mac_bad"] == 0 and result["timeouts"] == result["errors"] == 0
    assert set(result["latency_ms"]) == {"p50", "p90", "p99", "p99_9", "max", "mean"}
    assert result["latency_ms"]["p50"] <= result["latency_ms"]["p99"] <= \
        result["latency_ms"]["max"]
    assert result["tps"] > 0
    assert sum(sum(codes.values()) for codes in result["by_kind"].values()) == 100
    assert "withdraw" in result["by_kind"] and "completion" in result["by_kind"]

    # A second run with the same state continues the DUKPT counters: no 63;
    # pipelined on the binary listener this time.
    status, out = await _load(running.port("ascii87-bin"), *common, "--dialect", "ascii87-bin",
                              "--count", "100", "--pipeline", "4")
    result = json.loads(out)
    assert status == 0 and result["pipeline"] == 4
    assert result["sent"] == 100 == sum(result["response_codes"].values())
    assert set(result["response_codes"]) <= EXPECTED_CODES, result["response_codes"]

    # Open loop: offered vs accepted.
    status, out = await _load(running.port(), *common, "--rate", "200", "--duration", "0.5",
                              "--mix", "purchase=1,echo=1")
    result = json.loads(out)
    assert result["mode"] == "open-loop" and result["offered_tps"] == 200
    assert result["offered"] == result["sent"] + result["dropped"]
    assert result["sent"] == sum(result["response_codes"].values()) + result["timeouts"] \
        + result["errors"]
    assert set(result["response_codes"]) <= EXPECTED_CODES

    # The text report names the codes and percentiles.
    status, out = await _load(running.port(), "--terminals", "2", "--cards", str(CARDS),
                              "--state", str(state), "--no-progress", "--count", "10")
    assert status == 0 and "throughput" in out and "p99.9" in out and "approved" in out


async def test_demo_cards_without_provisioning_answer_14(nursery: trio.Nursery,
                                                         tmp_path: Path) -> None:
    running = await start_switch(nursery, tmp_path / "switch")
    status, out = await _load(running.port(), "--terminals", "2", "--count", "10",
                              "--state", "none", "--no-progress", "--json",
                              "--mix", "purchase=1")
    assert json.loads(out)["response_codes"] == {"14": 10}
    assert status == 0
