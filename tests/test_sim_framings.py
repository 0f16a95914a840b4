"""The simulators on a listener with another framing: a 4-byte ASCII
length and a TPDU (interface.md section 2: framings are configuration, so
the tools that drive the switch must speak them too)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import trio

from iso_switch.config import ListenerConfig
from simulators._provision import provision_cards
from simulators.load import main as load_main
from simulators.terminal import main as sim_main
from tests.server_helpers import CARD_RICH, start_switch, switch_with_listener

POS = ListenerConfig(name="pos", port=0, dialect="ascii87-hex", framing="ascii4", tpdu=True)
FRAMING = ("--framing", "ascii4", "--tpdu", "6000120000")
CARDS = 20


async def test_terminal_and_load_generator_speak_ascii4_with_a_tpdu(
        nursery: trio.Nursery, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "switch"
    provision_cards(data, CARDS)
    running = await start_switch(nursery, data, switch_with_listener(data, POS))
    port = str(running.port("pos"))

    out = io.StringIO()
    status = await trio.to_thread.run_sync(sim_main, [
        "--port", port, *FRAMING, "--state", str(tmp_path / "sim.json"),
        "purchase", "--pan", CARD_RICH, "--amount", "1.00", "--pin", "1234"], out)
    assert status == 0, capsys.readouterr().err
    assert "00 approved" in out.getvalue() and "MAC ok" in out.getvalue()

    out = io.StringIO()
    status = await trio.to_thread.run_sync(load_main, [
        "--port", port, *FRAMING, "--terminals", "3", "--cards", str(CARDS), "--count", "30",
        "--state", str(tmp_path / "load.json"), "--seed", "7", "--no-progress", "--json"], out)
    result = json.loads(out.getvalue())
    assert status == 0
    assert (result["framing"], result["tpdu"]) == ("ascii4", "6000120000")
    assert result["sent"] == 30 == sum(result["response_codes"].values())
    assert result["mac_bad"] == 0 and result["timeouts"] == result["errors"] == 0


def test_a_bad_tpdu_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        load_main(["--tpdu", "60001200", "--count", "1"], io.StringIO())
    assert exit_info.value.code == 2
    assert "a TPDU is 10 hex digits" in capsys.readouterr().err
