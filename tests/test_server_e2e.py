"""End to end over real TCP: a switch on port 0 with a fresh ledger, spoken to
as a terminal would (interface.md sections 1-6): every message type, both
listeners, every response code a terminal can provoke, repeats and
retransmissions, reversals, pipelining and many connections."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import trio

from iso_switch.security.dukpt import TerminalDukpt
from iso_switch.server import build_switch
from tests.server_helpers import (
    ACCOUNT_POOR,
    ACCOUNT_RICH,
    BIN_LISTENER,
    CARD_EXPIRED,
    CARD_LOST,
    CARD_POOR,
    CARD_STOLEN,
    DEMO_BDK,
    HEX_LISTENER,
    KSN_PREFIX,
    Client,
    Response,
    Running,
    Terminal,
    check_mac,
    connect,
    echo_ok,
    fail_once,
    make_config,
    start_switch,
)

LISTENERS = [HEX_LISTENER, BIN_LISTENER]
DECISION_FIELDS = ("37", "38", "39", "54")


@pytest.fixture
async def running(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Running]:
    r = await start_switch(nursery, tmp_path)
    yield r
    r.switch.shutdown()


def decision(response: Response) -> tuple[str | None, ...]:
    return tuple(response.get(name) for name in DECISION_FIELDS)


def assert_echoes(request: dict[str, str], response: Response) -> None:
    for name in ("2", "3", "4", "7", "11", "12", "13", "32", "41", "42", "49", "90", "102",
                 "103"):
        if name in request:
            assert response[name] == request[name], name


# -- network management ----------------------------------------------------------


@pytest.mark.parametrize("listener", LISTENERS)
async def test_sign_on_echo_sign_off_and_unknown_code(running: Running, listener: str) -> None:
    terminal = Terminal("TERM0001")
    async with connect(running, listener) as client:
        for code, rc in (("001", "00"), ("301", "00"), ("002", "00"), ("999", "12")):
            request = terminal.network(code)
            response = await client.call(terminal.seal(client.codec, request))
            assert response["t"] == "0810" and response["39"] == rc
            assert response["11"] == request["11"] and response["70"] == code
            assert response["41"] == "TERM0001"
            assert "37" not in response.fields and "64" not in response.fields
        # Missing DE7: a format error, still answered.
        request = terminal.network("301")
        del request["7"]
        assert (await client.call(terminal.seal(client.codec, request)))["39"] == "30"


async def test_purchase_without_sign_on_is_not_blocked(running: Running) -> None:
    terminal = Terminal()
    async with connect(running) as client:
        await client.call(terminal.seal(client.codec, terminal.network("002")))
        response = await client.call(terminal.seal(client.codec, terminal.financial()))
        assert response["39"] == "00"


# -- purchases -------------------------------------------------------------------


@pytest.mark.parametrize("listener", LISTENERS)
async def test_purchase_approved_on_term0003_without_mac(running: Running, listener: str
                                                         ) -> None:
    terminal = Terminal("TERM0003")
    async with connect(running, listener) as client:
        request = terminal.financial(amount=12_345, **{"32": "00012345", "102": ACCOUNT_RICH})
        response = await client.call(terminal.seal(client.codec, request))
    assert response["t"] == "0210" and response["39"] == "00"
    assert len(response["37"]) == 12 and len(response["38"]) == 6
    assert_echoes(request, response)
    assert "64" not in response.fields and "128" not in response.fields


@pytest.mark.parametrize("listener", LISTENERS)
async def test_purchase_with_pin_and_mac_on_term0001(running: Running, listener: str) -> None:
    terminal = Terminal("TERM0001")
    async with connect(running, listener) as client:
        sealed = terminal.seal(client.codec, terminal.financial(), pin="1234", mac=True)
        response = await client.call(sealed)  # checks the response MAC
        assert response["39"] == "00" and len(response["38"]) == 6
        assert "64" in response.fields
        # A request with fields above 64 is MACed in DE128, and so is its answer.
        sealed = terminal.seal(client.codec, terminal.financial(**{"102": ACCOUNT_RICH}),
                               pin="1234", mac=True)
        assert "128" in sealed.fields
        response = await client.call(sealed)
        assert response["39"] == "00" and "128" in response.fields


@pytest.mark.parametrize("listener", LISTENERS)
async def test_63_missing_wrong_or_replayed_mac(running: Running, listener: str) -> None:
    terminal = Terminal("TERM0001")
    async with connect(running, listener) as client:
        missing = await client.call(terminal.seal(client.codec, terminal.financial()))
        assert missing["39"] == "63" and len(missing["37"]) == 12
        sealed = terminal.seal(client.codec, terminal.financial(), mac=True)
        tampered = bytearray(sealed.raw)
        tampered[-1] ^= 0x01
        await client.send(bytes(tampered))
        response = await client.receive()
        assert response["39"] == "63" and "64" not in response.fields
        # The genuine request after a 63 is not blocked by it.
        assert (await client.call(sealed))["39"] == "00"
        # A new request under an already used KSN is a replay.
        replayer = Terminal("TERM0001", dukpt=TerminalDukpt.from_bdk(DEMO_BDK,
                                                                     KSN_PREFIX + "00000"))
        replayer.stans = terminal.stans
        replayed = await client.call(replayer.seal(client.codec, replayer.financial(), mac=True))
        assert replayed["39"] == "63" and "64" not in replayed.fields


# -- every response code of section 5 ---------------------------------------------

Scenario = Callable[[Client, Terminal], Awaitable[Response]]


async def _send(client: Client, terminal: Terminal, fields: dict[str, str],
                pin: str | None = None, mac: bool = False) -> Response:
    return await client.call(terminal.seal(client.codec, fields, pin=pin, mac=mac))


async def _refer(client: Client, t: Terminal) -> Response:
    return await _send(client, t, t.financial(code="400000", amount=300_000,
                                              **{"103": ACCOUNT_POOR}), pin="1234")


async def _late_original(client: Client, t: Terminal) -> Response:
    original = t.financial()
    ack = await _send(client, t, t.follow_up("0400", original))
    assert ack["39"] == "00"
    return await _send(client, t, original)


async def _format_error(client: Client, t: Terminal) -> Response:
    fields = t.financial()
    del fields["41"]
    return await _send(client, t, fields)


async def _pin_tries(client: Client, t: Terminal) -> Response:
    for _ in range(3):
        assert (await _send(client, t, t.financial(), pin="0000"))["39"] == "55"
    return await _send(client, t, t.financial(), pin="1234")


async def _frequency(client: Client, t: Terminal) -> Response:
    for _ in range(20):
        assert (await _send(client, t, t.financial(amount=1)))["39"] == "00"
    return await _send(client, t, t.financial(amount=1))


async def _duplicate(client: Client, t: Terminal) -> Response:
    fields = t.financial(amount=1_000)
    assert (await _send(client, t, fields))["39"] == "00"
    return await _send(client, t, dict(fields, **{"4": "000000002000"}))


async def _unknown_hold(client: Client, t: Terminal) -> Response:
    return await _send(client, t, t.follow_up("0220", t.financial(mti="0100")))


async def _terminal_profile(client: Client, t: Terminal) -> Response:
    t2 = Terminal("TERM0002", dukpt=t.dukpt, stans=t.stans)
    return await _send(client, t2, t2.financial(code="010000"), pin="1234", mac=True)


SCENARIOS: dict[str, Scenario] = {
    "00": lambda c, t: _send(c, t, t.financial()),
    "01": _refer,
    "03": lambda c, t: _send(c, t, Terminal("TERM9999", stans=t.stans).financial()),
    "05": _late_original,
    "12": lambda c, t: _send(c, t, t.financial(mti="0100", code="200000")),
    "13": lambda c, t: _send(c, t, t.financial(amount=0)),
    "14": lambda c, t: _send(c, t, t.financial(pan="4761739001010011")),
    "15": lambda c, t: _send(c, t, t.financial(pan="4111111111111111")),
    "25": _unknown_hold,
    "30": _format_error,
    "41": lambda c, t: _send(c, t, t.financial(pan=CARD_LOST)),
    "43": lambda c, t: _send(c, t, t.financial(pan=CARD_STOLEN)),
    "51": lambda c, t: _send(c, t, t.financial(pan=CARD_POOR, amount=5_001)),
    "54": lambda c, t: _send(c, t, t.financial(pan=CARD_EXPIRED)),
    "55": lambda c, t: _send(c, t, t.financial(code="010000", amount=500)),
    "57": lambda c, t: _send(c, t, t.financial(**{"49": "840"})),
    "58": _terminal_profile,
    "61": lambda c, t: _send(c, t, t.financial(amount=500_001)),
    "63": lambda c, t: _send(c, t, Terminal("TERM0001", stans=t.stans).financial()),
    "65": _frequency,
    "75": _pin_tries,
    "76": lambda c, t: _send(c, t, t.financial(code="400000", **{"103": "6222020000000999"}),
                             pin="1234"),
    "94": _duplicate,
}


@pytest.mark.parametrize("rc", sorted(SCENARIOS))
async def test_response_code(running: Running, rc: str) -> None:
    terminal = Terminal()
    async with connect(running) as client:
        response = await SCENARIOS[rc](client, terminal)
    assert response["39"] == rc
    assert len(response["37"]) == 12  # on every 01xx/02xx/04xx response
    assert ("38" in response.fields) == (rc == "00")


async def test_91_issuer_inoperative(nursery: trio.Nursery, tmp_path: Path) -> None:
    switch = build_switch(make_config(tmp_path), handle_signals=False)
    with switch.processor.store.write():
        switch.processor.store.set_issuer_available("onus", False)
    switch.processor.reload()
    running = await start_switch(nursery, tmp_path, switch)
    terminal = Terminal()
    async with connect(running) as client:
        response = await client.call(terminal.seal(client.codec, terminal.financial()))
    assert response["39"] == "91"
    running.switch.shutdown()


async def test_96_failed_posting_answers_96_and_others_go_on(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = await start_switch(nursery, tmp_path)
    fail_once(monkeypatch, running.switch.processor.store, "insert_txn",
              RuntimeError("disk says no"))
    terminal = Terminal()
    async with connect(running) as client:
        first = await client.call(terminal.seal(client.codec, terminal.financial()))
        second = await client.call(terminal.seal(client.codec, terminal.financial()))
    assert (first["39"], second["39"]) == ("96", "00")
    running.switch.shutdown()


# -- message types, repeats, retransmissions, reversals -----------------------------


async def _available(client: Client, terminal: Terminal) -> int:
    """The available balance of CARD_RICH's account, by balance inquiry."""
    response = await client.call(terminal.seal(
        client.codec, terminal.financial(code="310000", amount=0), pin="1234", mac=True))
    assert response["39"] == "00"
    de54 = response["54"]
    assert de54[2:4] == "02" or de54[22:24] == "02"
    available = de54[20:40] if de54[22:24] == "02" else de54[:20]
    assert available[4:8] == "156C"
    return int(available[8:])


