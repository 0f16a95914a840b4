"""A small async terminal for the end-to-end server tests.

It speaks interface.md over real TCP: 2-byte big-endian length frames,
messages built with our :class:`~iso_switch.codec.Codec` for the listener's
dialect, DUKPT PIN blocks (ISO 9564 format 0 under the PIN key variant) and
retail MACs (ISO 9797-1 algorithm 3, padding 1, MAC request key) for KSNs of
the demo BDK, and response MAC checks under the MAC response key.

The PIN block and the MAC are computed with ``psec`` rather than with the
switch's own ``security`` package, so a shared mistake cannot cancel out;
only the DUKPT key derivation (``TerminalDukpt``, checked against the X9.24
vectors in its own tests) is the switch's.
"""

from __future__ import annotations

import dataclasses
import hmac
import itertools
import struct
import warnings
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psec.des
import psec.mac
import psec.pinblock
import trio

from iso_switch.codec import Codec, load_spec
from iso_switch.config import Config, ListenerConfig, load_config
from iso_switch.security.dukpt import DukptKeys, TerminalDukpt
from iso_switch.server import Switch, build_switch

# Demo data of interface.md section 6 (copied here: tests never read /work/shared).
DEMO_BDK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
KSN_PREFIX = "FFFF9876543210E"
CARD_RICH = "4761739001010010"  # PIN 1234, 10000.00
CARD_POOR = "4761739001010028"  # PIN 4321, 50.00
CARD_LOST = "4761739001010036"
CARD_STOLEN = "4761739001010044"
CARD_EXPIRED = "4761739001010051"
PINS = {CARD_RICH: "1234", CARD_POOR: "4321", CARD_LOST: "1111", CARD_STOLEN: "1111",
        CARD_EXPIRED: "1111"}
ACCOUNT_RICH = "6222020000000015"
ACCOUNT_POOR = "6222020000000023"
MERCHANT = "MERCHANT0000001"
HEX_LISTENER = "ascii87-hex"
BIN_LISTENER = "ascii87-bin"
# No test should ever wait on the switch longer than this.
IO_TIMEOUT_S = 15.0
MAC_BYTES = 8

_codecs: dict[str, Codec] = {}


def codec_for(dialect: str) -> Codec:
    if dialect not in _codecs:
        _codecs[dialect] = Codec(load_spec(dialect))
    return _codecs[dialect]


def make_config(tmp_path: Path, **overrides: Any) -> Config:
    """The embedded default config on port 0, data in ``tmp_path``, plus
    dotted ``overrides`` written with ``__`` for ``.``."""
    # The processor runs in the writer thread so tests can reach into it;
    # tests of the ledger process ask for ledger__worker="process".
    values: dict[str, Any] = {"data_dir": str(tmp_path), "ledger.synchronous": "FULL",
                              "timeouts.shutdown_grace_s": 1.0, "ledger.worker": "thread"}
    values.update({key.replace("__", "."): value for key, value in overrides.items()})
    config = load_config(None, values)
    return dataclasses.replace(
        config, listeners=tuple(dataclasses.replace(lc, port=0) for lc in config.listeners))


@dataclass
class Running:
    """A switch serving on real ports."""

    switch: Switch
    ports: dict[str, int]

    def port(self, listener: str = HEX_LISTENER) -> int:
        return self.ports[listener]


def switch_with_listener(tmp_path: Path, listener: ListenerConfig, **overrides: Any) -> Switch:
    """A switch (config as :func:`make_config`) with ``listener`` only: for
    the framings and TPDUs the default listeners do not use."""
    config = make_config(tmp_path, **overrides)
    return build_switch(dataclasses.replace(config, listeners=(listener,)),
                        handle_signals=False)


async def start_switch(nursery: trio.Nursery, tmp_path: Path, switch: Switch | None = None,
                       **overrides: Any) -> Running:
    """Build (unless given) and start a switch in ``nursery``."""
    if switch is None:
        switch = build_switch(make_config(tmp_path, **overrides), handle_signals=False)
    bound = await nursery.start(switch.run)
    return Running(switch, {name: port for name, _host, port in bound})


# -- building requests ----------------------------------------------------------


@dataclass
class Sealed:
    """One request as bytes, with the fields and working keys it was built with."""

    raw: bytes
    fields: dict[str, str]
    keys: DukptKeys | None
    mac: bool


