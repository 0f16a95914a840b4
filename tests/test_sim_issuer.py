"""The issuer host simulator (``iso-switch-issuer``) over real TCP (port 0):
network management both ways, decisions against its cards with PINs under
its zone PIN key and MACs under its zone MAC key, rules, duplicates,
advices, reversal advices, its record file, and bad input.

Requests are built the way a switch forwards them (interface section 7.2):
:class:`~simulators._issuer_link.LinkPeer` with the switch's copy of the
demo link keys (``keys/``), one test with ``psec`` instead.
"""

from __future__ import annotations

import os
import stat
import tomllib
import warnings
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psec.des
import psec.mac
import psec.pinblock
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from iso_switch.codec import CodecError
from iso_switch.codec.subfields import parse_de54
from iso_switch.security.keystore import DEMO_MASTER_KEY, KeyStore, MasterKey
from simulators._connection import ConnectionClosed, ResponseTimeout, open_switch_client
from simulators._issuer_config import (
    IssuerConfig,
    IssuerConfigError,
    LinkKeys,
    load_config,
    load_link_keys,
    parse_config,
)
from simulators._issuer_core import ACCEPTED_MTIS, IssuerHost, response_mti
from simulators._issuer_link import LinkPeer
from simulators.issuer import IssuerSimulator, NetworkError, main, read_record

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "remote-issuer.toml"
SWITCH_KEYS = KeyStore(ROOT / "keys", MasterKey.demo())
RICH, POOR, LOST, EXPIRED = ("5413339001010018", "5413339001010026", "5413339001010034",
                             "5413339001010042")
RICH_PIN, POOR_PIN = "1234", "4321"
UNKNOWN = "5413339999999995"
DELAY_MS = 400
# Amounts that pick the test rules (first match wins; the example's follow).
RULES = [
    {"bin": "541333", "amount_minor": 7001, "action": "delay", "delay_ms": DELAY_MS},
    {"bin": "541333", "amount_minor": 7002, "mtis": ["0100", "0200"], "action": "drop"},
    {"bin": "541333", "amount_minor": 7003, "action": "close"},
    {"bin": "541333", "amount_minor": 7004, "action": "bad_mac"},
    {"bin": "541333", "amount_minor": 7005, "action": "twice"},
    {"pan": POOR, "amount_min_minor": 7006, "amount_max_minor": 7007, "action": "decline",
     "code": "65"},
    {"pan": POOR, "amount_minor": 900000, "action": "approve"},
    {"bin": "541333", "amount_minor": 7008, "mtis": ["0420"], "action": "decline",
     "code": "12"},
    {"bin": "541333", "amount_minor": 7009, "mtis": ["0420"], "action": "drop"},
]


def _config(rules: Sequence[Mapping[str, Any]] = RULES, **listen: Any) -> IssuerConfig:
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    data["listen"].update({"port": 0, **listen})
    data["rules"] = [*rules, *data["rules"]]
    return parse_config(data, EXAMPLE.parent)


@asynccontextmanager
async def running(tmp_path: Path, rules: Sequence[Mapping[str, Any]] = RULES,
                  **listen: Any) -> AsyncIterator[IssuerSimulator]:
    config = _config(rules, **listen)
    simulator = IssuerSimulator(config, load_link_keys(config),
                                record=tmp_path / "record.jsonl")
    async with trio.open_nursery() as nursery:
        await nursery.start(simulator.serve)
        yield simulator
        nursery.cancel_scope.cancel()


def _peer(**kwargs: Any) -> LinkPeer:
    return LinkPeer.from_key_store(SWITCH_KEYS, "demo-zpk-bank-b", "demo-zak-bank-b", **kwargs)


def _client(simulator: IssuerSimulator, timeout_s: float = 5.0):  # type: ignore[no-untyped-def]
    return open_switch_client("127.0.0.1", simulator.port, timeout_s=timeout_s)


def _balance(simulator: IssuerSimulator, pan: str) -> tuple[int, int]:
    account = simulator.host.account_of(pan)
    return account.balance_minor, account.available_minor