@pytest.mark.parametrize("listener", LISTENERS)
async def test_authorization_repeat_completion_and_its_repeat(running: Running, listener: str
                                                              ) -> None:
    terminal = Terminal("TERM0001")
    async with connect(running, listener) as client:
        before = await _available(client, terminal)
        auth = terminal.financial(mti="0100", amount=10_000)
        first = await client.call(terminal.seal(client.codec, auth, mac=True))
        assert first["t"] == "0110" and first["39"] == "00"
        repeat = await client.call(terminal.seal(client.codec, dict(auth, t="0101"), mac=True))
        assert repeat["t"] == "0110" and decision(repeat) == decision(first)
        assert await _available(client, terminal) == before - 10_000

        # Above the held amount: 13, and the hold stays.
        over = terminal.follow_up("0220", auth, amount=20_000)
        assert (await client.call(terminal.seal(client.codec, over, mac=True)))["39"] == "13"
        completion = terminal.follow_up("0220", auth, amount=6_000)
        done = await client.call(terminal.seal(client.codec, completion, mac=True))
        assert done["t"] == "0230" and done["39"] == "00" and done["90"] == completion["90"]
        again = await client.call(terminal.seal(client.codec, dict(completion, t="0221"),
                                                mac=True))
        assert again["t"] == "0230" and decision(again) == decision(done)
        assert await _available(client, terminal) == before - 6_000
        # The hold is gone: a second completion finds nothing (25).
        late = terminal.follow_up("0220", auth, amount=1_000)
        assert (await client.call(terminal.seal(client.codec, late, mac=True)))["39"] == "25"


