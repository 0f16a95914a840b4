"""Conformance of the running switch to the terminal interface, over real TCP.

Each test names the section of the interface (the product specification the
README summarises) whose rule it checks, and covers a rule the end-to-end
tests (``test_server_e2e.py``, ``test_server_abuse.py``) do not check
exactly: keep-alives between requests and the frame-size bound at its edge
(section 1), hex bitmap case and the wire form of DE52/DE64 (section 2), the
mandatory field lists, echo list, idempotency key and content, repeats,
completions, reversals and the order of checks (section 3), PIN and MAC
requirements and the KSN replay window (section 4), PIN tries (section 5),
and the demo data and limits (section 6).

Every request goes through :meth:`Client.call`, which also checks section
4's response MAC rule (a MACed request's answer carries a valid MAC unless
it is 30 or 63; any other answer carries none).
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import iso8583
import iso8583.specs
import pytest
import trio

from iso_switch.codec import Codec
from iso_switch.processor import Processor, open_store
from iso_switch.security.dukpt import TerminalDukpt
from iso_switch.server import build_switch
from tests.server_helpers import (
    ACCOUNT_POOR,
    ACCOUNT_RICH,
    BIN_LISTENER,
    CARD_EXPIRED,
    CARD_LOST,
    CARD_POOR,
    CARD_RICH,
    CARD_STOLEN,
    DEMO_BDK,
    HEX_LISTENER,
    KSN_PREFIX,
    MAC_BYTES,
    Client,
    Response,
    Running,
    Terminal,
    check_mac,
    connect,
    de90,
    frame,
    make_config,
    pin_block_hex,
    retail_mac,
    start_switch,
)

LISTENERS = [HEX_LISTENER, BIN_LISTENER]
DECISION_FIELDS = ("37", "38", "39", "54")
SETTLEMENT = "6222020000009999"
CASH_CLEARING = "6222020000009990"
ACCOUNT_LOST = "6222020000000031"
ACCOUNT_STOLEN = "6222020000000049"
ACCOUNT_EXPIRED = "6222020000000056"
MAX_FRAME_BYTES = 8192  # section 1: the default maximum
TRACK2_TAIL = "=28121010000000"
# Section 3, "Responses": the request fields an answer echoes.
ECHOED = frozenset({"2", "3", "4", "7", "11", "12", "13", "32", "41", "42", "49", "70", "90",
                    "102", "103"})


@pytest.fixture
async def running(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Running]:
    r = await start_switch(nursery, tmp_path)
    yield r
    r.switch.shutdown()


class Clock:
    """A settable clock for the switch and its processor (hold expiry, and a
    business day that does not roll over in the middle of a test)."""

    def __init__(self) -> None:
        # Midday in Asia/Shanghai (the default business-day zone).
        self.moment = datetime.now(UTC).replace(hour=4, minute=0, second=0, microsecond=0)

    def now(self) -> datetime:
        return self.moment


@pytest.fixture
async def clocked(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[tuple[Running, Clock]]:
    clock = Clock()
    switch = build_switch(make_config(tmp_path), handle_signals=False)
    switch.clock = clock.now
    switch.processor.clock = clock.now
    r = await start_switch(nursery, tmp_path, switch)
    yield r, clock
    r.switch.shutdown()


# -- helpers --------------------------------------------------------------------


def device(serial: int, counter: int = 0) -> TerminalDukpt:
    """A DUKPT device of the demo BDK; its next KSN counter is ``counter + 1``."""
    return TerminalDukpt.from_bdk(DEMO_BDK, f"{KSN_PREFIX[:-1]}{serial:X}00000", counter)


def terminal(terminal_id: str = "TERM0003", serial: int = 0xE) -> Terminal:
    return Terminal(terminal_id, dukpt=device(serial))


async def send(client: Client, t: Terminal, fields: dict[str, str], *, pin: str | None = None,
               mac: bool = False) -> Response:
    return await client.call(t.seal(client.codec, fields, pin=pin, mac=mac))


def decision(response: Response) -> tuple[str | None, ...]:
    return tuple(response.get(name) for name in DECISION_FIELDS)


def data_fields(response: Response) -> set[str]:
    """The data elements of a decoded message (not the MTI or bitmaps)."""
    return {k for k in response.fields if k.isdigit() and k != "1"}


def balances(tmp_path: Path, number: str) -> tuple[int, int]:
    """(ledger, available) of an account, read through a second connection
    (responses leave only after their batch committed)."""
    store = open_store(tmp_path)
    try:
        account = store.account_by_number(number)
        assert account is not None
        return account.ledger_balance_minor, account.available_balance_minor
    finally:
        store.close()


def available(tmp_path: Path, number: str = ACCOUNT_RICH) -> int:
    return balances(tmp_path, number)[1]


def without(fields: dict[str, str], *names: str) -> dict[str, str]:
    return {k: v for k, v in fields.items() if k not in names}


# -- section 1: transport and framing ----------------------------------------------


@pytest.mark.parametrize("listener", LISTENERS)
async def test_s1_keep_alives_between_pipelined_requests(running: Running, listener: str
                                                         ) -> None:
    """Section 1: a zero-length frame is a keep-alive, ignored, never an error,
    wherever it falls between requests (here in the same write)."""
    t = terminal()
    async with connect(running, listener) as client:
        first = t.seal(client.codec, t.network("301"))
        second = t.seal(client.codec, t.financial())
        keep_alive = b"\x00\x00"
        await client.send_raw(keep_alive + frame(first.raw) + keep_alive * 3 + frame(second.raw)
                              + keep_alive)
        answers = {(r := await client.receive())["11"]: r for _ in range(2)}
        assert answers[first.fields["11"]]["39"] == "00"
        assert answers[second.fields["11"]]["39"] == "00"
        await client.send_raw(keep_alive)
        assert (await send(client, t, t.network("301")))["39"] == "00"


def _padded_echo(codec: Codec, t: Terminal, size: int) -> bytes:
    """An 0800 echo of exactly ``size`` bytes: filled with LLLVAR fields the
    0800 does not list (section 3: ignored)."""
    base = t.network("301")
    fillers = [k for k in sorted(codec.fields, key=lambda k: int(k) if k.isdigit() else 0)
               if k.isdigit() and int(k) not in (1, 62, 64, 128)
               and codec.fields[k].len_type == 3 and not codec.fields[k].binary
               and k not in base]
    fields = dict(base)
    for name in fillers:
        missing = size - len(codec.encode(fields))
        if missing <= 0:
            break
        trial = dict(fields, **{name: ""})
        room = size - len(codec.encode(trial))
        fields[name] = "X" * max(0, min(room, codec.fields[name].max_len))
    raw = codec.encode(fields)
    assert len(raw) == size
    return raw


@pytest.mark.parametrize("listener", LISTENERS)
async def test_s1_frame_of_exactly_the_maximum_is_served_one_byte_more_closes(
    running: Running, listener: str
) -> None:
    """Section 1: frames *larger than* the maximum (default 8 KiB) close that
    connection; a frame of exactly 8192 bytes is served; others go on."""
    t = terminal()
    async with connect(running, listener) as client, connect(running, listener) as other:
        exact = _padded_echo(client.codec, t, MAX_FRAME_BYTES)
        await client.send(exact)
        response = await client.receive()
        assert response["t"] == "0810" and response["39"] == "00"
        assert data_fields(response) == {"7", "11", "39", "41", "70"}
        over = _padded_echo(client.codec, t, MAX_FRAME_BYTES + 1)
        await client.send(over)
        assert await client.closed_by_switch()
        assert (await send(other, t, t.network("301")))["39"] == "00"


async def test_s1_each_response_leaves_as_soon_as_ready_on_its_own_connection(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Section 1: many messages in flight on one connection, each response on
    its own connection as soon as it is ready: an echo sent after a slow
    financial request (on the same connection or another) is not held
    behind it."""
    processor = running.switch.processor
    original = processor.process_batch
    release = threading.Event()
    entered = threading.Event()
    slow_stan = "424242"

    def gated(requests):  # type: ignore[no-untyped-def]
        if any(r.fields.get("11") == slow_stan for r in requests):
            entered.set()
            release.wait(10)  # a stalled decision, in the writer's thread
        return original(requests)

    monkeypatch.setattr(processor, "process_batch", gated)
    t = terminal()
    try:
        async with connect(running) as client, connect(running, BIN_LISTENER) as other:
            slow = t.financial(**{"11": slow_stan})
            await client.send(t.seal(client.codec, slow))
            with trio.fail_after(10):
                while not entered.is_set():  # the slow request is being decided
                    await trio.sleep(0.01)
            assert (await send(client, t, t.network("301")))["39"] == "00"
            assert (await send(other, t, t.network("301")))["39"] == "00"
            release.set()
            answer = await client.receive()
            assert answer["t"] == "0210" and answer["11"] == slow_stan and answer["39"] == "00"
    finally:
        release.set()