# -- network management -------------------------------------------------------------


async def test_sign_on_echo_and_sign_off_are_answered_unmaced(tmp_path: Path) -> None:
    peer = _peer()
    async with running(tmp_path) as simulator, _client(simulator) as client:
        for code in ("001", "301", "002"):
            request = peer.network(code)
            answer, raw = await client.call(peer.seal(request))
            assert answer["t"] == "0810" and answer["39"] == "00"
            assert {k: answer[k] for k in ("7", "11", "70")} == {
                k: request[k] for k in ("7", "11", "70")}
            assert peer.answer_mac_ok(raw) is None


async def test_the_simulator_sends_its_own_echo_and_sign_off(tmp_path: Path) -> None:
    peer = _peer()
    async with running(tmp_path) as simulator, _client(simulator) as client:
        await client.call(peer.seal(peer.network("001")))
        answers: list[dict[str, str]] = []

        async def ask(code: str) -> None:
            answers.append(await simulator.send_network(code))

        for code in ("301", "002"):
            answers.clear()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ask, code)
                request, _ = await client.receive(timeout_s=5)
                assert (request["t"], request["70"]) == ("0800", code)
                await client.send(peer.seal({"t": "0810", "7": request["7"],
                                             "11": request["11"], "70": code, "39": "00"}))
            assert answers[0]["39"] == "00" and answers[0]["11"] == request["11"]


# -- decisions -------------------------------------------------------------------------


async def test_an_approved_purchase_with_a_pin_debits_and_echoes(tmp_path: Path) -> None:
    peer = _peer()
    async with running(tmp_path) as simulator, _client(simulator) as client:
        request = peer.request("0200", RICH, "000000", 12345, pin=RICH_PIN)
        answer, raw = await client.call(peer.seal(request))
        assert answer["t"] == "0210" and answer["39"] == "00"
        assert len(answer["38"]) == 6
        for key in ("2", "3", "4", "7", "11", "32", "37", "41", "42", "49"):
            assert answer[key] == request[key], key
        assert "52" not in answer
        assert peer.answer_mac_ok(raw) is True
        assert _balance(simulator, RICH) == (1000000 - 12345, 1000000 - 12345)


def _quiet(function: Any, *args: Any) -> Any:  # psec warns about two-key TDES
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return function(*args)


async def test_a_request_sealed_by_an_independent_implementation(tmp_path: Path) -> None:
    zpk = bytes.fromhex("45200762B986640410D5A7EA297AC725")
    zak = bytes.fromhex("FBB545F70858CBBA1AB5E65454132F07")
    peer = LinkPeer()  # no keys: psec does the PIN block and the MAC
    fields = peer.request("0100", RICH, "000000", 5000)
    clear = psec.pinblock.encode_pinblock_iso_0(RICH_PIN, RICH)
    fields["52"] = _quiet(psec.des.encrypt_tdes_ecb, zpk, clear).hex().upper()
    head = peer.codec.encode({**fields, "64": "0" * 16})[:-16]
    mac = _quiet(psec.mac.generate_retail_mac, zak[:8], zak[8:], head, 1)
    async with running(tmp_path) as simulator, _client(simulator) as client:
        answer, raw = await client.call(head + mac.hex().upper().encode())
        assert answer["39"] == "00"
        expected = _quiet(psec.mac.generate_retail_mac, zak[:8], zak[8:], raw[:-16], 1)
        assert raw[-16:] == expected.hex().upper().encode()
        assert _balance(simulator, RICH) == (1000000, 1000000 - 5000)


async def test_an_authorization_holds_and_a_balance_inquiry_shows_it(tmp_path: Path) -> None:
    peer = _peer()
    async with running(tmp_path) as simulator, _client(simulator) as client:
        answer, _ = await client.call(peer.seal(peer.request("0100", RICH, "000000", 30000)))
        assert answer["t"] == "0110" and answer["39"] == "00"
        inquiry = peer.request("0200", RICH, "300000", 0, pin=RICH_PIN)
        answer, _ = await client.call(peer.seal(inquiry))
        assert answer["39"] == "00"
        balances = {b.amount_type: b.amount_minor for b in parse_de54(answer["54"])}
        assert balances == {"01": 1000000, "02": 1000000 - 30000}