@pytest.mark.parametrize("listener", LISTENERS)
async def test_financial_repeat_and_retransmission_get_the_same_decision(
    running: Running, listener: str
) -> None:
    terminal = Terminal("TERM0001")
    async with connect(running, listener) as client, connect(running, listener) as other:
        before = await _available(client, terminal)
        purchase = terminal.financial(amount=2_500)
        sealed = terminal.seal(client.codec, purchase, pin="1234", mac=True)
        first = await client.call(sealed)
        assert first["39"] == "00"
        # The same bytes again, on this connection and on another one.
        assert decision(await client.call(sealed)) == decision(first)
        assert decision(await other.call(sealed)) == decision(first)
        repeat = terminal.seal(client.codec, dict(purchase, t="0201"), pin="1234", mac=True)
        repeated = await client.call(repeat)
        assert repeated["t"] == "0210" and decision(repeated) == decision(first)
        assert await _available(client, terminal) == before - 2_500


async def test_repeat_whose_original_never_arrived_is_processed(running: Running) -> None:
    terminal = Terminal()
    async with connect(running) as client:
        response = await client.call(terminal.seal(
            client.codec, terminal.financial(mti="0201")))
        assert response["t"] == "0210" and response["39"] == "00" and "38" in response.fields


@pytest.mark.parametrize("listener", LISTENERS)
@pytest.mark.parametrize("mti", ["0400", "0420"])
async def test_reversal_and_its_repeat(running: Running, listener: str, mti: str) -> None:
    terminal = Terminal("TERM0001")
    response_mti = "0410" if mti == "0400" else "0430"
    async with connect(running, listener) as client:
        before = await _available(client, terminal)
        purchase = terminal.financial(amount=7_000)
        assert (await client.call(terminal.seal(client.codec, purchase, mac=True)))["39"] == "00"
        reversal = terminal.follow_up(mti, purchase)
        first = await client.call(terminal.seal(client.codec, reversal, mac=True))
        assert first["t"] == response_mti and first["39"] == "00"
        assert len(first["37"]) == 12 and "128" in first.fields  # DE90 means DE128
        repeat_mti = mti[:3] + "1"
        again = await client.call(terminal.seal(client.codec, dict(reversal, t=repeat_mti),
                                                mac=True))
        assert again["t"] == response_mti and decision(again) == decision(first)
        assert await _available(client, terminal) == before  # reversed once, in full
        # A reversal naming a different amount than its original: 12.
        other = terminal.financial(amount=1_000)
        assert (await client.call(terminal.seal(client.codec, other, mac=True)))["39"] == "00"
        wrong = terminal.follow_up(mti, other, amount=999)
        assert (await client.call(terminal.seal(client.codec, wrong, mac=True)))["39"] == "12"


