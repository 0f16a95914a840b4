"""SIGHUP reloads a running switch (interface section 8): the configuration
file, the key store, the risk rules and the reference data, without dropping
a connection or losing a request in flight; a file that does not load
changes nothing.

Most tests run the real ``iso-switch serve`` (its ledger in a process of its
own, so the reload crosses the pipe) and talk to it over TCP on port 0."""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import secrets
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trio

from iso_switch.bootstrap import DemoKeyRefused, build_hsm, checkout_keys_dir
from iso_switch.cli import main
from iso_switch.config import Config, ConfigError, load_config, parse_config
from iso_switch.ledger.records import TerminalRow
from iso_switch.ledger.sqlite import SqliteLedgerStore
from iso_switch.processor import open_store
from iso_switch.security.dukpt import TerminalDukpt
from iso_switch.security.errors import KeyStoreError
from iso_switch.security.hsm import SoftwareHsm
from iso_switch.security.keystore import KeyStore, MasterKey
from iso_switch.server.reload import ReloadRefused, prepare_reload, refusal_reason
from tests.server_helpers import (
    CARD_POOR,
    CARD_RICH,
    HEX_LISTENER,
    MERCHANT,
    Client,
    Terminal,
    codec_for,
    connect,
    make_config,
    start_switch,
)

CONFIG = """
demo = true

[[listeners]]
name = "ascii87-hex"
port = 0
dialect = "ascii87-hex"

[timeouts]
decision_deadline_s = 60.0
"""
# Velocity: a second debit on a card within a day is declined.
STRICT_RISK = """
[risk]
velocity_count = 1
velocity_window_s = 86400
velocity_action = "decline"
"""
# A bound on how long the switch takes to start, reload or stop under a
# loaded test machine: a hang fails instead of blocking the suite.
PROCESS_TIMEOUT_S = 120.0
NEW_KEY_SET = "ABCDEF0123"


class Serve:
    """``iso-switch serve --config FILE``, its JSON log lines read by a thread."""

    def __init__(self, tmp_path: Path, text: str) -> None:
        self.config = tmp_path / "switch.toml"
        self.config.write_text(text)
        self.data_dir = tmp_path / "var"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "iso_switch", "serve", "--config", str(self.config),
             "--data-dir", str(self.data_dir)],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                self.events.put(json.loads(line))
            except json.JSONDecodeError:
                continue

    async def reload(self) -> dict[str, Any]:
        """SIGHUP; the line that says how it went."""
        self.proc.send_signal(signal.SIGHUP)
        return await self.event_any("reloaded", "reload refused")

    async def event_any(self, *names: str) -> dict[str, Any]:
        """The next log line whose event starts with one of ``names``
        (other lines before it are skipped)."""
        while True:
            event = await trio.to_thread.run_sync(self.events.get, True, PROCESS_TIMEOUT_S)
            if any(str(event.get("event", "")).startswith(name) for name in names):
                return event

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(PROCESS_TIMEOUT_S)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


@asynccontextmanager
async def serving(tmp_path: Path, text: str = CONFIG) -> AsyncIterator[tuple[Serve, int]]:
    serve = Serve(tmp_path, text)
    try:
        port = (await serve.event_any("listening"))["port"]
        yield serve, port
    finally:
        assert serve.stop() == 0


async def client_for(port: int) -> Client:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    return Client(stream, codec_for(HEX_LISTENER))


async def purchase(client: Client, terminal: Terminal, *, mac: bool = False,
                   pan: str = CARD_RICH) -> str:
    """A purchase of 0.01 (on the rich card); its response code."""
    message = terminal.seal(client.codec, terminal.financial(amount=1, pan=pan), mac=mac)
    return (await client.call(message))["39"]


def admin(*argv: str, data_dir: Path) -> None:
    assert main([*argv, "--data-dir", str(data_dir)]) == 0