# -- section 2: the two default listeners ------------------------------------------


async def test_s2_hex_listener_accepts_lower_case_and_answers_upper_case(running: Running
                                                                          ) -> None:
    """Section 2: ``ascii87-hex`` bitmaps are 16 hex characters; lower case is
    accepted (primary and secondary bitmap, and a lower-case DE52 and DE64,
    MACed over the bytes as received), upper case is sent."""
    t = terminal("TERM0001")
    async with connect(running) as client:
        fields = t.financial(code="010000", amount=500, **{"102": ACCOUNT_RICH})
        sealed = t.seal(client.codec, fields, pin="1234", mac=True)
        assert sealed.raw[4:5] in b"89ABCDEF"  # secondary bitmap present
        body = sealed.raw[:-2 * MAC_BYTES]
        lowered = body[:4] + body[4:36].lower() + body[36:]
        for name, size in (("52", 16), ("62", 20)):  # PIN block and KSN too
            at = lowered.index(sealed.fields[name].encode())
            lowered = lowered[:at] + lowered[at:at + size].lower() + lowered[at + size:]
        assert sealed.keys is not None
        tag = retail_mac(sealed.keys.mac_request, lowered).hex().lower().encode()
        raw = lowered + tag
        assert raw != sealed.raw
        await client.send(raw)
        response = await client.receive()
        check_mac(client.codec, sealed, response)
        assert response["39"] == "00"
        bitmaps = response.raw[4:36].decode()
        assert bitmaps == bitmaps.upper() and bitmaps[0] in "89ABCDEF"
        assert response.raw[-16:] == response.raw[-16:].upper()


@pytest.mark.parametrize("listener", LISTENERS)
async def test_s2_pin_block_and_mac_wire_form(running: Running, listener: str) -> None:
    """Sections 2 and 4: DE52 and DE64 are 16 hex characters on
    ``ascii87-hex`` and 8 binary bytes on ``ascii87-bin``; the response MAC is
    the retail MAC under the response key, in the same form."""
    t = terminal("TERM0001")
    async with connect(running, listener) as client:
        sealed = t.seal(client.codec, t.financial(code="010000", amount=100), pin="1234",
                        mac=True)
        assert sealed.keys is not None
        mac = retail_mac(sealed.keys.mac_request, sealed.raw[:-(MAC_BYTES if listener ==
                                                                BIN_LISTENER else 16)])
        pin = bytes.fromhex(sealed.fields["52"])
        if listener == HEX_LISTENER:
            assert sealed.raw.endswith(mac.hex().upper().encode())
            assert sealed.fields["52"].encode() in sealed.raw
        else:
            assert sealed.raw.endswith(mac)
            assert pin in sealed.raw and sealed.fields["52"].encode() not in sealed.raw
        response = await client.call(sealed)
        assert response["39"] == "00"
        expected = retail_mac(sealed.keys.mac_response, response.raw[:-(
            MAC_BYTES if listener == BIN_LISTENER else 16)])
        tail = expected if listener == BIN_LISTENER else expected.hex().upper().encode()
        assert response.raw.endswith(tail)


@pytest.mark.parametrize("listener", LISTENERS)
async def test_s2_a_pyiso8583_client_with_pin_and_mac(running: Running, listener: str) -> None:
    """Section 2: the listeners speak pyiso8583's ``default_ascii`` /
    ``default`` layouts: a client built on pyiso8583 alone (PIN block and
    MAC from psec) gets an approved, correctly MACed transfer back."""
    spec = iso8583.specs.default_ascii if listener == HEX_LISTENER else iso8583.specs.default
    t = terminal("TERM0001")
    ksn, keys = t.dukpt.next_transaction()
    fields = t.financial(code="400000", amount=1_234, **{
        "62": ksn, "52": pin_block_hex(keys, "1234", CARD_RICH), "102": ACCOUNT_RICH,
        "103": ACCOUNT_POOR, "128": "0" * 16})
    size = 16 if listener == HEX_LISTENER else MAC_BYTES
    raw = bytes(iso8583.encode(dict(fields), spec)[0])[:-size]
    mac = retail_mac(keys.mac_request, raw)
    raw += mac.hex().upper().encode() if size == 16 else mac
    async with connect(running, listener) as client:
        await client.send(raw)
        answer = await client.receive_frame()
    assert answer is not None
    response = iso8583.decode(answer, spec)[0]
    assert response["t"] == "0210" and response["39"] == "00"
    expected = retail_mac(keys.mac_response, answer[:-size])
    assert bytes.fromhex(response["128"]) == expected


# -- section 3: mandatory fields ----------------------------------------------------


FINANCIAL_MANDATORY = ("3", "4", "7", "11", "12", "13", "22", "41", "42", "49")
COMPLETION_MANDATORY = ("3", "4", "7", "11", "41", "42", "49", "90")
REVERSAL_MANDATORY = ("7", "11", "41", "42", "90")


def _request_of(t: Terminal, mti: str) -> dict[str, str]:
    if mti[:3] in ("010", "020"):
        return t.financial(mti=mti, **{"14": "2812", "32": "12345"})
    original = t.financial(mti="0100")
    return t.follow_up(mti, original, **{"32": "12345"})


@pytest.mark.parametrize(("mti", "mandatory"), [
    *[(m, FINANCIAL_MANDATORY) for m in ("0100", "0101", "0200", "0201")],
    *[(m, COMPLETION_MANDATORY) for m in ("0220", "0221")],
    *[(m, REVERSAL_MANDATORY) for m in ("0400", "0401", "0420", "0421")],
])
async def test_s3_each_missing_mandatory_field_is_30(running: Running, mti: str,
                                                     mandatory: Sequence[str]) -> None:
    """Section 3, "Mandatory fields": each missing mandatory field is a format
    error (30), answered with the response MTI, DE37 and no MAC, before the
    MAC step (TERM0001 requires a MAC; none is sent)."""
    t = terminal("TERM0001")
    async with connect(running) as client:
        cases: list[tuple[str, ...]] = [(name,) for name in mandatory]
        if mti[:3] != "040" and mti[:3] != "042":
            cases.append(("2", "35"))  # DE2 or DE35
        for missing in cases:
            response = await send(client, t, without(_request_of(t, mti), *missing))
            assert response["39"] == "30", missing
            assert response["t"] == mti[:2] + str(int(mti[2]) + 1) + "0"
            assert len(response["37"]) == 12, missing
            assert "38" not in response.fields


@pytest.mark.parametrize("missing", ["7", "11", "70"])
async def test_s3_0800_missing_mandatory_field_is_30(running: Running, missing: str) -> None:
    """Section 3: 0800 needs DE7, DE11 and DE70; DE41 is optional."""
    t = terminal()
    async with connect(running) as client:
        response = await send(client, t, without(t.network("301"), missing))
        assert response["t"] == "0810" and response["39"] == "30"
        assert (await send(client, t, without(t.network("301"), "41")))["39"] == "00"


