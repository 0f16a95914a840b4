"""The simulator client library against a live switch over real TCP (port 0),
and its DUKPT/MAC pieces against independent references."""

from __future__ import annotations

import warnings
from pathlib import Path

import psec.des
import psec.mac
import psec.pinblock
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from iso_switch.codec.subfields import parse_de54
from iso_switch.security.dukpt import TerminalDukpt
from simulators.client import (
    DEMO_BDK_HEX,
    DEMO_KSN_PREFIX,
    DeviceError,
    MacVerdict,
    TerminalDevice,
    describe_response_code,
    device_initial_ksn,
    open_switch_client,
)
from tests.server_helpers import (
    ACCOUNT_POOR,
    BIN_LISTENER,
    CARD_EXPIRED,
    CARD_LOST,
    CARD_POOR,
    CARD_RICH,
    HEX_LISTENER,
    start_switch,
)

RICH_PIN = "1234"


def _quiet(function, *args):  # psec warns about two-key TDES
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return function(*args)


# -- sans-I/O pieces ------------------------------------------------------------


def test_ksn_sequence_matches_terminal_dukpt_across_invalid_counter_runs() -> None:
    start = 0x0003F0  # just below runs of counters with too many one-bits
    reference = TerminalDukpt.from_bdk(bytes.fromhex(DEMO_BDK_HEX), DEMO_KSN_PREFIX + "00000",
                                       counter=start)
    device = TerminalDevice(counter=start)
    for _ in range(300):
        ksn, keys = reference.next_transaction()
        assert device.next_ksn() == ksn
        assert device.keys_for(ksn) == keys


@given(st.integers(0, 1000), st.integers(0, 1000))
def test_distinct_device_indexes_give_distinct_device_ids(first: int, second: int) -> None:
    a, b = device_initial_ksn(DEMO_KSN_PREFIX, first), device_initial_ksn(DEMO_KSN_PREFIX, second)
    assert (a == b) == (first == second)
    assert a[:10] == "FFFF987654" and int(a, 16) & 0x1FFFFF == 0  # counter cleared


def test_seal_pin_block_and_mac_agree_with_psec() -> None:
    for dialect in (HEX_LISTENER, BIN_LISTENER):
        device = TerminalDevice(terminal_id="TERM0001", dialect=dialect)
        sealed = device.seal_message(device.purchase(CARD_RICH, 1234), pin=RICH_PIN)
        keys = device.keys_for(sealed.ksn)
        clear = psec.pinblock.encode_pinblock_iso_0(RICH_PIN, CARD_RICH)
        expected_block = _quiet(psec.des.encrypt_tdes_ecb, keys.pin, clear)
        assert sealed.fields["52"] == expected_block.hex().upper()
        size = 8 if dialect == BIN_LISTENER else 16
        mac = _quiet(psec.mac.generate_retail_mac, keys.mac_request[:8], keys.mac_request[8:],
                     sealed.raw[:-size], 1)
        assert sealed.fields["64"] == mac.hex().upper()
        assert RICH_PIN not in repr(sealed) and CARD_RICH not in repr(sealed)


def test_stan_ranges_wrap_and_repeat_keeps_the_key_fields() -> None:
    device = TerminalDevice(stan_range=(10, 12))
    assert [device.next_stan() for _ in range(4)] == ["000010", "000011", "000012", "000010"]
    original = device.purchase(CARD_RICH, 100)
    repeat = device.repeat(device.seal_message(original, pin=RICH_PIN).fields)
    assert repeat["t"] == "0201" and "52" not in repeat and "62" not in repeat
    assert all(repeat[k] == original[k] for k in ("7", "11", "12", "13"))
    with pytest.raises(DeviceError):
        device.repeat(device.echo())
    with pytest.raises(DeviceError):
        TerminalDevice(stan_range=(5, 4))


def test_describe_response_code() -> None:
    assert describe_response_code("51") == "51 insufficient funds"
    assert describe_response_code("00") == "00 approved"
    assert describe_response_code(None).startswith("--")


# -- against a live switch ------------------------------------------------------


