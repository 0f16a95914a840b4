"""The trio shell around the link machine, against a tiny issuer host
written here: real TCP on port 0, binary2 framing, the ascii87-hex dialect."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import trio

from iso_switch.codec import Codec, load_spec
from iso_switch.links import Answered, ConnState, LinkConfig, StandIn, StandInReason
from iso_switch.protocol import Frame, Framer
from iso_switch.server.links import IssuerLinkShell

CODEC = Codec(load_spec("ascii87-hex"))
TIMEOUT_S = 0.5
CLOSE = "close"
Behaviour = Callable[[dict[str, str]], dict[str, str] | str | None]


def approve(fields: dict[str, str]) -> dict[str, str] | str | None:
    """Answers every 0800 00 and every request 00, except amounts ending in 99
    (silent) and 98 (the connection is closed)."""
    if fields["t"] == "0800":
        return {"t": "0810", "7": fields["7"], "11": fields["11"], "70": fields["70"], "39": "00"}
    amount = fields.get("4", "")
    if amount.endswith("99"):
        return None
    if amount.endswith("98"):
        return CLOSE
    return {"t": "0210", "11": fields["11"], "37": fields["37"], "39": "00", "38": "AB1234"}


class TinyIssuer:
    """Records what it received, per connection number, and answers by ``behaviour``."""

    def __init__(self, behaviour: Behaviour = approve) -> None:
        self.behaviour = behaviour
        self.seen: list[tuple[int, dict[str, str]]] = []
        self.connections = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        number, framer = self.connections, Framer("binary2")
        async with stream:
            try:
                while data := await stream.receive_some(65536):
                    framer.feed(data)
                    for event in framer.events():
                        if isinstance(event, Frame) and not await self._answer(
                                number, stream, framer, event.message):
                            return
            except trio.BrokenResourceError:
                return

    async def _answer(self, number: int, stream: trio.SocketStream, framer: Framer,
                      message: bytes) -> bool:
        fields = CODEC.decode(message)
        self.seen.append((number, fields))
        answer = self.behaviour(fields)
        if answer == CLOSE:
            return False
        if isinstance(answer, dict):
            await stream.send_all(framer.frame(CODEC.encode(answer)))
        return True

    def network_codes(self, number: int) -> list[str]:
        return [f["70"] for n, f in self.seen if n == number and f["t"] == "0800"]


async def _listen(nursery: trio.Nursery, issuer: TinyIssuer) -> int:
    listeners = await nursery.start(partial(trio.serve_tcp, issuer.handle, 0, host="127.0.0.1"))
    port: int = listeners[0].socket.getsockname()[1]
    return port


async def _start(nursery: trio.Nursery, issuer: TinyIssuer | None = None,
                 **settings: float) -> tuple[IssuerLinkShell, TinyIssuer]:
    issuer = issuer or TinyIssuer()
    port = await _listen(nursery, issuer)
    config = LinkConfig("bank-b", (f"127.0.0.1:{port}",), timeout_s=TIMEOUT_S,
                        echo_interval_s=settings.get("echo_interval_s", 30.0))
    shell = IssuerLinkShell(config)
    await nursery.start(shell.run)
    return shell, issuer


async def _until(condition: Callable[[], bool]) -> None:
    with trio.fail_after(5):
        while not condition():
            await trio.sleep(0.01)


def _request(rrn: str, amount: str = "000000001000") -> dict[str, str]:
    return {"t": "0200", "2": "5413330000000001", "3": "000000", "4": amount,
            "37": rrn, "41": "TERM0001", "49": "840"}


async def test_signs_on_then_forwards_and_returns_the_issuers_answer(nursery) -> None:
    shell, issuer = await _start(nursery)
    await _until(lambda: shell.link.issuer_up)
    outcome = await shell.forward(_request("000000000001"))
    assert isinstance(outcome, Answered)
    assert (outcome.fields["39"], outcome.fields["38"]) == ("00", "AB1234")
    kinds = [f["t"] for _, f in issuer.seen]
    assert kinds == ["0800", "0200"] and issuer.network_codes(1) == ["001"]
    sent = issuer.seen[1][1]
    assert sent["11"] == outcome.fields["11"] and len(sent["7"]) == 10


async def test_a_silent_issuer_hands_the_request_to_stand_in_after_timeout(nursery) -> None:
    shell, _ = await _start(nursery)
    await _until(lambda: shell.link.issuer_up)
    started = trio.current_time()
    outcome = await shell.forward(_request("000000000002", amount="000000000099"))
    assert outcome == StandIn(outcome.handle, StandInReason.TIMED_OUT)
    assert TIMEOUT_S <= trio.current_time() - started < TIMEOUT_S + 1.0


async def test_a_connection_closed_mid_request_goes_to_stand_in_and_reconnects(nursery) -> None:
    shell, issuer = await _start(nursery)
    await _until(lambda: shell.link.issuer_up)
    outcome = await shell.forward(_request("000000000003", amount="000000000098"))
    assert outcome == StandIn(outcome.handle, StandInReason.CONNECTION_CLOSED)
    await _until(lambda: issuer.connections == 2 and shell.link.issuer_up)
    assert issuer.network_codes(2) == ["001"]
    assert isinstance(await shell.forward(_request("000000000004")), Answered)


async def test_silence_brings_an_echo(nursery) -> None:
    shell, issuer = await _start(nursery, echo_interval_s=0.2)
    await _until(lambda: "301" in issuer.network_codes(1))
    assert shell.link.connections()[0].state is ConnState.READY


async def test_shutdown_signs_off_and_run_returns(nursery) -> None:
    issuer = TinyIssuer()
    port = await _listen(nursery, issuer)
    shell = IssuerLinkShell(LinkConfig("bank-b", (f"127.0.0.1:{port}",), timeout_s=TIMEOUT_S))
    done = trio.Event()

    async def run() -> None:
        await shell.run()
        done.set()
    nursery.start_soon(run)
    await _until(lambda: shell.link.issuer_up)
    shell.shutdown()
    with trio.fail_after(5):
        await done.wait()
    await _until(lambda: issuer.network_codes(1) == ["001", "002"])
    refused = await shell.forward(_request("000000000005"))
    assert refused == StandIn(refused.handle, StandInReason.SHUTTING_DOWN)


async def test_a_refused_endpoint_leaves_the_issuer_down_and_requests_in_stand_in(
        nursery) -> None:
    with trio.socket.socket() as probe:  # a port with nobody listening
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    shell = IssuerLinkShell(LinkConfig("bank-b", (f"127.0.0.1:{port}",), timeout_s=TIMEOUT_S))
    await nursery.start(shell.run)
    await _until(lambda: shell.link.connections()[0].state is ConnState.DISCONNECTED)
    refused = await shell.forward(_request("000000000006"))
    assert refused == StandIn(refused.handle, StandInReason.NO_CONNECTION)