def import_bdk(keys_dir: Path, bdk: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELOAD_TEST_BDK", bdk.hex().upper())
    assert main(["keys", "import", "bdk-new", "--clear-from-env", "RELOAD_TEST_BDK",
                 "--usage", "B0", "--key-set-id", NEW_KEY_SET, "--keys-dir", str(keys_dir),
                 "--demo"]) == 0


async def test_sighup_applies_profiles_risk_and_keys_on_the_open_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys_dir = tmp_path / "var" / "keys"
    shutil.copytree(checkout_keys_dir(), keys_dir)  # the checkout's own stays untouched
    new_bdk = secrets.token_bytes(16)
    new_device = Terminal(terminal_id="TERM0001", dukpt=TerminalDukpt.from_bdk(
        new_bdk, NEW_KEY_SET + "3210E00000"))
    async with serving(tmp_path) as (serve, port):
        client = await client_for(port)  # open across every reload below
        term3, term9 = Terminal(), Terminal(terminal_id="TERM0009")
        assert await purchase(client, term3) == "00"
        admin("terminals", "create", "TERM0009", "--merchant", MERCHANT, "--no-mac",
              "--codes", "00,31", data_dir=serve.data_dir)
        assert await purchase(client, term9) == "00"

        admin("terminals", "create", "TERM0009", "--merchant", MERCHANT, "--no-mac",
              "--codes", "31", data_dir=serve.data_dir)
        import_bdk(keys_dir, new_bdk, monkeypatch)
        assert await purchase(client, new_device, mac=True) == "63"  # not loaded yet
        serve.config.write_text(CONFIG + STRICT_RISK + "\n[limits]\nmax_batch = 7\n")
        line = await serve.reload()

        assert line["event"].startswith("reloaded"), line
        assert "risk.velocity_action" in line["changed"]
        assert line["ignored_until_restart"] == ["limits.max_batch"]
        assert line["store_added"] == ["bdk-new"]
        assert await purchase(client, term9) == "58"  # the profile
        assert await purchase(client, term3) == "05"  # the velocity rule now declines
        # MACed both ways under the new key (a card the velocity rule has not seen).
        assert await purchase(client, new_device, mac=True, pan=CARD_POOR) == "00"
        await client.aclose()


@pytest.mark.parametrize("broken", [
    "demo = true\n[[listeners\n",
    CONFIG + '\n[risk]\nvelocity_action = "block"\n',
    CONFIG + "\n[risk]\nvelocity_count = 65\n",
])
async def test_a_file_that_does_not_load_keeps_the_running_configuration(
    tmp_path: Path, broken: str
) -> None:
    async with serving(tmp_path, CONFIG + STRICT_RISK) as (serve, port):
        client = await client_for(port)
        terminal = Terminal()
        assert await purchase(client, terminal) == "00"
        serve.config.write_text(broken)
        line = await serve.reload()
        assert line["event"] == "reload refused: the running configuration stays"
        assert line["reason"]
        assert await purchase(client, terminal) == "05"  # the strict rules still run
        await client.aclose()


async def test_requests_in_flight_during_a_reload_are_all_answered(tmp_path: Path) -> None:
    connections, per_connection = 4, 24
    async with serving(tmp_path) as (serve, port):
        clients = [await client_for(port) for _ in range(connections)]
        terminals = [Terminal() for _ in clients]
        sent: list[set[str]] = [set() for _ in clients]

        async def send_some(count: int) -> None:
            for client, terminal, stans in zip(clients, terminals, sent, strict=True):
                for _ in range(count):
                    fields = terminal.financial(amount=1)
                    stans.add(fields["11"])
                    await client.send(terminal.seal(client.codec, fields))

        await send_some(per_connection // 2)
        serve.proc.send_signal(signal.SIGHUP)
        await send_some(per_connection // 2)
        for client, stans in zip(clients, sent, strict=True):
            answered = set()
            for _ in stans:
                response = await client.receive()
                assert response["39"] not in ("91", "96")
                answered.add(response["11"])
            assert answered == stans
        assert (await serve.event_any("reloaded"))["event"] == "reloaded"
        for client in clients:
            await client.aclose()


# -- in process -------------------------------------------------------------------


async def test_sighup_rereads_reference_data_the_version_token_missed(
    tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change the store's version token does not reveal (another backend,
    a restored file) is picked up on reload."""
    monkeypatch.setattr(SqliteLedgerStore, "reference_version", lambda self: 0)
    running = await start_switch(nursery, tmp_path)
    terminal = Terminal()
    async with connect(running) as client:
        assert await purchase(client, terminal) == "00"
        store = open_store(tmp_path)
        with store.write():
            store.upsert_terminal(TerminalRow("TERM0003", MERCHANT, False, frozenset({"31"})))
        store.close()
        assert await purchase(client, terminal) == "00"  # the cache is not refreshed
        hsm = running.switch.hsm
        assert await running.switch.reload()
        assert await purchase(client, terminal) == "58"
        # One new HSM for both halves, so a KSN derived for a MAC serves its PIN.
        assert running.switch.hsm is not hsm
        assert running.switch.processor.hsm is running.switch.hsm
    running.switch.shutdown()


# -- what a reload refuses --------------------------------------------------------


@pytest.fixture
def real_deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                    ) -> Iterator[tuple[Config, KeyStore]]:
    """A configuration outside demo mode on a key store of its own."""
    master_hex = secrets.token_hex(32)
    monkeypatch.setenv("ISO_SWITCH_MASTER_KEY", master_hex)
    store = KeyStore(tmp_path / "keys", MasterKey.from_hex(master_hex, "test"), create=True)
    store.generate("bdk", "B0", key_set_id="A1B2C3D4E5")
    store.generate("pan-hash", "M7", "H", 32)
    yield parse_config({"demo": False, "data_dir": str(tmp_path)}), store


def test_a_reload_names_the_keys_it_adds(real_deployment: tuple[Config, KeyStore]) -> None:
    config, store = real_deployment
    hsm = build_hsm(config)
    store.generate("zpk", "P0")
    prepared = prepare_reload(lambda: config, config, hsm)
    assert prepared.keys_added == ("zpk",)
    assert isinstance(prepared.hsm, SoftwareHsm) and prepared.hsm is not hsm


def test_a_reload_refuses_a_demo_key_outside_the_demo(
    real_deployment: tuple[Config, KeyStore]
) -> None:
    config, store = real_deployment
    hsm = build_hsm(config)
    store.add("my-bdk", bytes.fromhex("0123456789ABCDEFFEDCBA9876543210"), "B0",
              key_set_id="FFFF987654")
    with pytest.raises(DemoKeyRefused) as refused:
        prepare_reload(lambda: config, config, hsm)
    assert "my-bdk" in refusal_reason(refused.value)


def test_a_reload_refuses_a_key_that_does_not_unwrap(
    real_deployment: tuple[Config, KeyStore], tmp_path: Path
) -> None:
    config, _store = real_deployment
    hsm = build_hsm(config)
    path = tmp_path / "keys" / "bdk.tr31"
    text = path.read_text().strip()
    path.write_text(text[:-1] + ("0" if text[-1] != "0" else "1"))
    with pytest.raises(KeyStoreError) as refused:
        prepare_reload(lambda: config, config, hsm)
    assert "bdk" in refusal_reason(refused.value)


def test_a_reload_refuses_another_pan_hash_key(
    real_deployment: tuple[Config, KeyStore]
) -> None:
    config, store = real_deployment
    hsm = build_hsm(config)
    store.generate("pan-hash-2", "M7", "H", 32)
    renamed = parse_config({"demo": False, "data_dir": config.data_dir,
                            "keys": {"pan_hash_key": "pan-hash-2"}})
    with pytest.raises(ReloadRefused, match="PAN hash key"):
        prepare_reload(lambda: renamed, config, hsm)


def test_a_reload_passes_on_a_file_that_does_not_load(tmp_path: Path) -> None:
    config = load_config(None, {"data_dir": str(tmp_path)})
    hsm = build_hsm(config, warn=False)
    bad = tmp_path / "bad.toml"
    bad.write_text("[limits]\nmax_batch = 0\n")
    with pytest.raises(ConfigError) as refused:
        prepare_reload(lambda: load_config(bad), config, hsm)
    assert "limits.max_batch" in refusal_reason(refused.value)


def test_refusal_reasons_name_only_the_type_of_other_errors() -> None:
    assert refusal_reason(RuntimeError("key 0123456789ABCDEF")) == "RuntimeError"


def test_the_ledger_process_refuses_a_reload_it_cannot_apply_and_keeps_serving(
    tmp_path: Path
) -> None:
    from iso_switch.processor import Request
    from iso_switch.server.ledger_worker import SubprocessLedger

    config = make_config(tmp_path, ledger__worker="process")
    ledger = SubprocessLedger(config)
    try:
        assert ledger.reload(config, None) == []  # nothing changed
        missing = dataclasses.replace(config, keys=dataclasses.replace(
            config.keys, dir=str(tmp_path / "no-such-keys")))
        with pytest.raises(ReloadRefused, match="no-such-keys"):
            ledger.reload(missing, None)
        echo = Request({"t": "0800", "7": "1208051300", "11": "000001", "70": "301"}, "absent",
                       datetime.now(UTC))
        assert ledger.process_batch([echo])[0].response["39"] == "00"
        assert ledger.restarts == 0
    finally:
        ledger.close()