@pytest.mark.parametrize("listener", LISTENERS)
async def test_s3_card_from_de2_or_de35_and_different_cards_are_30(running: Running,
                                                                   listener: str) -> None:
    """Section 3: DE2 or DE35 names the card; DE2 and DE35 naming different
    cards is a format error (30)."""
    t = terminal()
    async with connect(running, listener) as client:
        track = without(t.financial(), "2") | {"35": CARD_RICH + TRACK2_TAIL}
        assert (await send(client, t, track))["39"] == "00"
        both = t.financial() | {"35": CARD_RICH + TRACK2_TAIL}
        assert (await send(client, t, both))["39"] == "00"
        mixed = t.financial() | {"35": CARD_POOR + TRACK2_TAIL}
        response = await send(client, t, mixed)
        assert response["39"] == "30" and len(response["37"]) == 12


async def test_s3_fields_a_message_does_not_list_are_ignored(running: Running) -> None:
    """Section 3: fields a message does not list are ignored (and not echoed):
    an unknown DE48, and on a reversal an (unlisted) DE14 that would be a
    format error on an 0200, where DE14 is listed."""
    t = terminal()
    async with connect(running) as client:
        purchase = t.financial(**{"48": "anything at all", "60": "x"})
        response = await send(client, t, purchase)
        assert response["39"] == "00"
        assert "48" not in response.fields and "60" not in response.fields
        bad_expiry = t.financial(**{"14": "AB12"})
        assert (await send(client, t, bad_expiry))["39"] == "30"
        reversal = t.follow_up("0400", purchase, **{"14": "AB12", "48": "x", "22": "ZZZ"})
        response = await send(client, t, reversal)
        assert response["39"] == "00" and "14" not in response.fields
        # On a completion DE14 and DE22 are not listed; on a reversal neither
        # are DE35 nor DE52 (even naming another card, or not hex).
        auth = t.financial(mti="0100")
        assert (await send(client, t, auth))["39"] == "00"
        completion = t.follow_up("0220", auth, **{"14": "AB12", "22": "ZZZ"})
        assert (await send(client, t, completion))["39"] == "00"
        assert (await send(client, t, t.follow_up("0220", auth) | {"12": "99999A"}))[
            "39"] == "30"  # DE12 is listed on 0220
        odd = t.follow_up("0420", auth, **{"35": CARD_POOR + TRACK2_TAIL, "52": "Z" * 16})
        assert (await send(client, t, odd))["39"] == "00"
        echo = t.network("301") | {"2": CARD_RICH, "48": "x"}
        response = await send(client, t, echo)
        assert response["39"] == "00" and data_fields(response) == {"7", "11", "39", "41", "70"}


@pytest.mark.parametrize("de7", ["1301120000", "0001120000", "0132120000", "0230120000",
                                 "0431120000", "0101240000", "0101126000", "0101120060",
                                 "01011200AB"])
async def test_s3_invalid_de7_is_30(running: Running, de7: str) -> None:
    """Section 3: DE7 is MMDDhhmmss; anything else is a format error (30), on
    financial requests and on 0800 alike."""
    t = terminal()
    async with connect(running) as client:
        assert (await send(client, t, t.financial(**{"7": de7})))["39"] == "30"
        assert (await send(client, t, t.network("301") | {"7": de7}))["39"] == "30"
        assert (await send(client, t, t.financial(**{"7": "0229235959"})))["39"] == "00"
        assert (await send(client, t, t.network("301") | {"7": "0229235959"}))["39"] == "00"


@pytest.mark.parametrize("stan", ["00000A", "12 456", "-12345"])
async def test_s3_undecodable_de11_is_30(running: Running, stan: str) -> None:
    """Section 3: an undecodable field (DE11 is 6 digits) is a format error
    (30), on an 0800 as on a financial request."""
    t = terminal()
    async with connect(running) as client:
        assert (await send(client, t, t.financial(**{"11": stan})))["39"] == "30"
        assert (await send(client, t, t.network("301") | {"11": stan}))["39"] == "30"


@pytest.mark.parametrize(("mti", "code", "rc"), [
    ("0100", "000000", "00"), ("0100", "010000", "00"), ("0100", "300000", "00"),
    ("0100", "310000", "00"), ("0100", "200000", "12"), ("0100", "400000", "12"),
    ("0200", "200000", "00"), ("0200", "400000", "00"), ("0200", "990000", "12"),
    ("0200", "500000", "12"), ("0220", "200000", "12"), ("0220", "300000", "12"),
    ("0220", "310000", "12"), ("0220", "400000", "12"),
])
async def test_s3_processing_code_allowed_per_mti(running: Running, mti: str, code: str,
                                                  rc: str) -> None:
    """Section 3: allowed processing codes per MTI (else 12)."""
    t = terminal()
    async with connect(running) as client:
        extra = {"103": ACCOUNT_POOR}
        if mti == "0220":
            auth = t.financial(mti="0100")
            assert (await send(client, t, auth))["39"] == "00"
            fields = t.follow_up("0220", auth) | {"3": code}
        else:
            fields = t.financial(mti=mti, code=code, amount=100, **extra)
        assert (await send(client, t, fields, pin="1234"))["39"] == rc


async def test_s3_transfer_source_and_destination(running: Running, tmp_path: Path) -> None:
    """Section 3: a transfer (40) goes from the card's account, or DE102 when
    present and owned by the card (else 57), to DE103, which must differ from
    the source (else 12); DE103 is mandatory for 40 (else 30), on 0200 and on
    0100 (where 40 is then refused 12 only once the format is right)."""
    t = terminal()
    async with connect(running) as client:

        async def transfer(**extra: str) -> str:
            fields = t.financial(code="400000", amount=1_000, **extra)
            return (await send(client, t, fields, pin="1234"))["39"]

        assert await transfer(**{"102": ACCOUNT_POOR, "103": ACCOUNT_STOLEN}) == "57"
        assert await transfer(**{"102": "6222020000001111", "103": ACCOUNT_POOR}) == "57"
        assert await transfer(**{"102": ACCOUNT_RICH, "103": ACCOUNT_RICH}) == "12"
        assert await transfer(**{"103": ACCOUNT_RICH}) == "12"
        assert await transfer() == "30"
        no_dest = t.financial(mti="0100", code="400000", amount=1_000)
        assert (await send(client, t, no_dest, pin="1234"))["39"] == "30"
        before = available(tmp_path, ACCOUNT_POOR)
        assert await transfer(**{"102": ACCOUNT_RICH, "103": ACCOUNT_POOR}) == "00"
        assert available(tmp_path, ACCOUNT_POOR) == before + 1_000


async def test_s3_de62_required_with_pin_block(running: Running) -> None:
    """Section 3: DE62 carries the KSN whenever DE52 or a MAC is present."""
    t = terminal()
    async with connect(running) as client:
        sealed = t.seal(client.codec, t.financial(code="010000", amount=100), pin="1234")
        response = await send(client, t, without(sealed.fields, "62"))
        assert response["39"] == "30"


# -- section 3: originals, repeats and duplicates -------------------------------------


async def test_s3_de32_is_part_of_the_key(running: Running) -> None:
    """Section 3: the key includes DE32 when present: the same DE41 + DE11 +
    DE7 from two acquirers are two transactions, not a duplicate (94)."""
    t = terminal()
    async with connect(running) as client:
        first = t.financial(**{"32": "111"})
        second = dict(first, **{"32": "222", "4": "000000002000"})
        a = await send(client, t, first)
        b = await send(client, t, second)
        assert a["39"] == b["39"] == "00" and a["37"] != b["37"]
        assert (await send(client, t, dict(first, **{"4": "000000002000"})))["39"] == "94"


