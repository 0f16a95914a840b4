"""The real ``iso-switch serve`` process: starts on a config with port-0
listeners, logs one JSON line per listener, serves, and stops gracefully on
SIGTERM and SIGINT (exit 0, ``stopped`` logged)."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import iso8583
import pytest
from iso8583.specs import default_ascii

CONFIG = """
demo = true

[[listeners]]
name = "hex"
port = 0
dialect = "ascii87-hex"

[[listeners]]
name = "bin"
port = 0
dialect = "ascii87-bin"
"""
START_TIMEOUT_S = 60


def _start(tmp_path: Path) -> tuple[subprocess.Popen[str], dict[str, int]]:
    config = tmp_path / "switch.toml"
    config.write_text(CONFIG)
    proc = subprocess.Popen(
        [sys.executable, "-m", "iso_switch", "serve", "--config", str(config),
         "--data-dir", str(tmp_path / "var")],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    ports: dict[str, int] = {}
    deadline = time.monotonic() + START_TIMEOUT_S
    assert proc.stderr is not None
    while len(ports) < 2 and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if event.get("event") == "listening":
            ports[event["listener"]] = event["port"]
    assert len(ports) == 2, "the switch did not report both listeners"
    return proc, ports


def _echo(port: int) -> str:
    raw = bytes(iso8583.encode({"t": "0800", "7": "1125120000", "11": "000001", "70": "301"},
                               default_ascii)[0])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(struct.pack(">H", len(raw)) + raw)
        size = struct.unpack(">H", sock.recv(2))[0]
        data = b""
        while len(data) < size:
            data += sock.recv(size - len(data))
    return iso8583.decode(data, default_ascii)[0]["39"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serve_answers_then_stops_gracefully(tmp_path: Path, signum: int) -> None:
    proc, ports = _start(tmp_path)
    try:
        assert _echo(ports["hex"]) == "00"
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0
        events = [json.loads(line)["event"] for line in err.splitlines() if line.startswith("{")]
        assert "shutting down" in events and events[-1] == "stopped"
        assert (tmp_path / "var" / "ledger.sqlite3").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