@pytest.mark.parametrize(("pan", "code", "amount", "pin", "rc"), [
    (RICH, "010000", 100, "9999", "55"),      # wrong PIN
    (RICH, "010000", 100, None, "55"),        # withdrawal without the PIN it needs
    (POOR, "000000", 6000, POOR_PIN, "51"),   # 60.00 on 50.00
    (EXPIRED, "000000", 100, None, "54"),
    (LOST, "000000", 100, None, "41"),
    (UNKNOWN, "000000", 100, None, "14"),
    (RICH, "000000", 9905, None, "05"),       # the example's decline rule
    (POOR, "000000", 7006, None, "65"),       # a PAN rule with its own code
    (RICH, "000000", 0, None, "13"),
    (RICH, "400000", 100, RICH_PIN, "76"),    # transfer to no account of ours
])
async def test_declines(tmp_path: Path, pan: str, code: str, amount: int, pin: str | None,
                        rc: str) -> None:
    peer = _peer()
    async with running(tmp_path) as simulator, _client(simulator) as client:
        before = {p: _balance(simulator, p) for p in (RICH, POOR)}
        answer, raw = await client.call(peer.seal(peer.request("0200", pan, code, amount,
                                                               pin=pin)))
        assert answer["39"] == rc and "38" not in answer
        assert peer.answer_mac_ok(raw) is True
        assert {p: _balance(simulator, p) for p in (RICH, POOR)} == before


async def test_three_wrong_pins_block_the_pin(tmp_path: Path) -> None:
    peer = _peer()
    async with running(tmp_path) as simulator, _client(simulator) as client:
        codes = []
        for pin in ("0000", "0000", "0000", RICH_PIN):
            answer, _ = await client.call(peer.seal(peer.request("0200", RICH, "000000", 100,
                                                                 pin=pin)))
            codes.append(answer["39"])
        assert codes == ["55", "55", "55", "75"]
        assert _balance(simulator, RICH) == (1000000, 1000000)


async def test_a_currency_other_than_the_accounts_is_57(tmp_path: Path) -> None:
    peer = _peer(currency="840")
    async with running(tmp_path) as simulator, _client(simulator) as client:
        answer, _ = await client.call(peer.seal(peer.request("0200", RICH, "000000", 100)))
        assert answer["39"] == "57"


async def test_refund_transfer_and_a_forced_approval(tmp_path: Path) -> None:
    peer = _peer()
    to_account = "6230580000000026"  # POOR's
    async with running(tmp_path) as simulator, _client(simulator) as client:
        refund, _ = await client.call(peer.seal(peer.request("0200", RICH, "200000", 500)))
        transfer = peer.request("0200", RICH, "400000", 2000, pin=RICH_PIN,
                                extra={"103": to_account})
        moved, _ = await client.call(peer.seal(transfer))
        forced, _ = await client.call(peer.seal(peer.request("0200", POOR, "000000", 900000)))
        assert (refund["39"], moved["39"], forced["39"]) == ("00", "00", "00")
        assert moved["103"] == to_account
        assert _balance(simulator, RICH)[0] == 1000000 + 500 - 2000
        assert _balance(simulator, POOR)[0] == 5000 + 2000 - 900000