@pytest.mark.parametrize(("auth_de32", "de90_de32"), [
    (None, ""), ("0", ""), ("00000000000", ""), (None, "0"), ("12345", "12345"),
    ("0012345", "12345"),
])
async def test_s3_de90_finds_the_original_with_absent_or_zero_de32(
    running: Running, auth_de32: str | None, de90_de32: str
) -> None:
    """Section 3: DE90 = original MTI + DE11 + DE7 + DE32 right-justified,
    zero-filled + 11 zeros; an absent DE32 and an all-zero DE32 are the same."""
    t = terminal()
    async with connect(running) as client:
        extra = {} if auth_de32 is None else {"32": auth_de32}
        auth = t.financial(mti="0100", amount=5_000, **extra)
        assert (await send(client, t, auth))["39"] == "00"
        completion = t.follow_up("0220", auth, amount=4_000)
        completion["90"] = de90(without(auth, "32") | {"32": de90_de32})
        assert (await send(client, t, completion))["39"] == "00"


async def test_s3_content_pan_from_de35_and_which_fields_count(running: Running) -> None:
    """Section 3: the content is the PAN (DE2, or from DE35), DE3, DE4, DE49,
    DE102, DE103. The same key with the same content is a retransmission (the
    same decision) however the PAN was carried; other content is 94; fields
    outside the content (DE22, DE12) do not count."""
    t = terminal()
    async with connect(running) as client:
        purchase = t.financial(**{"102": ACCOUNT_RICH})
        first = await send(client, t, purchase)
        assert first["39"] == "00"
        by_track = without(purchase, "2") | {"35": CARD_RICH + TRACK2_TAIL}
        assert decision(await send(client, t, by_track)) == decision(first)
        other_fields = purchase | {"22": "021", "12": "000000", "48": "x"}
        assert decision(await send(client, t, other_fields)) == decision(first)
        for change in ({"2": CARD_POOR}, {"3": "200000"}, {"4": "000000000001"},
                       {"49": "840"}, {"102": ACCOUNT_POOR}, {"103": ACCOUNT_POOR}):
            response = await send(client, t, purchase | change)
            assert response["39"] == "94", change
            assert len(response["37"]) == 12 and "38" not in response.fields


async def test_s3_0800_is_never_deduplicated(running: Running) -> None:
    """Section 3: 0800 messages are never deduplicated: the same sign-on
    twice is answered twice, afresh."""
    t = terminal()
    async with connect(running) as client:
        sign_on = t.network("001")
        for _ in range(3):
            assert (await send(client, t, sign_on))["39"] == "00"


@pytest.mark.parametrize("mti", ["0101", "0201", "0221", "0401", "0421"])
async def test_s3_repeat_whose_original_never_arrived_is_an_original(
    running: Running, tmp_path: Path, mti: str
) -> None:
    """Section 3: a repeat whose original never arrived is processed as an
    original (and its retransmission gets that decision)."""
    t = terminal()
    async with connect(running) as client:
        before = available(tmp_path)
        if mti in ("0101", "0201"):
            fields = t.financial(mti=mti, amount=1_000)
        else:
            purchase_mti = "0100" if mti == "0221" else "0200"
            original = t.financial(mti=purchase_mti, amount=1_000)
            assert (await send(client, t, original))["39"] == "00"
            fields = t.follow_up(mti, original, amount=None if mti != "0221" else 600)
        first = await send(client, t, fields)
        assert first["39"] == "00"
        assert decision(await send(client, t, fields)) == decision(first)
        expected = {"0101": 1_000, "0201": 1_000, "0221": 600, "0401": 0, "0421": 0}[mti]
        assert available(tmp_path) == before - expected


async def test_s3_a_94_and_a_stored_decision_leave_the_ksn_high_water_mark(
    running: Running, tmp_path: Path
) -> None:
    """Section 3: "A 94 or a stored decision changes nothing, not even the KSN
    high-water mark": after a 94 under counter 10 and a repeat answered from
    the stored decision under counter 11, new requests under counters 10 and
    11 are still accepted (not replays)."""
    t = Terminal("TERM0001", dukpt=device(0xA, counter=0))
    async with connect(running) as client:
        purchase = t.financial(amount=1_000)
        first = await send(client, t, purchase, mac=True)  # counter 1
        assert first["39"] == "00"
        before = available(tmp_path)
        t.dukpt = device(0xA, counter=9)
        changed = purchase | {"4": "000000002000"}
        assert (await send(client, t, changed, mac=True))["39"] == "94"  # counter 10
        repeat = await send(client, t, purchase | {"t": "0201"}, mac=True)  # counter 11
        assert decision(repeat) == decision(first)
        assert available(tmp_path) == before
        t.dukpt = device(0xA, counter=10)
        assert (await send(client, t, t.financial(amount=100), mac=True))["39"] == "00"
        t.dukpt = device(0xA, counter=9)
        assert (await send(client, t, t.financial(amount=100), mac=True))["39"] == "00"


async def test_s3_30_and_63_answers_do_not_block_the_genuine_request(
    running: Running
) -> None:
    """Section 3: only decisions past the MAC step are stored, and a 30 or 63
    commits nothing (not the KSN either): the genuine request under the same
    key and the same KSN is then approved."""
    t = terminal("TERM0001")
    async with connect(running) as client:
        sealed = t.seal(client.codec, t.financial(), pin="1234", mac=True)
        # The same key and KSN, an undecodable DE22: 30 (the MAC no longer matches).
        bad = t.financial() | {k: sealed.fields[k] for k in ("7", "11", "12", "13", "62", "52")}
        bad["22"] = "0X1"
        bad["64"] = sealed.fields["64"]
        await client.send(client.codec.encode(bad))
        assert (await client.receive())["39"] == "30"
        unmaced = without(sealed.fields, "64")
        assert (await send(client, t, unmaced))["39"] == "63"
        assert (await client.call(sealed))["39"] == "00"


@pytest.mark.parametrize("two_connections", [False, True])
async def test_s3_original_and_repeat_in_flight_at_once_are_decided_once(
    running: Running, tmp_path: Path, two_connections: bool
) -> None:
    """Section 3: two requests with the same key in flight at once (an
    original and its repeat, sent back to back without waiting, on one
    connection or two) are decided once: the same DE37/DE38/DE39, one debit."""
    t = terminal("TERM0001")
    before = available(tmp_path)
    async with connect(running) as client, connect(running, BIN_LISTENER) as other:
        purchase = t.financial(amount=3_000)
        original = t.seal(client.codec, purchase, pin="1234", mac=True)
        second = other if two_connections else client
        repeat = t.seal(second.codec, purchase | {"t": "0201"}, pin="1234", mac=True)
        if two_connections:
            await client.send(original)
            await other.send(repeat)
            answers = [await client.receive(), await other.receive()]
            check_mac(client.codec, original, answers[0])
            check_mac(other.codec, repeat, answers[1])
        else:
            await client.send_raw(frame(original.raw) + frame(repeat.raw))
            answers = [await client.receive(), await client.receive()]
            # The same decision either way round: each answer's MAC under its own KSN.
            assert {a["t"] for a in answers} == {"0210"}
        assert answers[0]["39"] == "00"
        assert decision(answers[0]) == decision(answers[1])
    assert available(tmp_path) == before - 3_000


async def test_s3_completion_above_hold_is_13_and_unknown_or_expired_hold_is_25(
    clocked: tuple[Running, Clock], tmp_path: Path
) -> None:
    """Section 3: DE4 of a 0220 is at most the held amount (else 13) and the
    rest of the hold is released; holds expire after 7 days, and a 0220 for
    an unknown or expired hold answers 25."""
    running, clock = clocked
    t = terminal()
    async with connect(running) as client:
        before = available(tmp_path)
        auth = t.financial(mti="0100", amount=10_000)
        assert (await send(client, t, auth))["39"] == "00"
        assert (await send(client, t, t.follow_up("0220", auth, amount=10_001)))["39"] == "13"
        assert available(tmp_path) == before - 10_000
        assert (await send(client, t, t.follow_up("0220", auth, amount=7_500)))["39"] == "00"
        assert balances(tmp_path, ACCOUNT_RICH) == (before - 7_500, before - 7_500)
        # A hold that expired.
        late = t.financial(mti="0100", amount=2_000)
        assert (await send(client, t, late))["39"] == "00"
        clock.moment += timedelta(days=7, seconds=1)
        assert (await send(client, t, t.follow_up("0220", late, amount=2_000)))["39"] == "25"
        assert available(tmp_path) == before - 7_500
        # A completion whose DE90 names a purchase, not an authorization.
        purchase = t.financial(amount=100)
        assert (await send(client, t, purchase))["39"] == "00"
        assert (await send(client, t, t.follow_up("0220", purchase)))["39"] == "25"