async def test_every_transaction_against_the_switch(nursery: trio.Nursery,
                                                    tmp_path: Path) -> None:
    running = await start_switch(nursery, tmp_path)
    for listener in (HEX_LISTENER, BIN_LISTENER):
        device = TerminalDevice(terminal_id="TERM0001", dialect=listener,
                                device_index=1 if listener == BIN_LISTENER else 0)
        async with open_switch_client("127.0.0.1", running.port(listener),
                                      dialect=listener) as client:

            async def call(fields, pin=None, mac=True, device=device, client=client):
                sealed = device.seal_message(fields, pin=pin, mac=mac)
                response = await client.call(sealed)
                verdict = device.verify_response_mac(response.raw, sealed.ksn, response.fields)
                return sealed, response.fields, verdict

            for fields in (device.sign_on(), device.echo(), device.sign_off()):
                _, answer, verdict = await call(fields)
                assert answer["t"] == "0810" and answer["39"] == "00"
                assert verdict is MacVerdict.ABSENT

            purchase, answer, verdict = await call(device.purchase(CARD_RICH, 1234), RICH_PIN)
            assert (answer["39"], verdict) == ("00", MacVerdict.OK)
            assert len(answer["37"]) == 12 and len(answer["38"]) == 6

            _, answer, _ = await call(device.purchase(CARD_RICH, 100), "9999")
            assert answer["39"] == "55"
            _, answer, _ = await call(device.purchase(CARD_RICH, 100), RICH_PIN)
            assert answer["39"] == "00"  # the right PIN resets the count
            _, answer, _ = await call(device.purchase(CARD_LOST, 100))
            assert answer["39"] == "41"
            _, answer, _ = await call(device.purchase(CARD_EXPIRED, 100))
            assert answer["39"] == "54"
            _, answer, _ = await call(device.purchase(CARD_POOR, 6000), "4321")
            assert answer["39"] == "51"

            _, answer, verdict = await call(device.balance_inquiry(CARD_RICH), RICH_PIN)
            assert answer["39"] == "00" and verdict is MacVerdict.OK
            assert {b.amount_type for b in parse_de54(answer["54"])} == {"01", "02"}
            _, answer, _ = await call(device.balance_inquiry(CARD_RICH))
            assert answer["39"] == "55"  # PIN required

            _, answer, _ = await call(device.withdrawal(CARD_RICH, 500), RICH_PIN)
            assert answer["39"] == "00"
            _, answer, _ = await call(device.refund(CARD_RICH, 300))
            assert answer["39"] == "00"
            _, answer, verdict = await call(device.transfer(CARD_RICH, 200, ACCOUNT_POOR),
                                            RICH_PIN)
            assert (answer["39"], answer["103"], verdict) == ("00", ACCOUNT_POOR, MacVerdict.OK)

            auth, answer, _ = await call(device.authorization(CARD_RICH, 1000), RICH_PIN)
            assert answer["t"] == "0110" and answer["39"] == "00"
            _, answer, verdict = await call(device.completion(auth.fields, 800))
            assert (answer["t"], answer["39"], verdict) == ("0230", "00", MacVerdict.OK)

            _, answer, verdict = await call(device.reversal(purchase.fields))
            assert (answer["t"], answer["39"], verdict) == ("0410", "00", MacVerdict.OK)
            p2, answer, _ = await call(device.purchase(CARD_RICH, 1000))
            _, answer, _ = await call(device.reversal(p2.fields, advice=True,
                                                      actual_amount_minor=400))
            assert (answer["t"], answer["39"]) == ("0430", "00")

            # A repeat gets the stored decision under a fresh KSN and MAC.
            original, first, _ = await call(device.purchase(CARD_RICH, 77))
            repeat, again, verdict = await call(device.repeat(original.fields))
            assert repeat.fields["t"] == "0201" and repeat.ksn != original.ksn
            assert (again["39"], again["37"], verdict) == (first["39"], first["37"],
                                                           MacVerdict.OK)

            # No MAC on TERM0001: 63, unMACed.
            _, answer, verdict = await call(device.purchase(CARD_RICH, 100), mac=False)
            assert (answer["39"], verdict) == ("63", MacVerdict.ABSENT)


async def test_pipelined_answers_match_their_requests(nursery: trio.Nursery,
                                                      tmp_path: Path) -> None:
    running = await start_switch(nursery, tmp_path)
    device = TerminalDevice(terminal_id="TERM0003")
    results: dict[str, str] = {}
    async with open_switch_client("127.0.0.1", running.port()) as client:

        async def one(amount: int) -> None:
            sealed = device.seal_message(device.purchase(CARD_RICH, amount), mac=False)
            fields, _raw = await client.call(sealed)
            assert fields["11"] == sealed.stan and fields["4"] == sealed.fields["4"]
            results[sealed.stan] = fields["39"]

        async with trio.open_nursery() as inner:
            for amount in range(1, 16):
                inner.start_soon(one, amount)
        await client.send(device.seal(device.echo()))
        unclaimed = await client.receive()
        assert unclaimed.fields["t"] == "0810"
    assert len(results) == 15 and set(results.values()) == {"00"}