async def test_a_request_with_a_bad_or_missing_mac_is_63_and_changes_nothing(
    tmp_path: Path,
) -> None:
    peer = _peer()
    stranger = LinkPeer(mac_key=bytes(16), first_number=500)
    async with running(tmp_path) as simulator, _client(simulator) as client:
        bad, raw = await client.call(stranger.seal(stranger.request("0200", RICH, "000000", 10)))
        unmaced, _ = await client.call(peer.seal(peer.request("0200", RICH, "000000", 10),
                                                 mac=False))
        assert (bad["39"], unmaced["39"]) == ("63", "63")
        assert peer.answer_mac_ok(raw) is True  # the simulator MACs its 63 too
        assert _balance(simulator, RICH) == (1000000, 1000000)
        # The genuine request with the same DE11 + DE37 + DE41 is decided afresh.
        again, _ = await client.call(peer.seal(stranger.request("0200", RICH, "000000", 10)
                                               | {"11": bad["11"], "37": bad["37"]}))
        assert again["39"] == "00"


# -- rules ---------------------------------------------------------------------------------


async def test_rule_delay(tmp_path: Path) -> None:
    peer = _peer()
    async with running(tmp_path) as simulator, _client(simulator) as client:
        fast = peer.request("0200", RICH, "000000", 100)
        slow = peer.request("0200", RICH, "000000", 7001)
        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            order: list[str] = []

            async def call(fields: dict[str, str]) -> None:
                answer, _ = await client.call(peer.seal(fields))
                order.append(answer["4"])

            nursery.start_soon(call, slow)
            await trio.sleep(0.05)
            nursery.start_soon(call, fast)
        assert trio.current_time() - started >= DELAY_MS / 1000
        assert order == [fast["4"], slow["4"]]  # the delayed answer does not block others


async def test_rule_drop_decides_but_never_answers(tmp_path: Path) -> None:
    peer = _peer()
    async with running(tmp_path) as simulator, _client(simulator, timeout_s=0.5) as client:
        with pytest.raises(ResponseTimeout):
            await client.call(peer.seal(peer.request("0200", RICH, "000000", 7002)))
        assert _balance(simulator, RICH)[0] == 1000000 - 7002
        answer, _ = await client.call(peer.seal(peer.request("0200", RICH, "000000", 1)))
        assert answer["39"] == "00"  # the connection carries on


async def test_rule_close_closes_only_that_connection(tmp_path: Path) -> None:
    peer = _peer()
    async with running(tmp_path) as simulator, _client(simulator) as other:
        async with _client(simulator) as client:
            with pytest.raises(ConnectionClosed):
                await client.call(peer.seal(peer.request("0200", RICH, "000000", 7003)))
        answer, _ = await other.call(peer.seal(peer.request("0200", RICH, "000000", 1)))
        assert answer["39"] == "00"


async def test_rule_bad_mac(tmp_path: Path) -> None:
    peer = _peer()
    async with running(tmp_path) as simulator, _client(simulator) as client:
        answer, raw = await client.call(peer.seal(peer.request("0200", RICH, "000000", 7004)))
        assert answer["39"] == "00"
        assert peer.answer_mac_ok(raw) is False


async def test_rule_twice(tmp_path: Path) -> None:
    peer = _peer()
    async with running(tmp_path) as simulator, _client(simulator) as client:
        first, raw = await client.call(peer.seal(peer.request("0200", RICH, "000000", 7005)))
        second, raw_again = await client.receive(timeout_s=5)
        assert raw_again == raw and second["39"] == first["39"] == "00"
        assert _balance(simulator, RICH)[0] == 1000000 - 7005


# -- duplicates -------------------------------------------------------------------------


async def test_a_repeat_gets_the_same_answer_and_no_second_effect(tmp_path: Path) -> None:
    peer = _peer()
    async with running(tmp_path) as simulator, _client(simulator) as client:
        request = peer.request("0200", RICH, "000000", 2500)
        first, _ = await client.call(peer.seal(request))
        repeat, raw = await client.call(peer.seal(peer.repeat(request)))
        assert repeat["t"] == "0210" and repeat["38"] == first["38"]
        assert peer.answer_mac_ok(raw) is True
        assert _balance(simulator, RICH)[0] == 1000000 - 2500
        assert simulator.host.duplicates == 1