async def test_s3_reversal_rules(running: Running, tmp_path: Path) -> None:
    """Section 3: a reversal reverses in full, or down to DE95's actual
    amount (above the original: 13); DE2, DE3, DE4 or DE49 other than the
    original's: 12 (and nothing moves)."""
    t = terminal()
    async with connect(running) as client:
        before = available(tmp_path)
        purchase = t.financial(amount=10_000)
        assert (await send(client, t, purchase))["39"] == "00"
        above = t.follow_up("0400", purchase, **{"95": f"{10_001:012d}" + "0" * 30})
        assert (await send(client, t, above))["39"] == "13"
        for change in ({"2": CARD_POOR}, {"3": "200000"}, {"4": "000000009999"},
                       {"49": "840"}):
            response = await send(client, t, t.follow_up("0400", purchase) | change)
            assert response["39"] == "12", change
        assert available(tmp_path) == before - 10_000
        partial = t.follow_up("0420", purchase, **{"95": f"{2_500:012d}" + "0" * 30})
        assert (await send(client, t, partial))["39"] == "00"
        assert available(tmp_path) == before - 2_500
        # A reversal naming another card than its (declined, unknown) original's.
        unknown = t.financial(pan="4761739001010069")
        assert (await send(client, t, unknown))["39"] == "14"
        other_card = t.follow_up("0400", unknown) | {"2": "4761739001010077"}
        assert (await send(client, t, other_card))["39"] == "12"
        assert (await send(client, t, t.follow_up("0420", unknown)))["39"] == "00"
        # Without DE2/3/4/49 (all optional), the rest of it.
        bare = without(t.follow_up("0400", purchase), "2", "3", "4", "49")
        assert (await send(client, t, bare))["39"] == "00"
        assert available(tmp_path) == before


@pytest.mark.parametrize("mti", ["0100", "0200"])
async def test_s3_reversal_of_unknown_original_then_late_original_is_05_with_nothing_left(
    running: Running, tmp_path: Path, mti: str
) -> None:
    """Section 3: a reversal of an unknown original is acknowledged (00) and
    remembered; the late original is declined (05), never left as a hold or
    a posting; its repeat gets the same 05."""
    t = terminal()
    async with connect(running) as client:
        before = balances(tmp_path, ACCOUNT_RICH)
        original = t.financial(mti=mti, amount=4_000)
        ack = await send(client, t, t.follow_up("0420", original))
        assert ack["39"] == "00" and len(ack["37"]) == 12
        late = await send(client, t, original)
        assert late["39"] == "05" and "38" not in late.fields
        repeat = await send(client, t, original | {"t": mti[:3] + "1"})
        assert decision(repeat) == decision(late)
        assert balances(tmp_path, ACCOUNT_RICH) == before


# -- section 3: responses ----------------------------------------------------------


@pytest.mark.parametrize("listener", LISTENERS)
async def test_s3_response_echo_list_is_exact(running: Running, listener: str) -> None:
    """Section 3, "Responses": echo DE2, 3, 4, 7, 11, 12, 13, 32, 41, 42, 49,
    70, 90, 102, 103 when the request had them, add DE37, DE38 (approved),
    DE39, DE54 (inquiries), and nothing else (not DE14, 22, 35, 52, 62...)."""
    t = terminal()
    async with connect(running, listener) as client:
        transfer = t.financial(code="400000", amount=1_000, **{
            "14": "2812", "32": "12345", "102": ACCOUNT_RICH, "103": ACCOUNT_POOR,
            "48": "x"})
        sealed = t.seal(client.codec, transfer, pin="1234")
        response = await client.call(sealed)
        assert response["39"] == "00"
        assert data_fields(response) == (set(sealed.fields) & ECHOED) | {"37", "38", "39"}
        for name in set(sealed.fields) & ECHOED:
            assert response[name] == sealed.fields[name], name
        track = without(t.financial(code="310000", amount=0), "2") | {
            "35": CARD_RICH + TRACK2_TAIL}
        sealed = t.seal(client.codec, track, pin="1234")
        response = await client.call(sealed)
        assert response["39"] == "00"
        assert data_fields(response) == (set(sealed.fields) & ECHOED) | {"37", "38", "39",
                                                                          "54"}
        malformed = without(t.financial(**{"32": "7"}), "22")
        response = await send(client, t, malformed)
        assert response["39"] == "30"
        assert data_fields(response) == (set(malformed) & ECHOED) | {"37", "39"}
        declined = t.financial(pan=CARD_POOR, amount=999_999, **{"22": "071"})
        response = await send(client, t, declined)
        assert response["39"] == "61"
        assert data_fields(response) == (set(declined) & ECHOED) | {"37", "39"}
        reversal = t.follow_up("0400", transfer, **{"95": "0" * 42, "62": "0" * 20})
        response = await send(client, t, reversal)
        assert data_fields(response) == (set(reversal) & ECHOED) | {"37", "39"}.union(
            {"38"} if response["39"] == "00" else set())


async def test_s3_de37_on_30_and_63_answers_and_de38_only_when_approved(
    running: Running
) -> None:
    """Section 3: DE37 (12 characters) is on every 01xx, 02xx and 04xx
    response, 30 and 63 included; DE38 (6 characters) only when approved."""
    t = terminal("TERM0001")
    async with connect(running) as client:
        for mti in ("0100", "0200", "0220", "0400", "0420"):
            fields = _request_of(t, mti)
            for response in (await send(client, t, fields),  # 63: no MAC
                             await send(client, t, without(fields, "41"))):  # 30
                assert response["39"] in ("30", "63")
                assert len(response["37"]) == 12 and "38" not in response.fields


@pytest.mark.parametrize("code", ["300000", "301000", "312000"])
async def test_s3_de54_balances_format(running: Running, code: str) -> None:
    """Section 3: DE54 for balance inquiries, per balance: account type (2,
    the from-account type of DE3) + amount type (01 ledger, 02 available) +
    currency (3) + C/D + amount (12)."""
    t = terminal()
    async with connect(running) as client:
        assert (await send(client, t, t.financial(mti="0100", amount=12_345)))["39"] == "00"
        response = await send(client, t, t.financial(code=code, amount=0), pin="1234")
        assert response["39"] == "00" and "38" in response.fields
        kind = code[2:4]
        assert response["54"] == (f"{kind}01156C{1_000_000:012d}"
                                  f"{kind}02156C{1_000_000 - 12_345:012d}")


async def test_s3_repeat_of_an_inquiry_gets_the_first_de54(running: Running) -> None:
    """Section 3: a repeat gets the same decision as the first time, DE54
    included, even after the balance moved."""
    t = terminal()
    async with connect(running) as client:
        inquiry = t.financial(code="300000", amount=0)
        first = await send(client, t, inquiry, pin="1234")
        assert (await send(client, t, t.financial(amount=5_000)))["39"] == "00"
        repeat = await send(client, t, inquiry | {"t": "0201"}, pin="1234")
        assert decision(repeat) == decision(first) and "54" in repeat.fields
        fresh = await send(client, t, t.financial(code="300000", amount=0), pin="1234")
        assert fresh["54"] != first["54"]


# -- section 3: the order of checks ------------------------------------------------


Scenario = Callable[[Client, Terminal, Path], Awaitable[str]]


async def _rc(client: Client, t: Terminal, fields: dict[str, str], **kwargs: object) -> str:
    return (await send(client, t, fields, **kwargs))["39"]  # type: ignore[arg-type]


async def _mac_before_duplicate(c: Client, t: Terminal, _: Path) -> str:
    purchase = t.financial()
    assert await _rc(c, t, purchase, mac=True) == "00"
    return await _rc(c, t, purchase | {"4": "000000000001"})  # 94 content, but no MAC


