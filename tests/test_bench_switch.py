"""Smoke test of the end-to-end benchmark (``python -m benchmarks.switch``):
it starts the echo server and the switch, drives both, stops both, and
prints the JSON list issue 6 specifies. No speed is asserted: figures depend
on the machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ISSUE_KEYS = {"scenario", "terminals", "switch_tps", "echo_tps", "ratio", "switch_p99_ms"}
RUN_TIMEOUT_S = 120


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.switch", *args], capture_output=True, text=True,
        cwd=ROOT, timeout=RUN_TIMEOUT_S, check=False,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_quick_json_run_has_the_issue_shape(tmp_path: Path) -> None:
    done = _run("--quick", "--duration", "1", "--cards", "200", "--scenarios", "1,pipelined",
                "--json", "--keep", str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(done.stdout)
    assert [row["scenario"] for row in rows] == ["1", "pipelined"]
    for row in rows:
        assert row.keys() >= ISSUE_KEYS
        assert row["terminals"] == 1
        assert row["switch_tps"] > 0 and row["echo_tps"] > 0
        assert row["ratio"] == pytest.approx(row["switch_tps"] / row["echo_tps"], abs=1e-3)
        assert row["switch_p99_ms"] > 0
        # Every answer was a well-formed, correctly MACed one; none lost.
        assert row["switch_failures"] == 0 and row["echo_failures"] == 0
        assert row["switch_mac_bad"] == 0
    # Pipelined requests are sealed under the client's send lock, so their
    # KSN counters reach the switch in order: no replay (63) either.
    assert set(rows[0]["switch_response_codes"]) == {"00"}
    assert set(rows[1]["switch_response_codes"]) == {"00"}
    # Both servers were stopped: the switch logged its graceful stop.
    assert '"event": "stopped"' in (tmp_path / "switch.log").read_text()


def test_unknown_scenario_is_a_usage_error() -> None:
    done = _run("--scenarios", "7")
    assert done.returncode == 2
    assert "unknown scenario" in done.stderr