async def test_stand_in_advices_take_effect_once(tmp_path: Path) -> None:
    peer = _peer()
    async with running(tmp_path) as simulator, _client(simulator) as client:
        sale = peer.request("0200", RICH, "000000", 4000)  # never reached the issuer
        advice = peer.advice(sale, "S00001")
        answer, raw = await client.call(peer.seal(advice))
        again, _ = await client.call(peer.seal(peer.repeat(advice)))
        assert (answer["t"], answer["39"], again["t"], again["39"]) == ("0230", "00",
                                                                        "0230", "00")
        assert peer.answer_mac_ok(raw) is True
        auth = peer.request("0100", RICH, "000000", 1500)
        held, _ = await client.call(peer.seal(peer.advice(auth, "S00002")))
        assert held["t"] == "0130"
        assert _balance(simulator, RICH) == (1000000 - 4000, 1000000 - 4000 - 1500)


async def test_an_advice_for_an_approval_already_in_force_changes_nothing(
    tmp_path: Path,
) -> None:
    peer = _peer()
    async with running(tmp_path) as simulator, _client(simulator, timeout_s=0.5) as client:
        dropped = peer.request("0200", RICH, "000000", 7002)  # approved, answer lost
        with pytest.raises(ResponseTimeout):
            await client.call(peer.seal(dropped))
        answer, _ = await client.call(peer.seal(peer.advice(dropped, "S00003")))
        assert answer["39"] == "00"
        assert _balance(simulator, RICH)[0] == 1000000 - 7002


async def test_a_completion_releases_the_hold_and_posts_the_final_amount(
    tmp_path: Path,
) -> None:
    peer = _peer()
    async with running(tmp_path) as simulator, _client(simulator) as client:
        auth = peer.request("0100", RICH, "000000", 10000)
        approved, _ = await client.call(peer.seal(auth))
        completion = peer.completion(auth, 8000, approved["38"])
        answer, _ = await client.call(peer.seal(completion))
        await client.call(peer.seal(peer.repeat(completion)))
        assert answer["t"] == "0230" and answer["39"] == "00" and answer["90"]
        assert _balance(simulator, RICH) == (1000000 - 8000, 1000000 - 8000)


# -- reversal advices ---------------------------------------------------------------------


async def test_a_full_reversal_advice_and_its_repeat(tmp_path: Path) -> None:
    peer = _peer()
    async with running(tmp_path) as simulator, _client(simulator) as client:
        sale = peer.request("0200", RICH, "000000", 3000)
        await client.call(peer.seal(sale))
        reversal = peer.reversal_advice(sale)
        answer, raw = await client.call(peer.seal(reversal))
        assert (answer["t"], answer["39"]) == ("0430", "00")
        assert peer.answer_mac_ok(raw) is True
        assert _balance(simulator, RICH)[0] == 1000000
        again, _ = await client.call(peer.seal(peer.repeat(reversal)))
        assert again["39"] == "00" and _balance(simulator, RICH)[0] == 1000000
        # A fresh reversal advice of the same amount reverses nothing twice.
        await client.call(peer.seal(peer.reversal_advice(sale)))
        assert _balance(simulator, RICH)[0] == 1000000


async def test_partial_reversal_advices_go_down_to_de95(tmp_path: Path) -> None:
    peer = _peer()
    async with running(tmp_path) as simulator, _client(simulator) as client:
        auth = peer.request("0100", RICH, "000000", 10000)
        await client.call(peer.seal(auth))
        for actual, held in ((6000, 6000), (8000, 6000), (2000, 2000)):
            answer, _ = await client.call(peer.seal(peer.reversal_advice(auth, actual)))
            assert answer["39"] == "00" and answer["95"].startswith(f"{actual:012d}")
            assert _balance(simulator, RICH) == (1000000, 1000000 - held)
        above, _ = await client.call(peer.seal(peer.reversal_advice(auth, 20000)))
        assert above["39"] == "13"


