"""The MAC rules of interface.md section 4, called without a socket:
which field, which bytes, which key, which requests must carry a MAC,
which responses carry one, and the verdict that becomes 63."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iso_switch.acquirer.mac import (
    MAC_FIELDS,
    REFUSED,
    MacLayout,
    MacVerdict,
    check_mac,
    encode_response,
    mac_field,
    mac_field_for_encoding,
    mac_required,
    mac_status,
    may_carry_mac,
    request_verdict,
    response_maced,
    verify_request_mac,
)
from iso_switch.codec import Codec, CodecError, load_spec
from iso_switch.codes import ResponseCode
from iso_switch.ledger.records import TerminalRow
from iso_switch.security import SoftwareHsm, dukpt
from iso_switch.security.mac import retail_mac

VECTORS = json.loads(
    (Path(__file__).parent / "data" / "security" / "payment_crypto_vectors.json").read_text()
)["tdes_dukpt_x9_24_1_2009_A4"]
BDK = bytes.fromhex(VECTORS["bdk"])  # ANSI X9.24-1 A.4 test BDK, also the demo BDK
KSN = "FFFF9876543210E00001"  # the vectors' first transaction
OTHER_KSN = "FFFF9876543210E00002"
UNKNOWN_KEY_SET_KSN = "AAAA9876543210E00001"
DIALECTS = ("ascii87-hex", "ascii87-bin")
HSM = SoftwareHsm.from_bdks({"FFFF987654": BDK})
LAYOUTS = {name: MacLayout.of(Codec(load_spec(name))) for name in DIALECTS}
REQUIRED = TerminalRow("TERM0001", "MERCHANT0000001", True, frozenset({"00"}))
OPTIONAL = TerminalRow("TERM0003", "MERCHANT0000001", False, frozenset({"00"}))


def purchase(*, secondary: bool = False) -> dict[str, str]:
    fields = {"t": "0200", "2": "4761739001010010", "3": "000000", "4": "000000001000",
              "7": "1208041200", "11": "000123", "41": "TERM0001",
              "42": "MERCHANT0000001", "49": "156", "62": KSN}
    if secondary:
        fields["102"] = "1234567890"
    return fields


def request_key(ksn: str = KSN) -> bytes:
    return dukpt.mac_request_key(dukpt.derive_transaction_key(BDK, ksn))


def response_key(ksn: str = KSN) -> bytes:
    return dukpt.mac_response_key(dukpt.derive_transaction_key(BDK, ksn))


def sealed(layout: MacLayout, fields: Mapping[str, str], key: bytes | None = None) -> bytes:
    """``fields`` as a terminal sends them, MACed under ``key`` (default:
    the request key of DE62) in the field the rules pick."""
    name = mac_field_for_encoding(fields)
    head = layout.head(fields, name)
    return head + layout.tail(name, retail_mac(key or request_key(fields["62"]), head))


def verify(dialect: str, message: bytes) -> MacVerdict | None:
    layout = LAYOUTS[dialect]
    return verify_request_mac(HSM, layout, message, layout.codec.decode(message))


# -- which field ---------------------------------------------------------------


def test_one_definition_of_the_mac_fields() -> None:
    assert MAC_FIELDS == ("64", "128")


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(("secondary", "name"), [(False, "64"), (True, "128")])
def test_de64_without_and_de128_with_a_secondary_bitmap(dialect: str, secondary: bool,
                                                        name: str) -> None:
    layout = LAYOUTS[dialect]
    fields = layout.codec.decode(sealed(layout, purchase(secondary=secondary)))
    assert mac_field(fields) == name
    assert name in fields
    assert (set(MAC_FIELDS) - {name}) & set(fields) == set()
    assert mac_field_for_encoding(purchase(secondary=secondary)) == name


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_de64_beside_a_secondary_bitmap_is_not_the_mac(dialect: str) -> None:
    """With a secondary bitmap the MAC is DE128: a DE64 there is carried
    data, and the request carries no MAC."""
    layout = LAYOUTS[dialect]
    fields = {**purchase(secondary=True), "64": "00" * 8}
    assert verify(dialect, layout.codec.encode(fields)) is None


@pytest.mark.parametrize(("dialect", "wire_bytes", "binary"),
                         [("ascii87-hex", 16, False), ("ascii87-bin", 8, True)])
def test_layout_per_dialect(dialect: str, wire_bytes: int, binary: bool) -> None:
    layout = LAYOUTS[dialect]
    assert dict(layout.wire_bytes) == {"64": wire_bytes, "128": wire_bytes}
    assert dict(layout.binary) == {"64": binary, "128": binary}


# -- which bytes, which key: every verdict of a carried MAC ------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("secondary", [False, True])
def test_ok_under_the_request_key_of_its_ksn(dialect: str, secondary: bool) -> None:
    assert verify(dialect, sealed(LAYOUTS[dialect], purchase(secondary=secondary))) is \
        MacVerdict.OK


@pytest.mark.parametrize("dialect", DIALECTS)
def test_covered_bytes_run_from_the_mti_to_the_byte_before_the_mac(dialect: str) -> None:
    layout = LAYOUTS[dialect]
    message = sealed(layout, purchase())
    name = mac_field(layout.codec.decode(message))
    covered = layout.covered(message, name)
    assert covered is not None
    assert covered.startswith(b"0200")
    assert len(message) - len(covered) == layout.wire_bytes[name]
    tag = retail_mac(request_key(), covered)
    assert message.endswith(layout.tail(name, tag))


def test_the_published_vector_key_is_the_request_key() -> None:
    """The X9.24-1 A.4 MAC-request key of counter 1 verifies, and its retail
    MAC of the published data starts with the published bytes."""
    published = VECTORS["counter_1_working_keys"]
    key = bytes.fromhex(published["mac_request_key"])
    data = b"4012345678909D987"
    assert retail_mac(key, data)[:4].hex().upper() == \
        published["retail_mac_of_ascii_4012345678909D987"]["request_first_4_bytes"]
    for dialect in DIALECTS:
        assert verify(dialect, sealed(LAYOUTS[dialect], purchase(), key)) is MacVerdict.OK


@pytest.mark.parametrize("dialect", DIALECTS)
def test_other_keys_are_bad(dialect: str) -> None:
    layout = LAYOUTS[dialect]
    assert verify(dialect, sealed(layout, purchase(), response_key())) is MacVerdict.BAD
    assert verify(dialect, sealed(layout, purchase(), request_key(OTHER_KSN))) is MacVerdict.BAD


@pytest.mark.parametrize("dialect", DIALECTS)
def test_no_key_without_a_ksn_or_with_an_unknown_key_set(dialect: str) -> None:
    layout = LAYOUTS[dialect]
    no_ksn = {k: v for k, v in purchase().items() if k != "62"}
    assert verify(dialect, sealed(layout, no_ksn, request_key())) is MacVerdict.NO_KEY
    unknown = {**purchase(), "62": UNKNOWN_KEY_SET_KSN}
    assert verify(dialect, sealed(layout, unknown, request_key())) is MacVerdict.NO_KEY
    malformed = {**purchase(), "62": "nonsense"}
    assert verify(dialect, sealed(layout, malformed, request_key())) is MacVerdict.NO_KEY


def test_a_mac_that_is_not_hex_is_bad() -> None:
    layout = LAYOUTS["ascii87-hex"]
    message = sealed(layout, purchase())
    assert verify("ascii87-hex", message[:-16] + b"Z" * 16) is MacVerdict.BAD


def test_a_variable_length_mac_field_cannot_hold_a_mac() -> None:
    layout = MacLayout(LAYOUTS["ascii87-hex"].codec, {}, {})
    message = sealed(LAYOUTS["ascii87-hex"], purchase())
    fields = layout.codec.decode(message)
    assert verify_request_mac(HSM, layout, message, fields) is MacVerdict.BAD


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_message_without_a_mac_carries_none(dialect: str) -> None:
    assert verify(dialect, LAYOUTS[dialect].codec.encode(purchase())) is None


@given(data=st.data())
def test_a_one_bit_flip_anywhere_in_the_covered_bytes_is_bad(data: st.DataObject) -> None:
    """The MAC is checked over the covered bytes as received: flipping any
    bit of them (after the MTI, so the message still reads as a request)
    never leaves a MAC that verifies. A flip in the bitmap may hide the MAC
    field (then the request carries none, and its terminal's profile says
    whether that is 63); every other flip that still decodes is BAD, or
    NO_KEY when it lands in the KSN's key set."""
    dialect = data.draw(st.sampled_from(DIALECTS))
    secondary = data.draw(st.booleans())
    layout = LAYOUTS[dialect]
    message = sealed(layout, purchase(secondary=secondary))
    covered = len(message) - layout.wire_bytes[mac_field_for_encoding(
        purchase(secondary=secondary))]
    index = data.draw(st.integers(min_value=4, max_value=covered - 1))
    bit = data.draw(st.integers(min_value=0, max_value=7))
    flipped = bytearray(message)
    flipped[index] ^= 1 << bit
    try:
        fields = layout.codec.decode(bytes(flipped))
    except CodecError:
        return  # answered 30 before the MAC step
    verdict = verify_request_mac(HSM, layout, bytes(flipped), fields)
    assert verdict is not MacVerdict.OK
    if mac_field(fields) in fields:  # the flip left a MAC in place: it no longer fits
        assert verdict in (MacVerdict.BAD, MacVerdict.NO_KEY)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_nothing_follows_the_mac_field(dialect: str) -> None:
    """The codec refuses bytes after the last field, so the MAC field is
    the message's tail and the covered bytes are all that precede it."""
    layout = LAYOUTS[dialect]
    with pytest.raises(CodecError):
        layout.codec.decode(sealed(layout, purchase()) + b"0")