async def _duplicate_before_replay(c: Client, t: Terminal, _: Path) -> str:
    purchase = t.financial()
    assert await _rc(c, t, purchase, mac=True) == "00"
    t.dukpt = device(0xE, counter=0)  # counter 1 again: a replayed KSN
    return await _rc(c, t, purchase | {"4": "000000000001"}, mac=True)


async def _stored_before_replay(c: Client, t: Terminal, _: Path) -> str:
    purchase = t.financial(amount=777)
    assert await _rc(c, t, purchase, mac=True) == "00"
    t.dukpt = device(0xE, counter=0)
    return await _rc(c, t, purchase | {"t": "0201"}, mac=True) + "-stored"


async def _remembered_reversal_before_replay(c: Client, t: Terminal, _: Path) -> str:
    original = t.financial()
    assert await _rc(c, t, t.follow_up("0400", original), mac=True) == "00"
    t.dukpt = device(0xE, counter=0)
    return await _rc(c, t, original, mac=True)


async def _replay_before_unknown_terminal(c: Client, t: Terminal, _: Path) -> str:
    assert await _rc(c, t, t.financial(), mac=True) == "00"
    stranger = Terminal("TERM9999", dukpt=device(0xE, counter=0), stans=t.stans)
    return await _rc(c, stranger, stranger.financial(), mac=True)


async def _unknown_merchant_before_profile(c: Client, t: Terminal, _: Path) -> str:
    t2 = Terminal("TERM0002", dukpt=t.dukpt, stans=t.stans)
    return await _rc(c, t2, t2.financial(code="010000", **{"42": "MERCHANT0000002"}),
                     pin="1234", mac=True)


async def _profile_before_code(c: Client, t: Terminal, _: Path) -> str:
    t2 = Terminal("TERM0002", dukpt=t.dukpt, stans=t.stans)
    return await _rc(c, t2, t2.financial(mti="0100", code="400000", **{"103": ACCOUNT_POOR}),
                     pin="1234", mac=True)


