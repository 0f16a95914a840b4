"""Per-address admission over real TCP: made-up KSNs from one address are
answered 63 without key work once past the bound, while a device that has
authenticated from that address keeps being served; connections per
address are bounded at accept."""

from __future__ import annotations

import secrets

import trio

from iso_switch.codec import Codec
from iso_switch.protocol.admission import Refusal
from tests.server_helpers import HEX_LISTENER, Terminal, codec_for, connect, start_switch

NEW_DEVICES = 5
FAILURES = 3


def _forged(terminal: Terminal, codec: Codec, n: int) -> bytes:
    fields = terminal.financial(amount=100)
    fields["62"] = f"FFFF98765{n:05X}E00001"[:20]
    fields["64"] = secrets.token_hex(8).upper()
    return codec.encode(fields)


async def test_forged_ksns_are_refused_cheaply_and_honest_devices_are_not(
    nursery: trio.Nursery, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    running = await start_switch(nursery, tmp_path,
                                 limits__max_new_devices_per_address=NEW_DEVICES,
                                 limits__max_auth_failures_per_address=FAILURES)
    codec = codec_for("ascii87-hex")
    honest = Terminal()
    async with connect(running, HEX_LISTENER) as client:
        first = await client.call(honest.seal(codec, honest.financial(amount=100), mac=True))
        assert first["39"] == "00"
        forger = Terminal()
        codes = []
        for n in range(10):
            await client.send(_forged(forger, codec, n))
            codes.append((await client.receive())["39"])
        assert codes == ["63"] * 10
        # Three bad MACs were checked; the seven after them cost no key work.
        assert dict(running.switch.guard.refusals) == {Refusal.AUTH_FAILURES: 10 - FAILURES}
        # Past the bound the honest device still gets its purchases approved.
        again = await client.call(honest.seal(codec, honest.financial(amount=100), mac=True))
        assert again["39"] == "00"
    running.switch.shutdown()


async def test_connections_per_address_are_bounded(nursery: trio.Nursery, tmp_path) -> None:  # type: ignore[no-untyped-def]
    running = await start_switch(nursery, tmp_path,
                                 limits__max_connections_per_address=2)
    port = running.port(HEX_LISTENER)
    kept = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(2)]
    extra = await trio.open_tcp_stream("127.0.0.1", port)
    with trio.fail_after(10):
        assert await extra.receive_some(100) == b""  # closed at accept
    for stream in kept:
        await stream.aclose()
    with trio.fail_after(10):
        while running.switch.guard.connections("127.0.0.1"):
            await trio.sleep(0.01)
    assert dict(running.switch.guard.refusals) == {Refusal.CONNECTIONS: 1}
    async with connect(running, HEX_LISTENER) as client:
        terminal = Terminal()
        answer = await client.call(terminal.seal(codec_for("ascii87-hex"), terminal.network("301")))
        assert answer["39"] == "00"
    running.switch.shutdown()