@given(data=st.data())
def test_bytes_of_the_mac_field_are_not_covered(data: st.DataObject) -> None:
    """What follows the covered bytes is the MAC itself: changing it changes
    nothing the MAC is computed over, and the message is BAD only because
    the carried MAC no longer matches."""
    dialect = data.draw(st.sampled_from(DIALECTS))
    layout = LAYOUTS[dialect]
    message = sealed(layout, purchase())
    size = layout.wire_bytes["64"]
    other = data.draw(st.binary(min_size=8, max_size=8))
    replaced = message[:-size] + layout.tail("64", other)
    assert layout.covered(replaced, "64") == layout.covered(message, "64")
    expected = retail_mac(request_key(), message[:-size])
    assert verify(dialect, replaced) is (MacVerdict.OK if other == expected else MacVerdict.BAD)


# -- which requests must carry one, and the verdict ----------------------------


@pytest.mark.parametrize("mti", ["0100", "0200", "0220", "0400", "0420"])
def test_required_per_profile_for_01xx_02xx_04xx(mti: str) -> None:
    assert mac_required(REQUIRED, mti)
    assert not mac_required(OPTIONAL, mti)
    assert not mac_required(None, mti)  # unknown terminal: checked if carried, then 03


def test_0800_is_never_maced() -> None:
    assert not mac_required(REQUIRED, "0800")
    assert not may_carry_mac("0800")
    assert may_carry_mac("0200")


