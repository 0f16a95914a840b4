"""Other framings and dialects are configuration (interface.md section 2):
a packed-BCD listener with a 2-byte BCD length and a TPDU, and an ASCII
listener with a 4-byte ASCII length, served end to end over real TCP."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import trio

from iso_switch.codec import Codec, load_spec
from iso_switch.config import ListenerConfig
from iso_switch.protocol import Frame, Framer, swap_tpdu
from iso_switch.server import build_switch
from tests.server_helpers import CARD_RICH, Terminal, make_config

TPDU = bytes.fromhex("6000120000")  # ID 60, destination 0012, source 0000


async def _exchange(port: int, framer: Framer, message: bytes, tpdu: bytes | None) -> Frame:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(framer.frame(message, tpdu))
        with trio.fail_after(10):
            while True:
                data = await stream.receive_some(4096)
                assert data, "the switch closed the connection"
                framer.feed(data)
                for event in framer.events():
                    if isinstance(event, Frame):
                        return event


async def test_bcd_dialect_with_bcd_length_and_tpdu(nursery: trio.Nursery,
                                                    tmp_path: Path) -> None:
    config = make_config(tmp_path)
    listeners = (
        ListenerConfig(name="pos", port=0, dialect="bcd87", framing="bcd2", tpdu=True),
        ListenerConfig(name="text", port=0, dialect="ascii87-hex", framing="ascii4"),
    )
    switch = build_switch(dataclasses.replace(config, listeners=listeners),
                          handle_signals=False)
    bound = await nursery.start(switch.run)
    ports = {name: port for name, _host, port in bound}
    terminal = Terminal()

    bcd = Codec(load_spec("bcd87"))
    purchase = terminal.seal(bcd, terminal.financial(pan=CARD_RICH, amount=1234)).raw
    answer = await _exchange(ports["pos"], Framer("bcd2", tpdu=True), purchase, TPDU)
    assert answer.tpdu == swap_tpdu(TPDU)
    fields = bcd.decode(answer.message)
    assert (fields["t"], fields["39"], fields["4"]) == ("0210", "00", "000000001234")
    assert len(fields["37"]) == 12 and len(fields["38"]) == 6

    text = Codec(load_spec("ascii87-hex"))
    echo = text.encode({"t": "0800", "7": "1125120000", "11": "000001", "70": "301"})
    answer = await _exchange(ports["text"], Framer("ascii4"), echo, None)
    assert text.decode(answer.message)["39"] == "00"
    switch.shutdown()
