"""``iso-switch-sim`` end to end: the CLI against a live switch (port 0).

``main`` runs its own ``trio.run``, so each call goes to a worker thread
while the switch serves in the test's trio loop.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import trio

from simulators.terminal import main, parse_amount
from tests.server_helpers import CARD_POOR, CARD_RICH, start_switch

PIN = "1234"


async def _sim(capsys: pytest.CaptureFixture[str], port: int, state: Path,
               *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    out = io.StringIO()
    status = await trio.to_thread.run_sync(
        main, ["--port", str(port), "--state", str(state), *argv], out)
    _, err = capsys.readouterr()
    return status, out.getvalue(), err


def test_parse_amount() -> None:
    assert parse_amount("12.34") == 1234
    assert parse_amount("5") == 500
    for bad in ("1.234", "-1", "abc", "nan"):
        with pytest.raises(Exception):  # noqa: B017 (argparse's ArgumentTypeError)
            parse_amount(bad)


async def test_one_shot_output_is_masked_and_the_state_file_prevents_replay(
        nursery: trio.Nursery, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    running = await start_switch(nursery, tmp_path / "switch")
    state = tmp_path / "sim-state.json"
    port = running.port()

    status, out, err = await _sim(capsys, port, state, "purchase", "--pan", CARD_RICH,
                                  "--amount", "12.34", "--pin", PIN)
    assert status == 0, err
    assert "00 approved" in out and "MAC ok" in out and "476173******0010" in out
    assert CARD_RICH not in out + err and "FFFF9876543210E00001" in out

    # A second one-shot run continues the counter: no replay (63).
    monkeypatch.setenv("ISO_SWITCH_SIM_PIN", PIN)
    status, out, _ = await _sim(capsys, port, state, "balance", "--pan", CARD_RICH)
    assert status == 0 and "FFFF9876543210E00002" in out
    assert "Balance       available 9987.66" in out and "MAC ok" in out
    monkeypatch.delenv("ISO_SWITCH_SIM_PIN")
    saved = json.loads(state.read_text())
    assert saved["devices"]["FFFF9876543210E00000"]["counter"] == 2
    assert CARD_RICH not in state.read_text()

    # Without the state file the counter restarts at 1: the switch says 63.
    status, out, _ = await _sim(capsys, port, Path("none"), "--stan", "500", "purchase",
                                "--pan", CARD_RICH, "--amount", "1.00")
    assert status == 1 and "63 security violation" in out

    # Wrong PIN, insufficient funds, declines exit 1.
    status, out, _ = await _sim(capsys, port, state, "purchase", "--pan", CARD_RICH,
                                "--amount", "1.00", "--pin", "9999")
    assert status == 1 and "55 incorrect or missing PIN" in out
    status, out, _ = await _sim(capsys, port, state, "purchase", "--pan", CARD_POOR,
                                "--amount", "60.00")
    assert status == 1 and "51 insufficient funds" in out

    # auth, then complete and reverse it by STAN (originals kept in the state file).
    status, out, _ = await _sim(capsys, port, state, "--json", "auth", "--pan", CARD_RICH,
                                "--amount", "10.00")
    auth = json.loads(out)
    assert status == 0 and auth["rc"] == "00" and auth["mac"] == "MAC ok"
    assert auth["request"]["2"] == "476173******0010" and "52" not in auth["request"]
    stan = auth["request"]["11"]
    status, out, err = await _sim(capsys, port, state, "--json", "complete", "--stan", stan,
                                  "--pan", CARD_RICH, "--amount", "8.00")
    done = json.loads(out)
    assert status == 0, err
    assert (done["response"]["t"], done["rc"], done["mac"]) == ("0230", "00", "MAC ok")
    status, out, _ = await _sim(capsys, port, state, "--json", "reverse", "--stan", stan)
    assert json.loads(out)["response"]["t"] == "0410"
    status, _, err = await _sim(capsys, port, state, "complete", "--stan", "999999",
                                "--pan", CARD_RICH)
    assert status == 2 and "no request with STAN" in err

    # Network management on the binary listener, unMACed.
    status, out, _ = await _sim(capsys, running.port("ascii87-bin"), state,
                                "--dialect", "ascii87-bin", "echo")
    assert status == 0 and "0810" in out and "no MAC" in out


async def test_script_runs_every_command_on_one_connection(
        nursery: trio.Nursery, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    running = await start_switch(nursery, tmp_path / "switch")
    script = tmp_path / "session.txt"
    script.write_text(
        "# a morning at the counter\n"
        "signon\n"
        f"purchase --pan {CARD_RICH} --amount 1.00 --pin {PIN}\n"
        f"withdraw --pan {CARD_RICH} --amount 2.00 --pin {PIN}\n"
        f"refund --pan {CARD_RICH} --amount 0.50\n"
        f"transfer --pan {CARD_RICH} --amount 3.00 --to-account 6222020000000023 --pin {PIN}\n"
        f"balance --pan {CARD_RICH} --code 31 --pin {PIN}\n"
        "reverse --stan 2 --advice --amount 0.40\n"
        "bogus --pan 1\n"
        "signoff\n")
    status, out, err = await _sim(capsys, running.port(), tmp_path / "st.json", "--json",
                                  "script", str(script))
    assert PIN not in err
    answers = [json.loads(line) for line in out.splitlines()]
    assert [a["response"]["t"] for a in answers] == [
        "0810", "0210", "0210", "0210", "0210", "0210", "0430", "0810"]
    assert all(a["rc"] == "00" for a in answers), [a["rc"] for a in answers]
    assert answers[5]["balances"][1]["type"] == "available"
    assert answers[1]["request"]["52"] == "<16 chars hidden>"
    assert "script line 8" in err and CARD_RICH not in out + err
    assert status == 2  # the bad line


def test_argument_errors_never_echo_a_pan(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["purchase", CARD_RICH, "--pan", "1", "--amount", "1"])
    err = capsys.readouterr().err
    assert "unrecognized arguments" in err and CARD_RICH not in err and "476173******0010" in err
