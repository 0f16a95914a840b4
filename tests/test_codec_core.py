"""Spec loading and validation, errors, limits and isolation of the codec."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import iso8583
import iso8583.specs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from iso_switch.codec import Codec, CodecError, SpecError, list_specs, load_spec
from iso_switch.codec._codec import MAX_MESSAGE_BYTES

PAN = "4761739001010010"


def test_named_dialects_exist_and_match_pyiso8583() -> None:
    assert {"ascii87-hex", "ascii87-bin", "bcd87"} <= set(list_specs())
    assert load_spec("ascii87-hex") == iso8583.specs.default_ascii
    assert load_spec("ascii87-bin") == iso8583.specs.default


def test_bcd87_packs_numerics() -> None:
    codec = Codec(load_spec("bcd87"))
    raw = codec.encode({"t": "0200", "3": "000000", "4": "000000001234", "11": "000123",
                        "2": PAN, "22": "051", "41": "TERM0001"})
    assert raw[:2] == b"\x02\x00"  # BCD MTI
    assert b"\x00\x00\x00\x00\x12\x34" in raw  # DE4 in 6 BCD bytes
    assert b"\x16\x47\x61\x73\x90\x01\x01\x00\x10" in raw  # LL=16 BCD + PAN
    assert b"\x00\x51" in raw  # DE22 left-padded to 2 bytes
    assert b"TERM0001" in raw


def test_load_spec_from_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(iso8583.specs.default_ascii))
    assert load_spec(path) == iso8583.specs.default_ascii


def test_unknown_spec_name() -> None:
    with pytest.raises(FileNotFoundError, match="ascii87-hex"):
        load_spec("no-such-dialect")


@pytest.mark.parametrize(
    ("field", "prop", "value"),
    [
        ("2", "data_enc", "no-such-codec"),
        ("2", "len_enc", 7),
        ("2", "len_type", 9),
        ("2", "len_type", "2"),
        ("3", "max_len", -1),
        ("35", "len_count", "bits"),
        ("35", "left_pad", "Z"),
    ],
)
def test_bad_spec_names_field_and_property(field: str, prop: str, value: object) -> None:
    spec = json.loads(json.dumps(iso8583.specs.default_ascii))
    spec[field][prop] = value
    with pytest.raises(SpecError) as info:
        Codec(spec)
    assert info.value.field == field
    assert info.value.prop == prop
    assert repr(field) in str(info.value) and repr(prop) in str(info.value)


def test_missing_property_and_fields() -> None:
    spec = json.loads(json.dumps(iso8583.specs.default_ascii))
    del spec["4"]["max_len"]
    with pytest.raises(SpecError, match=r"'4'.*'max_len'"):
        Codec(spec)
    spec = json.loads(json.dumps(iso8583.specs.default_ascii))
    del spec["t"]
    with pytest.raises(SpecError, match="'t'"):
        Codec(spec)


def test_codec_error_carries_field_position_and_no_content() -> None:
    codec = Codec(load_spec("ascii87-hex"))
    raw = codec.encode({"t": "0200", "2": PAN, "35": PAN + "=28121011234567890",
                        "52": "0123456789ABCDEF"})
    with pytest.raises(CodecError) as info:
        codec.decode(raw[:-3])
    err = info.value
    assert err.field == "52" and isinstance(err.position, int)
    assert PAN not in str(err) and "0123456789AB" not in str(err)
    assert PAN not in repr(err.args)
    bad = raw.replace(b"16" + PAN.encode(), b"1X" + PAN.encode())
    with pytest.raises(CodecError) as info:
        codec.decode(bad)
    assert info.value.field == "2" and info.value.position == 20
    assert PAN not in str(info.value)


def test_encode_error_names_field_without_value() -> None:
    codec = Codec(load_spec("ascii87-hex"))
    with pytest.raises(CodecError) as info:
        codec.encode({"t": "0200", "2": PAN + "1234"})  # 20 digits > 19
    assert info.value.field == "2"
    assert PAN not in str(info.value)


def test_encode_does_not_mutate_and_ignores_bitmap_keys() -> None:
    codec = Codec(load_spec("ascii87-hex"))
    doc = {"t": "0800", "p": "junk", "1": "junk", "65": "x", "7": "1125120000", "11": "000001",
           "70": "301"}
    before = dict(doc)
    raw = codec.encode(doc)
    assert doc == before
    assert raw == bytes(iso8583.encode(dict(before), iso8583.specs.default_ascii)[0])


def test_non_str_values_are_rejected() -> None:
    codec = Codec(load_spec("ascii87-bin"))
    for _ in range(3):
        with pytest.raises(CodecError):
            codec.encode({"t": "0200", "52": b"0123456789ABCDEF"})  # type: ignore[dict-item]
        with pytest.raises(CodecError):
            codec.encode({"t": "0200", "4": 1234})  # type: ignore[dict-item]


def test_bytearray_and_memoryview_input() -> None:
    codec = Codec(load_spec("ascii87-hex"))
    raw = codec.encode({"t": "0800", "7": "1125120000", "11": "000001", "70": "301"})
    for _ in range(3):
        assert codec.decode(bytearray(raw)) == codec.decode(memoryview(raw)) == codec.decode(raw)


def test_oversized_message_rejected_before_parsing() -> None:
    codec = Codec(load_spec("ascii87-hex"))
    with pytest.raises(CodecError, match="larger"):
        codec.decode(b"0800" + b"0" * MAX_MESSAGE_BYTES)


@given(st.lists(st.binary(min_size=8, max_size=8), min_size=1, max_size=50))
def test_compiled_layouts_stay_bounded(bitmaps: list[bytes]) -> None:
    codec = Codec(load_spec("ascii87-bin"), compile_after=1, max_layouts=4)
    for bitmap in bitmaps:
        for _ in range(2):
            with contextlib.suppress(CodecError):
                codec.decode(b"0200" + bitmap)
    assert codec.compiled_layouts()[0] <= 4
    assert len(codec._dec_seen) <= 4096


@given(st.binary(max_size=400))
def test_nothing_but_codec_error_escapes_decode(raw: bytes) -> None:
    for name in ("ascii87-hex", "ascii87-bin", "bcd87"):
        with contextlib.suppress(CodecError):
            Codec(load_spec(name)).decode(raw)


def test_tertiary_bitmap_matches_pyiso8583() -> None:
    spec = json.loads(json.dumps(iso8583.specs.default_ascii))
    spec["130"] = {"data_enc": "ascii", "len_enc": "ascii", "len_type": 2, "max_len": 20,
                   "desc": "Private"}
    doc = {"t": "0200", "3": "000000", "70": "301", "130": "tertiary"}
    expected = bytes(iso8583.encode(dict(doc), spec)[0])
    codec = Codec(spec)
    for _ in range(3):
        assert codec.encode(doc) == expected
        assert codec.decode(expected) == iso8583.decode(bytearray(expected), spec)[0]


def test_ebcdic_spec_matches_pyiso8583() -> None:
    spec = json.loads(json.dumps(iso8583.specs.default_ascii))
    for field in spec.values():
        if field["data_enc"] == "ascii":
            field["data_enc"] = "cp500"
        if field["len_enc"] == "ascii":
            field["len_enc"] = "cp500"
    doc = {"t": "0200", "2": PAN, "3": "000000", "4": "000000001234", "41": "TERM0001"}
    expected = bytes(iso8583.encode(dict(doc), spec)[0])
    codec = Codec(spec)
    for _ in range(3):
        assert codec.encode(doc) == expected
        assert codec.decode(expected) == doc | {"p": iso8583.decode(expected, spec)[0]["p"]}


def test_codec_imports_nothing_outside_stdlib() -> None:
    code = (
        "import sys, iso_switch.codec;"
        "bad = [m for m in ('trio', 'cryptography', 'structlog', 'iso8583') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_pans_masked_inside_longer_digit_runs() -> None:
    from iso_switch.codec import mask_pans_in_text

    text = f"x{PAN}00000000001234y and {PAN} and 000000001234"
    masked = mask_pans_in_text(text)
    assert PAN not in masked
    assert "476173" in masked and "000000001234" in masked  # amounts (12 digits) stay