def mac_field_of(fields: Mapping[str, str]) -> str:
    """DE128 when any field above 64 is present (secondary bitmap), else DE64."""
    return "128" if any(k.isdigit() and int(k) > 64 for k in fields) else "64"


def pin_block_hex(keys: DukptKeys, pin: str, pan: str) -> str:
    clear = psec.pinblock.encode_pinblock_iso_0(pin, pan)
    with warnings.catch_warnings():  # psec uses two-key TripleDES, deprecated
        warnings.simplefilter("ignore")
        return psec.des.encrypt_tdes_ecb(keys.pin, clear).hex().upper()


def retail_mac(key: bytes, data: bytes) -> bytes:
    with warnings.catch_warnings():  # psec uses TripleDES with 8-byte keys, deprecated
        warnings.simplefilter("ignore")
        return psec.mac.generate_retail_mac(key[:8], key[8:], data, padding=1)


def _mac_wire_size(codec: Codec, name: str) -> int:
    spec = codec.fields[name]
    return MAC_BYTES if spec.binary else 2 * MAC_BYTES


@dataclass
class Terminal:
    """Builds requests for one terminal ID; KSNs come from one DUKPT device."""

    terminal_id: str = "TERM0003"
    dukpt: TerminalDukpt = field(
        default_factory=lambda: TerminalDukpt.from_bdk(DEMO_BDK, KSN_PREFIX + "00000"))
    stans: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def next_stan(self) -> str:
        return f"{next(self.stans) % 1_000_000:06d}"

    def financial(self, *, mti: str = "0200", code: str = "000000", amount: int = 1000,
                  pan: str = CARD_RICH, **extra: str) -> dict[str, str]:
        now = datetime.now(UTC)
        fields = {
            "t": mti, "2": pan, "3": code, "4": f"{amount:012d}", "7": now.strftime("%m%d%H%M%S"),
            "11": self.next_stan(), "12": now.strftime("%H%M%S"), "13": now.strftime("%m%d"),
            "22": "051", "41": self.terminal_id, "42": MERCHANT, "49": "156",
        }
        fields.update(extra)
        return fields

    def follow_up(self, mti: str, original: Mapping[str, str], *, amount: int | None = None,
                  **extra: str) -> dict[str, str]:
        """A completion (0220/0221) or reversal (04x0/04x1) of ``original``."""
        fields = {
            "t": mti, "2": original["2"], "3": original["3"],
            "4": f"{amount:012d}" if amount is not None else original["4"],
            "7": datetime.now(UTC).strftime("%m%d%H%M%S"), "11": self.next_stan(),
            "41": original["41"], "42": original["42"], "49": original["49"],
            "90": de90(original),
        }
        fields.update(extra)
        return fields

    def network(self, code: str) -> dict[str, str]:
        return {"t": "0800", "7": datetime.now(UTC).strftime("%m%d%H%M%S"),
                "11": self.next_stan(), "70": code, "41": self.terminal_id}

    def seal(self, codec: Codec, fields: Mapping[str, str], *, pin: str | None = None,
             mac: bool = False) -> Sealed:
        """Encode ``fields``; with ``pin`` or ``mac`` take a fresh KSN (DE62),
        add the PIN block (DE52) and/or the MAC (DE64/DE128)."""
        out = dict(fields)
        keys: DukptKeys | None = None
        if pin is not None or mac:
            ksn, keys = self.dukpt.next_transaction()
            out["62"] = ksn
            if pin is not None:
                pan = out["2"] if "2" in out else out["35"].split("=")[0]
                out["52"] = pin_block_hex(keys, pin, pan)
        if not mac:
            return Sealed(codec.encode(out), out, keys, False)
        name = mac_field_of(out)
        size = _mac_wire_size(codec, name)
        out[name] = "0" * 16
        assert keys is not None
        raw = codec.encode(out)[:-size]
        tag = retail_mac(keys.mac_request, raw)
        out[name] = tag.hex().upper()
        tail = tag if size == MAC_BYTES else tag.hex().upper().encode("ascii")
        return Sealed(raw + tail, out, keys, True)