async def test_partial_reversal_of_an_authorization_via_de95(running: Running) -> None:
    terminal = Terminal()
    async with connect(running, BIN_LISTENER) as client:
        before = await _available(client, terminal)
        auth = terminal.financial(mti="0100", amount=10_000)
        assert (await client.call(terminal.seal(client.codec, auth)))["39"] == "00"
        partial = terminal.follow_up("0400", auth, **{"95": f"{4_000:012d}" + "0" * 30})
        assert (await client.call(terminal.seal(client.codec, partial)))["39"] == "00"
        assert await _available(client, terminal) == before - 4_000


# -- concurrency ------------------------------------------------------------------


@pytest.mark.parametrize("listener", LISTENERS)
async def test_twenty_pipelined_requests_on_one_connection(running: Running, listener: str
                                                           ) -> None:
    terminal = Terminal("TERM0001")
    async with connect(running, listener) as client:
        sealed = [terminal.seal(client.codec, terminal.financial(code="200000", amount=n + 1),
                                mac=True) for n in range(20)]
        await client.send_raw(b"".join(
            len(s.raw).to_bytes(2, "big") + s.raw for s in sealed))
        by_stan = {s.fields["11"]: s for s in sealed}
        answered: dict[str, Response] = {}
        for _ in sealed:
            response = await client.receive()
            check_mac(client.codec, by_stan[response["11"]], response)
            answered[response["11"]] = response
    assert set(answered) == set(by_stan)
    for stan, response in answered.items():
        assert response["39"] == "00" and response["4"] == by_stan[stan].fields["4"]
    assert len({r["37"] for r in answered.values()}) == 20