async def test_a_reversal_advice_found_by_de90_alone(tmp_path: Path) -> None:
    peer = _peer()
    async with running(tmp_path) as simulator, _client(simulator) as client:
        sale = peer.request("0200", RICH, "000000", 3000)
        await client.call(peer.seal(sale))
        reversal = peer.reversal_advice(sale) | {"37": "999999999999"}
        answer, _ = await client.call(peer.seal(reversal))
        assert answer["39"] == "00" and _balance(simulator, RICH)[0] == 1000000


async def test_an_unknown_original_is_25_and_declines_it_if_it_comes(tmp_path: Path) -> None:
    peer = _peer()
    async with running(tmp_path) as simulator, _client(simulator) as client:
        never_seen = peer.request("0200", RICH, "000000", 3000)
        answer, _ = await client.call(peer.seal(peer.reversal_advice(never_seen)))
        assert (answer["t"], answer["39"]) == ("0430", "25")
        late, _ = await client.call(peer.seal(never_seen))
        assert late["39"] == "05" and _balance(simulator, RICH)[0] == 1000000


async def test_a_decline_rule_refuses_a_reversal_advice(tmp_path: Path) -> None:
    peer = _peer()
    async with running(tmp_path) as simulator, _client(simulator) as client:
        sale = peer.request("0200", RICH, "000000", 7008)
        await client.call(peer.seal(sale))
        answer, _ = await client.call(peer.seal(peer.reversal_advice(sale)))
        assert answer["39"] == "12" and _balance(simulator, RICH)[0] == 1000000 - 7008


# -- the record ---------------------------------------------------------------------------


async def test_the_record_file_lists_what_happened_with_masked_pans(tmp_path: Path) -> None:
    peer = _peer()
    async with running(tmp_path) as simulator, _client(simulator) as client:
        sale = peer.request("0200", RICH, "000000", 3000)
        approved, _ = await client.call(peer.seal(sale))
        await client.call(peer.seal(peer.request("0200", POOR, "000000", 6000)))
        await client.call(peer.seal(peer.reversal_advice(sale)))
        await client.call(peer.seal(peer.repeat(sale)))  # a duplicate: not recorded
    path = tmp_path / "record.jsonl"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    entries = read_record(path)
    assert [(e["event"], e["mti"], e["de39"]) for e in entries] == [
        ("approved", "0200", "00"), ("declined", "0200", "51"), ("reversed", "0420", "00")]
    first = entries[0]
    assert first["pan"] == "541333******0018" and first["amount_minor"] == 3000
    assert (first["de37"], first["de41"], first["de11"], first["de3"], first["de38"]) == (
        sale["37"], sale["41"], sale["11"], sale["3"], approved["38"])
    assert entries[2]["reversed_minor"] == 3000 and "time" in first
    assert RICH not in path.read_text(encoding="utf-8")


# -- bad input and limits ----------------------------------------------------------------


async def test_a_garbage_frame_closes_only_that_connection(tmp_path: Path) -> None:
    peer = _peer()
    async with running(tmp_path) as simulator, _client(simulator) as good:
        for garbage in (b"\x00\x05hello", b"\xff\xff" + b"x" * 16):
            stream = await trio.open_tcp_stream("127.0.0.1", simulator.port)
            await stream.send_all(garbage)
            with trio.fail_after(5):
                assert await stream.receive_some(100) == b""
            await stream.aclose()
        answer, _ = await good.call(peer.seal(peer.request("0200", RICH, "000000", 1)))
        assert answer["39"] == "00" and simulator.bad_frames == 2


async def test_connections_beyond_the_limit_are_closed(tmp_path: Path) -> None:
    peer = _peer()
    async with running(tmp_path, max_connections=1) as simulator, _client(simulator) as first:
        await first.call(peer.seal(peer.network("001")))
        extra = await trio.open_tcp_stream("127.0.0.1", simulator.port)
        with trio.fail_after(5):
            assert await extra.receive_some(100) == b""
        await extra.aclose()
        answer, _ = await first.call(peer.seal(peer.network("301")))
        assert answer["39"] == "00" and simulator.connections_refused == 1


