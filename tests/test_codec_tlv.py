"""DE55 BER-TLV: round trips, strictness, limits, and errors without values."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iso_switch.codec import Tlv, TlvError, build_de55, build_tlv, parse_de55, parse_tlv
from iso_switch.codec.tlv import (
    MAX_TAG_BYTES,
    MAX_TLV_DEPTH,
    MAX_TLV_ITEMS,
    display_value,
    find,
    tag_name,
    walk,
)

PAN = "4761739001010010"
SECRET = bytes.fromhex("DEADBEEFCAFEF00D")


def _tag(constructed: bool) -> st.SearchStrategy[str]:
    """Well-formed tags of 1 to MAX_TAG_BYTES bytes, primitive or constructed."""
    flag = 0x20 if constructed else 0x00
    class_bits = st.sampled_from([0x00, 0x40, 0x80, 0xC0])
    one_byte = st.tuples(class_bits, st.integers(1, 0x1E)).map(
        lambda t: bytes([t[0] | flag | t[1]])
    )
    multi = st.tuples(
        class_bits,
        st.lists(st.integers(0x80, 0xFF), max_size=MAX_TAG_BYTES - 2),
        st.integers(0x00, 0x7F),
    ).map(lambda t: bytes([t[0] | flag | 0x1F, *t[1], t[2]]))
    return st.one_of(one_byte, multi).map(lambda b: b.hex().upper())


def _primitive() -> st.SearchStrategy[Tlv]:
    # Values up to 300 bytes exercise the 0x81 and 0x82 length forms.
    value = st.one_of(st.binary(max_size=20), st.binary(min_size=120, max_size=300))
    return st.builds(Tlv, tag=_tag(False), value=value)


items_strategy: st.SearchStrategy[list[Tlv]] = st.recursive(
    st.lists(_primitive(), max_size=4),
    lambda children: st.lists(
        st.one_of(
            _primitive(),
            st.tuples(_tag(True), children).map(lambda t: Tlv.template(t[0], t[1])),
        ),
        max_size=4,
    ),
    max_leaves=12,
)


@given(items_strategy)
def test_parse_inverts_build(items: list[Tlv]) -> None:
    assert parse_tlv(build_tlv(items)) == items


@given(items_strategy)
def test_build_inverts_parse(items: list[Tlv]) -> None:
    data = build_tlv(items)
    assert build_tlv(parse_tlv(data)) == data
    assert parse_de55(build_de55(items)) == items
    assert build_de55(items) == data.hex().upper()


@given(st.lists(_primitive(), min_size=1, max_size=3))
def test_truncation_inside_any_item_raises_with_an_offset(items: list[Tlv]) -> None:
    """Cut one item anywhere (or its enclosing template): always an error."""
    single = build_tlv([Tlv.template("70", items)])
    for cut in range(1, len(single)):
        with pytest.raises(TlvError) as caught:
            parse_tlv(single[:cut])
        assert 0 <= caught.value.offset <= cut


def test_truncation_at_every_position_of_a_known_item() -> None:
    encoded = build_tlv([Tlv("9F02", bytes(6))])
    for cut in range(1, len(encoded)):
        with pytest.raises(TlvError):
            parse_tlv(encoded[:cut])


def test_truncation_at_item_boundary_is_a_shorter_list() -> None:
    items = [Tlv("9F02", bytes(6)), Tlv("5F2A", b"\x01\x56")]
    first = build_tlv(items[:1])
    assert parse_tlv(build_tlv(items)[: len(first)]) == items[:1]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ("9F", "truncated tag"),
        ("9F02", "truncated length"),
        ("9F0281", "truncated length"),
        ("9F0207000000001234", "value runs past"),
        ("8280", "indefinite length"),
        ("828105" + "00" * 5, "over-long"),
        ("82820005" + "00" * 5, "over-long"),
        ("828200FF" + "00" * 0xFF, "over-long"),
        ("82830000FF" + "00" * 0xFF, "over-long"),
        ("82840000000100", "longer than 3 bytes"),
        ("00", "padding"),
        ("9F8181818101", f"longer than {MAX_TAG_BYTES} bytes"),
        ("700382020101", "value runs past"),
    ],
)
def test_malformed_input_is_rejected_with_a_reason(data: str, reason: str) -> None:
    with pytest.raises(TlvError) as caught:
        parse_tlv(bytes.fromhex(data))
    assert reason in str(caught.value)


def test_long_forms_parse_at_their_minimum() -> None:
    for size, prefix in ((0x7F, "7F"), (0x80, "8180"), (0xFF, "81FF"), (0x100, "820100")):
        data = bytes.fromhex("C1" + prefix) + bytes(size)
        assert parse_tlv(data) == [Tlv("C1", bytes(size))]
        assert build_tlv([Tlv("C1", bytes(size))]) == data


def _nested(depth: int) -> Tlv:
    item = Tlv("5A", b"\x47")
    for _ in range(depth):
        item = Tlv.template("E1", [item])
    return item


def test_depth_limit() -> None:
    deepest_allowed = build_tlv([_nested(MAX_TLV_DEPTH)])
    assert parse_tlv(deepest_allowed) == [_nested(MAX_TLV_DEPTH)]
    # One more template, written by hand (build_tlv refuses it too).
    too_deep = bytes([0xE1, len(deepest_allowed)]) + deepest_allowed
    with pytest.raises(TlvError, match="nested deeper"):
        parse_tlv(too_deep)
    with pytest.raises(TlvError, match="nested deeper"):
        build_tlv([_nested(MAX_TLV_DEPTH + 1)])


def test_item_limit_counts_every_level() -> None:
    flat = build_tlv([Tlv("C1", b"")] * MAX_TLV_ITEMS)
    assert len(parse_tlv(flat)) == MAX_TLV_ITEMS
    with pytest.raises(TlvError, match="more than"):
        parse_tlv(flat + b"\xc1\x00")
    nested = build_tlv([Tlv.template("E1", [Tlv("C1", b"")] * MAX_TLV_ITEMS)])
    with pytest.raises(TlvError, match="more than"):
        parse_tlv(nested)


def test_constructed_bit_decides_children() -> None:
    parsed = parse_tlv(bytes.fromhex("7003" + "5A0147" + "5A0147"))
    assert parsed[0].children == (Tlv("5A", b"\x47"),)
    assert parsed[1].children is None
    with pytest.raises(TlvError):
        Tlv("70", b"")  # constructed tag without children
    with pytest.raises(TlvError):
        Tlv("5A", b"", children=())
    with pytest.raises(TlvError):
        Tlv("9f02", b"")  # lower-case hex
    with pytest.raises(TlvError):
        Tlv("9F82", b"")  # the last tag byte says "more follow"


def test_empty_data_and_empty_template() -> None:
    assert parse_tlv(b"") == []
    assert parse_tlv(b"\x70\x00") == [Tlv.template("70", [])]


def test_de55_hex_errors() -> None:
    with pytest.raises(TlvError, match="not hex"):
        parse_de55("9F0")
    with pytest.raises(TlvError, match="not hex"):
        parse_de55("ZZ")


def test_errors_and_reprs_never_carry_values() -> None:
    item = Tlv("5A", bytes.fromhex(PAN))
    assert PAN not in repr(item)
    assert PAN not in repr([Tlv.template("70", [item])])
    data = build_tlv([Tlv("9F10", SECRET), item])
    for cut in range(1, len(data)):
        try:
            parse_tlv(data[:cut])
        except TlvError as exc:
            text = str(exc) + repr(exc)
            assert SECRET.hex() not in text.lower()
            assert PAN not in text
    error = TlvError("truncated tag", 3)
    again = pickle.loads(pickle.dumps(error))
    assert (again.reason, again.offset) == ("truncated tag", 3)


def test_display_value_masks_card_data() -> None:
    assert display_value(Tlv("5A", bytes.fromhex(PAN))) == "476173******0010"
    assert display_value(Tlv("5A", bytes.fromhex(PAN + "123F"))) == "476173*********0123"
    track = Tlv("57", bytes.fromhex(PAN + "D28122011234567F"))
    assert display_value(track) == "476173******0010D" + "*" * 14
    assert display_value(Tlv("9F10", SECRET)) == "<8 bytes>"
    assert display_value(Tlv("9F02", bytes.fromhex("000000001234"))) == "000000001234"
    assert display_value(Tlv.template("70", [track])) == "<1 items>"


def test_walk_find_and_names() -> None:
    pan = Tlv("5A", bytes.fromhex(PAN))
    items = [Tlv("9F02", bytes(6)), Tlv.template("70", [Tlv.template("71", [pan])])]
    assert [(d, i.tag) for d, i in walk(items)] == [(0, "9F02"), (0, "70"), (1, "71"), (2, "5A")]
    assert find(items, "5A") is pan
    assert find(items, "9F26") is None
    assert tag_name("9F02") == "Amount, Authorised"
    assert tag_name("DF01") == ""
