"""Messages written outside this project (moov-io/iso8583 test data, see
tests/data/interop/NOTICE) decode exactly as pyiso8583 decodes them."""

from __future__ import annotations

from pathlib import Path

import iso8583
import pytest

from iso_switch.codec import Codec, CodecError, load_spec

DATA = Path(__file__).parent / "data" / "interop"
MESSAGES = sorted(DATA.glob("*.dat"))
DIALECTS = ["ascii87-hex", "ascii87-bin", "bcd87"]
# pyiso8583's default_ascii layout accepts these moov messages.
ACCEPTED_ON_ASCII87_HEX = {
    "financial_transaction_message.dat",
    "financial_transaction_message_response.dat",
    "iso_reversal_message.dat",
    "iso_reversal_message_advice.dat",
    "iso_reversal_message_advice_missing_field.dat",
    "iso_reversal_message_advice_unexpected_field.dat",
    "iso_reversal_message_error_date.dat",
    "iso_reversal_message_response.dat",
    "iso_reversal_repeat_message.dat",
    "iso_reversal_repeat_message_response.dat",
    "network_management_message.dat",
    "network_management_message_response.dat",
}


def test_the_interop_set_is_present() -> None:
    assert len(MESSAGES) >= 20
    assert (DATA / "NOTICE").exists()


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("path", MESSAGES, ids=lambda p: p.name)
def test_decodes_as_pyiso8583_does(path: Path, dialect: str) -> None:
    spec = load_spec(dialect)
    raw = path.read_bytes()
    try:
        expected = iso8583.decode(bytearray(raw), spec)[0]
    except Exception:
        expected = None
    codec = Codec(spec, compile_after=1)
    for _ in range(2):  # generic, then compiled
        try:
            got = codec.decode(raw)
        except CodecError:
            got = None
        assert got == expected
    if dialect == "ascii87-hex":
        assert (expected is not None) == (path.name in ACCEPTED_ON_ASCII87_HEX)


@pytest.mark.parametrize("name", sorted(ACCEPTED_ON_ASCII87_HEX))
def test_accepted_messages_round_trip(name: str) -> None:
    spec = load_spec("ascii87-hex")
    codec = Codec(spec)
    raw = (DATA / name).read_bytes()
    decoded = codec.decode(raw)
    # Re-encoding upper-cases the bitmap, as pyiso8583 does.
    assert codec.encode(decoded) == bytes(iso8583.encode(dict(decoded), spec)[0])
    assert codec.decode(codec.encode(decoded)) == {**decoded, "p": decoded["p"].upper(),
                                                    **({"1": decoded["1"].upper()}
                                                       if "1" in decoded else {})}