def de90(original: Mapping[str, str]) -> str:
    return (original["t"] + original["11"] + original["7"]
            + original.get("32", "").rjust(11, "0") + "0" * 11)


def response_mac_ok(codec: Codec, raw: bytes, fields: Mapping[str, str], keys: DukptKeys) -> bool:
    """Whether the response's MAC is the retail MAC under the response key."""
    name = "128" if "128" in fields else "64"
    if name not in fields:
        return False
    size = _mac_wire_size(codec, name)
    expected = retail_mac(keys.mac_response, raw[:-size])
    return hmac.compare_digest(expected, bytes.fromhex(fields[name]))


# -- the connection -------------------------------------------------------------


def frame(message: bytes) -> bytes:
    return struct.pack(">H", len(message)) + message


@dataclass
class Response:
    raw: bytes
    fields: dict[str, str]

    def __getitem__(self, name: str) -> str:
        return self.fields[name]

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.fields.get(name, default)


class Client:
    """One TCP connection to a listener."""

    def __init__(self, stream: trio.SocketStream, codec: Codec) -> None:
        self.stream = stream
        self.codec = codec
        self._buffer = bytearray()

    async def send_raw(self, data: bytes) -> None:
        with trio.fail_after(IO_TIMEOUT_S):
            await self.stream.send_all(data)

    async def send(self, message: Sealed | bytes) -> None:
        await self.send_raw(frame(message.raw if isinstance(message, Sealed) else message))

    async def receive_frame(self) -> bytes | None:
        """The next frame's message, or None when the switch closed the connection."""
        with trio.fail_after(IO_TIMEOUT_S):
            while True:
                if len(self._buffer) >= 2:
                    (length,) = struct.unpack(">H", self._buffer[:2])
                    if len(self._buffer) >= 2 + length:
                        message = bytes(self._buffer[2:2 + length])
                        del self._buffer[:2 + length]
                        return message
                try:
                    chunk = await self.stream.receive_some(65536)
                except trio.BrokenResourceError:
                    return None
                if not chunk:
                    return None
                self._buffer += chunk

    async def receive(self) -> Response:
        raw = await self.receive_frame()
        assert raw is not None, "the switch closed the connection"
        return Response(raw, self.codec.decode(raw))

    async def closed_by_switch(self) -> bool:
        """Whether the switch closes the connection (no frame arrives first)."""
        return await self.receive_frame() is None

    async def call(self, message: Sealed) -> Response:
        """Send, receive the answer, and check its MAC when one is due."""
        await self.send(message)
        response = await self.receive()
        check_mac(self.codec, message, response)
        return response

    async def aclose(self) -> None:
        await self.stream.aclose()


def check_mac(codec: Codec, request: Sealed, response: Response) -> None:
    """A MACed request's response carries a valid MAC unless it is 30 or 63
    (interface §4); any other response carries none."""
    has_mac = "64" in response.fields or "128" in response.fields
    if request.mac and response["39"] not in ("30", "63"):
        assert request.keys is not None
        assert response_mac_ok(codec, response.raw, response.fields, request.keys)
    else:
        assert not has_mac, "an unMACed or refused request got a MACed response"


@asynccontextmanager
async def connect(running: Running, listener: str = HEX_LISTENER) -> AsyncIterator[Client]:
    stream = await trio.open_tcp_stream("127.0.0.1", running.port(listener))
    client = Client(stream, codec_for(listener))
    try:
        yield client
    finally:
        await client.aclose()


async def echo_ok(running: Running, listener: str = HEX_LISTENER) -> bool:
    """A well-behaved client on a new connection gets an 0810 00 to an echo."""
    async with connect(running, listener) as client:
        terminal = Terminal()
        response = await client.call(terminal.seal(client.codec, terminal.network("301")))
        return response["t"] == "0810" and response["39"] == "00"


def fail_once(monkeypatch: Any, owner: object, name: str, error: Exception,
              before: Callable[[], object] | None = None) -> None:
    """Make ``owner.name`` raise ``error`` on its first call (after running
    ``before``, e.g. to leave a transaction open as a bug might), then behave."""
    original = getattr(owner, name)
    state = {"failed": False}

    def once(*args: Any, **kwargs: Any) -> Any:
        if not state["failed"]:
            state["failed"] = True
            if before is not None:
                before()
            raise error
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, once)