@pytest.mark.parametrize("framing", ["bcd2", "ascii4"])
async def test_other_framings_and_the_binary_dialect(tmp_path: Path, framing: str) -> None:
    peer = _peer(dialect="ascii87-bin")
    async with (
        running(tmp_path, framing=framing, dialect="ascii87-bin") as simulator,
        open_switch_client("127.0.0.1", simulator.port, dialect="ascii87-bin",
                           framing=framing, timeout_s=5) as client,
    ):
        request = peer.request("0200", RICH, "000000", 100, pin=RICH_PIN)
        answer, raw = await client.call(peer.seal(request))
        assert answer["39"] == "00" and peer.answer_mac_ok(raw) is True


# -- configuration and command line ----------------------------------------------------------


def test_the_example_configuration_loads_with_its_demo_keys() -> None:
    config = load_config(EXAMPLE)
    assert config.id == "bank-b" and config.demo and len(config.cards) >= 3
    assert all(card.pan.startswith("541333") for card in config.cards)
    keys = load_link_keys(config)
    assert keys.pin_key is not None and keys.mac_key is not None
    assert "1234" not in repr(config) and "pin_key=True" in repr(keys)


def test_demo_link_keys_are_refused_without_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    data["demo"] = False
    config = parse_config(data, EXAMPLE.parent)
    monkeypatch.delenv("ISO_SWITCH_MASTER_KEY", raising=False)
    with pytest.raises(IssuerConfigError, match="no master key"):
        load_link_keys(config)
    monkeypatch.setenv("ISO_SWITCH_MASTER_KEY", DEMO_MASTER_KEY.hex())
    with pytest.raises(IssuerConfigError, match="DEMO master key"):
        load_link_keys(config)


@pytest.mark.parametrize(("change", "named"), [
    ({"cards": [{"pan": "541333", "expiry": "2812", "pin": "1234", "account": "1"}]},
     "cards[0].pan"),
    ({"rules": [{"action": "explode"}]}, "rules[0].action"),
    ({"listen": {"framing": "binary4"}}, "listen.framing"),
])
def test_bad_configurations_name_the_key(change: dict[str, Any], named: str) -> None:
    with pytest.raises(IssuerConfigError, match=named.replace("[", r"\[").replace("]", r"\]")):
        parse_config(change, EXAMPLE.parent)