SCENARIOS: dict[str, tuple[Scenario, str]] = {
    "format before MAC": (lambda c, t, _: _rc(c, t, without(t.financial(), "22")), "30"),
    "MAC before duplicate": (_mac_before_duplicate, "63"),
    "duplicate before KSN replay": (_duplicate_before_replay, "94"),
    "stored decision before KSN replay": (_stored_before_replay, "00-stored"),
    "remembered reversal before KSN replay": (_remembered_reversal_before_replay, "05"),
    "KSN replay before unknown terminal": (_replay_before_unknown_terminal, "63"),
    "bad MAC before unknown terminal": (
        lambda c, t, _: _rc(c, Terminal("TERM9999", dukpt=t.dukpt, stans=t.stans),
                            Terminal("TERM9999", stans=t.stans).financial(code="990000")
                            | {"64": "0" * 16, "62": "FFFF9876543210E00001"}), "63"),
    "unknown terminal before profile": (
        lambda c, t, _: _rc(c, t, Terminal("TERM9999", stans=t.stans).financial(
            code="010000"), mac=True), "03"),
    "unknown merchant before profile": (_unknown_merchant_before_profile, "03"),
    "profile before code vs MTI": (_profile_before_code, "58"),
    "profile before missing PIN": (
        lambda c, t, _: _rc(c, Terminal("TERM0002", dukpt=t.dukpt, stans=t.stans),
                            t.financial(code="010000") | {"41": "TERM0002"}, mac=True), "58"),
    "code vs MTI before Luhn": (
        lambda c, t, _: _rc(c, t, t.financial(mti="0100", code="200000",
                                              pan="4761739001010011"), mac=True), "12"),
    "code vs MTI before missing PIN": (
        lambda c, t, _: _rc(c, t, t.financial(mti="0100", code="400000",
                                              **{"103": ACCOUNT_POOR}), mac=True), "12"),
    "Luhn before routing": (
        lambda c, t, _: _rc(c, t, t.financial(pan="4111111111111112"), mac=True), "14"),
    "routing before PIN": (
        lambda c, t, _: _rc(c, t, t.financial(code="010000", pan="4111111111111111"),
                            mac=True), "15"),
    "on file before expiry": (
        lambda c, t, _: _rc(c, t, t.financial(pan="4761739001010069", **{"14": "1901"}),
                            mac=True), "14"),
    "expiry before PIN": (
        lambda c, t, _: _rc(c, t, t.financial(pan=CARD_EXPIRED), pin="9999", mac=True),
        "54"),
    "lost before missing PIN": (
        lambda c, t, _: _rc(c, t, t.financial(code="010000", pan=CARD_LOST), mac=True), "41"),
    "stolen before wrong PIN": (
        lambda c, t, _: _rc(c, t, t.financial(pan=CARD_STOLEN), pin="0000", mac=True), "43"),
    "PIN before currency": (
        lambda c, t, _: _rc(c, t, t.financial(**{"49": "840"}), pin="0000", mac=True), "55"),
    "currency before amount": (
        lambda c, t, _: _rc(c, t, t.financial(amount=0, **{"49": "840"}), mac=True), "57"),
    "per-transaction limit before funds": (
        lambda c, t, _: _rc(c, t, t.financial(pan=CARD_POOR, amount=500_001), mac=True),
        "61"),
    "limit before destination account": (
        lambda c, t, _: _rc(c, t, t.financial(code="400000", amount=600_000,
                                              **{"103": "6222020000001111"}),
                            pin="1234", mac=True), "61"),
    "funds before review referral": (
        lambda c, t, _: _rc(c, t, t.financial(pan=CARD_POOR, code="400000", amount=300_000,
                                              **{"103": ACCOUNT_RICH}),
                            pin="4321", mac=True), "51"),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_s3_order_of_checks(running: Running, tmp_path: Path, name: str) -> None:
    """Section 3, "The order of checks": a request failing two checks at once
    gets the earlier one's code."""
    scenario, expected = SCENARIOS[name]
    t = Terminal("TERM0001", dukpt=device(0xE))
    async with connect(running) as client:
        assert await scenario(client, t, tmp_path) == expected


# -- section 4: security ------------------------------------------------------------


@pytest.mark.parametrize("code", ["010000", "300000", "310000", "400000"])
async def test_s4_pin_required_for_withdrawal_inquiry_transfer(running: Running, code: str
                                                               ) -> None:
    """Section 4: a PIN is required for cash withdrawals, balance inquiries
    and transfers (missing: 55); the right one is approved."""
    t = terminal()
    async with connect(running) as client:
        fields = t.financial(code=code, amount=0 if code[:1] == "3" else 100,
                             **({"103": ACCOUNT_POOR} if code == "400000" else {}))
        assert (await send(client, t, fields))["39"] == "55"
        assert (await send(client, t, t.financial(code=code, amount=fields and int(fields["4"]),
                **({"103": ACCOUNT_POOR} if code == "400000" else {})), pin="1234"))[
            "39"] == "00"


@pytest.mark.parametrize("mti", ["0100", "0200"])
async def test_s4_pin_optional_for_purchases_but_verified(running: Running, mti: str) -> None:
    """Section 4: a PIN is optional for purchases and authorizations, and
    verified when present."""
    t = terminal()
    async with connect(running) as client:
        assert (await send(client, t, t.financial(mti=mti)))["39"] == "00"
        assert (await send(client, t, t.financial(mti=mti), pin="1234"))["39"] == "00"
        assert (await send(client, t, t.financial(mti=mti), pin="4321"))["39"] == "55"


@pytest.mark.parametrize("terminal_id", ["TERM0001", "TERM0002"])
@pytest.mark.parametrize("mti", ["0100", "0200", "0220", "0400", "0420"])
async def test_s4_mac_required_on_term0001_and_term0002(running: Running, terminal_id: str,
                                                        mti: str) -> None:
    """Section 4: TERM0001 and TERM0002 must MAC every 01xx, 02xx and 04xx
    request (missing or wrong: 63, not MACed); the genuine one passes."""
    t = terminal(terminal_id)
    async with connect(running) as client:
        fields = _request_of(t, mti)
        if mti == "0220":
            auth = t.financial(mti="0100")
            assert (await send(client, t, auth, mac=True))["39"] == "00"
            fields = t.follow_up("0220", auth)
        assert (await send(client, t, fields))["39"] == "63"
        sealed = t.seal(client.codec, fields, mac=True)
        wrong = bytearray(sealed.raw)
        wrong[-1] ^= 0x01
        await client.send(bytes(wrong))
        response = await client.receive()
        assert response["39"] == "63" and "64" not in response.fields
        assert "128" not in response.fields
        assert (await client.call(sealed))["39"] == "00"


async def test_s4_term0003_mac_optional_but_verified_and_answered_maced(running: Running
                                                                        ) -> None:
    """Section 4: TERM0003 needs no MAC; one it sends is verified (wrong: 63)
    and its response is MACed when the request's MAC was valid."""
    t = terminal("TERM0003")
    async with connect(running) as client:
        assert (await send(client, t, t.financial()))["39"] == "00"
        response = await send(client, t, t.financial(), mac=True)  # checks the response MAC
        assert response["39"] == "00" and "64" in response.fields
        sealed = t.seal(client.codec, t.financial(), mac=True)
        wrong = bytearray(sealed.raw)
        wrong[-1] ^= 0x01
        await client.send(bytes(wrong))
        assert (await client.receive())["39"] == "63"


async def test_s4_unknown_terminal_mac_checked_then_03(running: Running) -> None:
    """Section 4: a request from an unknown terminal is MAC-checked when it
    carries a MAC (wrong: 63) and then answered 03 (MACed when the MAC was
    valid); without a MAC it is answered 03."""
    t = terminal("TERM9999")
    async with connect(running) as client:
        assert (await send(client, t, t.financial()))["39"] == "03"
        response = await send(client, t, t.financial(), mac=True)
        assert response["39"] == "03" and "64" in response.fields
        sealed = t.seal(client.codec, t.financial(), mac=True)
        wrong = bytearray(sealed.raw)
        wrong[-1] ^= 0x01
        await client.send(bytes(wrong))
        assert (await client.receive())["39"] == "63"


@pytest.mark.parametrize("listener", LISTENERS)
async def test_s4_0800_is_never_maced(running: Running, listener: str) -> None:
    """Section 4: 0800 is never MACed: an 0800 carrying a MAC (even a wrong
    one) is answered, and the 0810 carries no MAC."""
    t = terminal("TERM0001")
    async with connect(running, listener) as client:
        sealed = t.seal(client.codec, t.network("301"), mac=True)
        await client.send(sealed)
        response = await client.receive()
        assert response["t"] == "0810" and response["39"] == "00"
        assert "64" not in response.fields and "128" not in response.fields
        wrong = bytearray(sealed.raw)
        wrong[-1] ^= 0x01
        await client.send(bytes(wrong))
        response = await client.receive()
        assert response["39"] == "00" and "64" not in response.fields


async def test_s4_30_answers_are_not_maced(running: Running) -> None:
    """Section 4: 30 and 63 responses are not MACed, even when the request
    carried a valid MAC."""
    t = terminal("TERM0001")
    async with connect(running) as client:
        sealed = t.seal(client.codec, without(t.financial(), "22"), mac=True)
        response = await client.call(sealed)  # check_mac: a 30 carries no MAC
        assert response["39"] == "30"


async def test_s4_switch_answers_91_and_96_are_maced_like_any_other(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Section 4: "A response is MACed when its request carried a valid MAC;
    30 and 63 responses are not MACed": also the 91 of the decision deadline
    and the 96 of a failed commit, which the switch answers without the
    ledger (the terminal must be able to trust them too)."""
    running = await start_switch(nursery, tmp_path, timeouts__decision_deadline_s=1.0)
    processor = running.switch.processor
    original = processor.process_batch
    release = threading.Event()
    entered = threading.Event()
    calls = {"n": 0}

    def gated(requests):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            entered.set()
            release.wait(10)  # a stalled disk holds the first batch
        return original(requests)

    monkeypatch.setattr(processor, "process_batch", gated)
    t = terminal("TERM0001")
    try:
        async with connect(running) as first, connect(running) as second:
            await first.send(t.seal(first.codec, t.financial(), mac=True))
            with trio.fail_after(10):
                while not entered.is_set():  # the first batch is in the writer's thread
                    await trio.sleep(0.01)
            queued = await second.call(t.seal(second.codec, t.financial(), mac=True))
            assert queued["39"] == "91" and "64" in queued.fields  # MAC checked by call()
            release.set()
            assert (await first.receive())["39"] == "00"
    finally:
        release.set()
    store = processor.store
    commit = store.commit
    failing = {"once": True}

    def fail_once() -> None:
        if failing["once"]:
            failing["once"] = False
            raise RuntimeError("disk full")
        commit()

    monkeypatch.setattr(store, "commit", fail_once)
    async with connect(running) as client:
        response = await send(client, t, t.financial(), mac=True)
        assert response["39"] == "96" and "64" in response.fields
    running.switch.shutdown()


async def test_s4_ksn_replay_window(running: Running) -> None:
    """Section 4: a counter already accepted from a device, or more than 64
    below its highest, is a replay (63); unseen counters within 64 below the
    highest are accepted (pipelined requests arrive out of order)."""
    t = Terminal("TERM0003", dukpt=device(0xB))

    async def at(counter: int) -> str:
        t.dukpt = device(0xB, counter=counter - 1)
        return (await send(client, t, t.financial(amount=1), mac=True))["39"]

    async with connect(running) as client:
        assert await at(100) == "00"
        assert await at(98) == "00"  # out of order, inside the window
        assert await at(99) == "00"
        assert await at(98) == "63"  # already accepted
        assert await at(100) == "63"
        assert await at(36) == "00"  # exactly 64 below the highest
        assert await at(35) == "63"  # 65 below
        assert await at(101) == "00"
        assert await at(36) == "63"


async def test_s4_pipelined_out_of_counter_order_accepted(running: Running) -> None:
    """Section 4: requests pipelined on one connection may arrive out of
    counter order; all are accepted."""
    t = Terminal("TERM0001", dukpt=device(0xC))
    async with connect(running) as client:
        sealed = [t.seal(client.codec, t.financial(code="200000", amount=n + 1), mac=True)
                  for n in range(6)]
        order = [5, 2, 0, 4, 1, 3]
        await client.send_raw(b"".join(frame(sealed[i].raw) for i in order))
        answers = [await client.receive() for _ in order]
    assert sorted(a["39"] for a in answers) == ["00"] * 6


# -- section 5: PIN tries -----------------------------------------------------------


async def test_s5_pin_tries(running: Running) -> None:
    """Section 5: the third wrong PIN in a row answers 55 and blocks; a
    correct PIN resets the count; a missing PIN is not a wrong try (nor a
    reset); once blocked, every request that carries or requires a PIN is 75
    (even with the right PIN), one that does neither is not."""
    t = terminal()
    async with connect(running) as client:

        async def purchase(pin: str | None, code: str = "000000") -> str:
            return (await send(client, t, t.financial(code=code, amount=100), pin=pin))["39"]

        assert [await purchase("0000"), await purchase("0000")] == ["55", "55"]
        assert await purchase("1234") == "00"  # resets
        assert [await purchase("0000"), await purchase("0000")] == ["55", "55"]
        assert await purchase(None, "010000") == "55"  # missing: not a try
        assert await purchase(None) == "00"
        assert await purchase("0000") == "55"  # the third wrong in a row: blocks
        assert await purchase("1234") == "75"
        assert await purchase(None, "010000") == "75"
        assert await purchase(None) == "00"


async def test_s5_retransmitted_wrong_pin_is_not_another_try(running: Running) -> None:
    """Sections 3 and 5: a retransmission or repeat of a wrong-PIN request
    gets its stored 55 and changes nothing, so it is not another wrong try."""
    t = terminal()
    async with connect(running) as client:
        wrong = t.seal(client.codec, t.financial(), pin="0000")
        first = await client.call(wrong)
        assert first["39"] == "55"
        assert decision(await client.call(wrong)) == decision(first)
        repeat = await send(client, t, wrong.fields | {"t": "0201"}, pin="0000")
        assert decision(repeat) == decision(first)
        assert (await send(client, t, t.financial(), pin="0000"))["39"] == "55"  # try 2
        assert (await send(client, t, t.financial(), pin="1234"))["39"] == "00"


# -- section 6: demo data and limits ------------------------------------------------


async def test_s6_demo_cards_accounts_and_terminals(running: Running, tmp_path: Path) -> None:
    """Section 6: the demo cards' PINs, states, expiries and opening balances;
    settlement and cash clearing accounts at 0.00; TERM0002 may not do cash
    withdrawals or transfers (58)."""
    t = terminal()
    async with connect(running) as client:
        for pan, pin, ledger in ((CARD_RICH, "1234", 1_000_000), (CARD_POOR, "4321", 5_000)):
            response = await send(client, t, t.financial(code="300000", amount=0, pan=pan),
                                  pin=pin)
            assert response["54"] == f"0001156C{ledger:012d}0002156C{ledger:012d}"
        for pan, rc in ((CARD_LOST, "41"), (CARD_STOLEN, "43"), (CARD_EXPIRED, "54")):
            response = await send(client, t, t.financial(code="300000", amount=0, pan=pan),
                                  pin="1111")
            assert response["39"] == rc
        for number in (ACCOUNT_LOST, ACCOUNT_STOLEN, ACCOUNT_EXPIRED):
            assert balances(tmp_path, number) == (100_000, 100_000)
        assert balances(tmp_path, SETTLEMENT) == (0, 0)
        assert balances(tmp_path, CASH_CLEARING) == (0, 0)
        t2 = terminal("TERM0002", serial=0xD)
        for code in ("010000", "400000"):
            response = await send(client, t2, t2.financial(code=code, **{"103": ACCOUNT_POOR}),
                                  pin="1234", mac=True)
            assert response["39"] == "58"


async def test_s6_settlement_and_cash_clearing(running: Running, tmp_path: Path) -> None:
    """Section 6: refunds debit the settlement account (it may go negative),
    purchases and completions credit it, withdrawals credit cash clearing."""
    t = terminal()
    async with connect(running) as client:
        assert (await send(client, t, t.financial(code="200000", amount=700)))["39"] == "00"
        assert balances(tmp_path, SETTLEMENT) == (-700, -700)
        assert (await send(client, t, t.financial(amount=1_000)))["39"] == "00"
        auth = t.financial(mti="0100", amount=500)
        assert (await send(client, t, auth))["39"] == "00"
        assert (await send(client, t, t.follow_up("0220", auth, amount=400)))["39"] == "00"
        assert balances(tmp_path, SETTLEMENT) == (700, 700)
        assert (await send(client, t, t.financial(code="010000", amount=300), pin="1234"))[
            "39"] == "00"
        assert balances(tmp_path, CASH_CLEARING) == (300, 300)


async def test_s6_transfer_review_threshold(running: Running, tmp_path: Path) -> None:
    """Section 6: transfers above 2000.00 are referred (01) and held; exactly
    2000.00 is approved and posted."""
    t = terminal()
    async with connect(running) as client:
        at = t.financial(code="400000", amount=200_000, **{"103": ACCOUNT_POOR})
        assert (await send(client, t, at, pin="1234"))["39"] == "00"
        above = t.financial(code="400000", amount=200_001, **{"103": ACCOUNT_POOR})
        response = await send(client, t, above, pin="1234")
        assert response["39"] == "01" and "38" not in response.fields
    assert balances(tmp_path, ACCOUNT_RICH) == (800_000, 800_000 - 200_001)
    assert balances(tmp_path, ACCOUNT_POOR) == (205_000, 205_000)


async def test_s6_per_transaction_limit(running: Running) -> None:
    """Section 6: 5000.00 per transaction (61 above, approved at it); the
    limit applies to refunds too (they only count toward no *daily* limit)."""
    t = terminal()
    async with connect(running) as client:
        assert (await send(client, t, t.financial(amount=500_000)))["39"] == "00"
        assert (await send(client, t, t.financial(amount=500_001)))["39"] == "61"
        assert (await send(client, t, t.financial(mti="0100", amount=500_001)))["39"] == "61"
        assert (await send(client, t, t.financial(code="200000", amount=500_000)))[
            "39"] == "00"
        assert (await send(client, t, t.financial(code="200000", amount=500_001)))[
            "39"] == "61"


async def test_s6_daily_amount_limit_counts_holds_referrals_and_gives_back(
    clocked: tuple[Running, Clock], tmp_path: Path
) -> None:
    """Section 6: 20000.00 of approved debits per business day (61 beyond):
    refunds count toward no daily limit, a referred transfer counts while
    held, a released (declined) referral and a reversal give back."""
    running, _ = clocked
    t = terminal()
    async with connect(running) as client:

        async def rc(fields: dict[str, str], pin: str | None = None) -> str:
            return (await send(client, t, fields, pin=pin))["39"]

        for _ in range(3):  # funds for the test; refunds count toward no daily limit
            assert await rc(t.financial(code="200000", amount=500_000)) == "00"
        referred = t.financial(code="400000", amount=300_000, **{"103": ACCOUNT_POOR})
        assert await rc(referred, "1234") == "01"  # counts while held: 3000.00
        for _ in range(3):
            assert await rc(t.financial(amount=500_000)) == "00"  # 18000.00
        assert await rc(t.financial(amount=200_001)) == "61"
        assert await rc(t.financial(pan=CARD_RICH, amount=200_000, mti="0100")) == "00"
        assert await rc(t.financial(amount=1)) == "61"  # 20000.00 used
        # The referral declined: its 3000.00 come back.
        reviewer = Processor(open_store(tmp_path), running.switch.processor.hsm)
        [(review_id, *_)] = reviewer.store.list_reviews("pending")
        reviewer.decide_review(review_id, approve=False)
        reviewer.store.close()
        purchase = t.financial(amount=300_000)
        assert await rc(purchase) == "00"
        assert await rc(t.financial(amount=1)) == "61"
        assert await rc(t.follow_up("0400", purchase)) == "00"  # gives back
        assert await rc(t.financial(amount=300_000)) == "00"


async def test_s6_daily_count_limit(clocked: tuple[Running, Clock]) -> None:
    """Section 6: 20 approved debits per business day (65 beyond); declines
    and refunds do not count, reversals give back, a partly completed hold
    still counts once."""
    running, _ = clocked
    t = terminal()
    async with connect(running) as client:

        async def rc(fields: dict[str, str]) -> str:
            return (await send(client, t, fields))["39"]

        purchases = []
        for n in range(18):
            purchases.append(t.financial(pan=CARD_POOR, amount=1))
            assert await rc(purchases[-1]) == "00", n
        assert await rc(t.financial(pan=CARD_POOR, amount=10_000)) == "51"  # declined
        assert await rc(t.financial(pan=CARD_POOR, code="200000", amount=5)) == "00"
        auth = t.financial(pan=CARD_POOR, mti="0100", amount=10)
        assert await rc(auth) == "00"  # 19
        assert await rc(t.follow_up("0220", auth, amount=5)) == "00"  # still 19
        assert await rc(t.financial(pan=CARD_POOR, amount=1)) == "00"  # 20
        assert await rc(t.financial(pan=CARD_POOR, amount=1)) == "65"
        assert await rc(t.follow_up("0400", purchases[0])) == "00"  # 19
        assert await rc(t.financial(pan=CARD_POOR, amount=1)) == "00"  # 20
        assert await rc(t.financial(pan=CARD_POOR, amount=1)) == "65"