@pytest.mark.parametrize(
    ("status", "terminal", "verdict"),
    [
        ("valid", REQUIRED, MacVerdict.OK),
        ("valid", OPTIONAL, MacVerdict.OK),
        ("valid", None, MacVerdict.OK),
        ("invalid", REQUIRED, MacVerdict.BAD),
        ("invalid", OPTIONAL, MacVerdict.BAD),
        ("invalid", None, MacVerdict.BAD),
        ("absent", REQUIRED, MacVerdict.MISSING),
        ("absent", OPTIONAL, MacVerdict.NOT_NEEDED),
        ("absent", None, MacVerdict.NOT_NEEDED),
    ],
)
def test_request_verdict(status: str, terminal: TerminalRow | None,
                         verdict: MacVerdict) -> None:
    assert request_verdict(status, terminal, "0200") is verdict  # type: ignore[arg-type]


def test_a_0800_without_a_mac_needs_none() -> None:
    assert request_verdict("absent", REQUIRED, "0800") is MacVerdict.NOT_NEEDED


def test_refused_verdicts_answer_63() -> None:
    assert {MacVerdict.MISSING, MacVerdict.BAD, MacVerdict.NO_KEY} == set(REFUSED)
    for verdict in MacVerdict:
        expected = ResponseCode.SECURITY_VIOLATION if verdict in REFUSED else None
        assert check_mac(verdict) == expected


def test_what_the_ledger_is_told() -> None:
    assert mac_status(MacVerdict.OK) == "valid"
    assert mac_status(MacVerdict.BAD) == "invalid"
    assert mac_status(MacVerdict.NO_KEY) == "invalid"
    assert mac_status(None) == "absent"


# -- responses -------------------------------------------------------------------


@pytest.mark.parametrize("rc", list(ResponseCode))
def test_a_response_is_maced_when_its_request_mac_was_valid(rc: ResponseCode) -> None:
    assert response_maced(True, rc) is (rc not in ("30", "63"))
    assert response_maced(False, rc) is False
    assert response_maced(True, str(rc)) is response_maced(True, rc)  # as stored: plain text


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(("extra", "name"), [({}, "64"), ({"102": "1234567890"}, "128")])
def test_response_mac_under_the_response_key(dialect: str, extra: dict[str, str],
                                             name: str) -> None:
    layout = LAYOUTS[dialect]
    response = {"t": "0210", "3": "000000", "11": "000123", "39": "00", **extra}
    raw = encode_response(HSM, layout, response, KSN)
    fields = layout.codec.decode(raw)
    assert mac_field(fields) == name
    covered = layout.covered(raw, name)
    assert covered is not None
    assert bytes.fromhex(fields[name]) == retail_mac(response_key(), covered)
    # The published response MAC of counter 1 comes from the same key.
    published = VECTORS["counter_1_working_keys"]["retail_mac_of_ascii_4012345678909D987"]
    assert retail_mac(response_key(), b"4012345678909D987")[:4].hex().upper() == \
        published["response_first_4_bytes"]