def test_cli_help_and_a_bad_configuration(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0 and "--record" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text('[[cards]]\npan = "1"\n', encoding="utf-8")
    assert main(["--config", str(bad)]) == 2
    assert "cards[0]" in capsys.readouterr().err


def test_a_demo_link_key_under_another_name_is_refused_by_its_kcv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    master_hex = os.urandom(32).hex()
    monkeypatch.setenv("ISO_SWITCH_MASTER_KEY", master_hex)
    store = KeyStore(tmp_path / "keys", MasterKey.from_hex(master_hex, "test"), create=True)
    zpk = SWITCH_KEYS.key_for("demo-zpk-bank-b", ("P0",), "E")
    store.add("zpk", zpk, "P0", "T", "D")
    store.generate("zak", "M3", "T", 16, "C")
    data = {"keys": {"dir": str(tmp_path / "keys"), "pin_key": "zpk", "mac_key": "zak"}}
    with pytest.raises(IssuerConfigError, match=r"zpk \(KCV D4BE7B\)"):
        load_link_keys(parse_config(data, tmp_path))
    store.add("my-zpk", os.urandom(16), "P0", "T", "D")
    data["keys"]["pin_key"] = "my-zpk"
    (tmp_path / "keys" / "zpk.tr31").unlink()
    assert load_link_keys(parse_config(data, tmp_path)).pin_key is not None


def test_the_switch_example_points_at_the_simulator_example() -> None:
    switch = tomllib.loads((ROOT / "examples" / "switch-bank-b.toml").read_text("utf-8"))
    issuer = load_config(EXAMPLE)
    (entry,) = switch["issuers"]
    assert switch["demo"] is True and entry["id"] == issuer.id
    assert entry["endpoints"] == [f"{issuer.host}:{issuer.port}"]
    assert (entry["dialect"], entry["framing"]) == (issuer.dialect, issuer.framing)
    assert all(card.pan.startswith(tuple(entry["bins"])) for card in issuer.cards)
    assert (entry["pin_key"], entry["mac_key"]) == (issuer.pin_key, issuer.mac_key)
    assert SWITCH_KEYS.info(entry["pin_key"]).usage == "P0"
    assert SWITCH_KEYS.info(entry["mac_key"]).usage == "M3"


async def test_other_mtis_are_not_answered(tmp_path: Path) -> None:
    peer = _peer()
    async with running(tmp_path) as simulator, _client(simulator, timeout_s=0.3) as client:
        sale = peer.request("0200", RICH, "000000", 100)
        for mti in ("0400", "0140", "0600"):
            with pytest.raises(ResponseTimeout):
                await client.call(peer.seal(sale | {"t": mti}))
        answer, _ = await client.call(peer.seal(sale))
        assert answer["39"] == "00"


_FUZZ_FIELDS = ("2", "3", "4", "7", "11", "37", "41", "49", "52", "90", "95", "103")


@settings(max_examples=150)
@given(mti=st.sampled_from(sorted(ACCEPTED_MTIS)),
       values=st.dictionaries(st.sampled_from(_FUZZ_FIELDS),
                              st.text(alphabet="0123456789ABCDEF ", max_size=48)))
def test_the_host_decides_any_decodable_message_without_raising(
    mti: str, values: dict[str, str],
) -> None:
    config = _config()
    host = IssuerHost(config, LinkKeys(), LinkPeer().codec)  # no keys: no MAC step
    peer = LinkPeer()
    fields = peer.request(mti, RICH, "000000", 100) | {"t": mti} | values
    try:
        message = peer.codec.encode(fields)
    except CodecError:
        return
    reply = host.handle(message)
    assert reply.raw is None or peer.codec.decode(reply.raw)["t"] == response_mti(mti)


async def test_a_bad_frame_after_good_ones_closes_at_once(tmp_path: Path) -> None:
    peer = _peer()
    async with running(tmp_path) as simulator:
        stream = await trio.open_tcp_stream("127.0.0.1", simulator.port)
        good = peer.seal(peer.network("301"))
        await stream.send_all(len(good).to_bytes(2, "big") + good + b"\xff\xff")
        received = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some(1000):
                received += chunk
        assert received[2:6] == b"0810" and simulator.bad_frames == 1
        await stream.aclose()


async def test_its_own_0800_needs_a_connected_switch_that_answers(tmp_path: Path) -> None:
    async with running(tmp_path) as simulator:
        with pytest.raises(NetworkError, match="no switch"):
            await simulator.send_network("301")
        async with _client(simulator) as client:
            await client.call(_peer().seal(_peer().network("001")))
            with pytest.raises(NetworkError, match="no 0810"):
                await simulator.send_network("301", timeout_s=0.2)
            request, _ = await client.receive(timeout_s=5)
            assert request["70"] == "301"


async def test_a_dropped_reversal_advice_is_reversed_once_by_its_repeat(tmp_path: Path) -> None:
    peer = _peer()
    async with running(tmp_path) as simulator, _client(simulator, timeout_s=0.3) as client:
        sale = peer.request("0200", RICH, "000000", 7009)
        await client.call(peer.seal(sale))
        reversal = peer.reversal_advice(sale)
        with pytest.raises(ResponseTimeout):  # reversed, the answer lost
            await client.call(peer.seal(reversal))
        answer, _ = await client.call(peer.seal(peer.repeat(reversal)))
        assert (answer["t"], answer["39"]) == ("0430", "00")
        assert _balance(simulator, RICH)[0] == 1000000
    events = [e["event"] for e in read_record(tmp_path / "record.jsonl")]
    assert events == ["approved", "reversed"]