async def test_fifty_connections_at_once(running: Running) -> None:
    results: list[tuple[str, str, str]] = []

    async def one(n: int) -> None:
        listener = LISTENERS[n % 2]
        terminal = Terminal("TERM0003")
        terminal.stans = iter(range(n * 1000 + 1, n * 1000 + 100))  # type: ignore[assignment]
        async with connect(running, listener) as client:
            echo = await client.call(terminal.seal(client.codec, terminal.network("301")))
            refund = await client.call(terminal.seal(
                client.codec, terminal.financial(code="200000", amount=n + 1)))
            results.append((echo["39"], refund["39"], refund["37"]))

    async with trio.open_nursery() as clients:
        for n in range(50):
            clients.start_soon(one, n)
    assert len(results) == 50
    assert all(echo == "00" and refund == "00" for echo, refund, _ in results)
    assert len({rrn for *_, rrn in results}) == 50
    assert await echo_ok(running)


async def test_pins_are_verified_under_the_zone_key_after_edge_translation(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The front rewraps DE52 from the terminal's DUKPT PIN key to the
    store's zone PIN key (keys/demo-zpk); the ledger verifies under it and
    answers as before: 00 for the right PIN, 55 for a wrong one."""
    running = await start_switch(nursery, tmp_path)
    hsm = running.switch.hsm
    assert hsm.zone_pin_key_name() == "demo-zpk"  # type: ignore[attr-defined]
    calls = {"zone": 0, "dukpt": 0}
    zone, dukpt_path = hsm.verify_zone_pin, hsm.verify_pin

    def counting_zone(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["zone"] += 1
        return zone(*args, **kwargs)

    def counting_dukpt(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["dukpt"] += 1
        return dukpt_path(*args, **kwargs)

    monkeypatch.setattr(hsm, "verify_zone_pin", counting_zone)
    monkeypatch.setattr(hsm, "verify_pin", counting_dukpt)
    terminal = Terminal(terminal_id="TERM0001")
    async with connect(running) as client:
        right = await client.call(
            terminal.seal(client.codec, terminal.financial(), pin="1234", mac=True))
        wrong = await client.call(
            terminal.seal(client.codec, terminal.financial(), pin="9999", mac=True))
    assert (right["39"], wrong["39"]) == ("00", "55")
    assert calls == {"zone": 2, "dukpt": 0}
    running.switch.shutdown()
