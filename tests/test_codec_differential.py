"""Differential tests: our codec against pyiso8583 on the three dialects.

Every valid dict encodes to the same bytes and decodes back to the same
dict; random, mutated and truncated bytes are rejected by both or accepted
by both with identical output. Each check runs on a codec that compiles a
layout at first sight and on one that never compiles, so both the compiled
fast paths and the generic path are held to pyiso8583's results.
"""

from __future__ import annotations

import iso8583
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iso_switch.codec import Codec, CodecError, load_spec
from tests.codec_strategies import field_dicts

DIALECTS = ["ascii87-hex", "ascii87-bin", "bcd87"]
SPECS = {name: load_spec(name) for name in DIALECTS}
EAGER = {name: Codec(spec, compile_after=1) for name, spec in SPECS.items()}
GENERIC = {name: Codec(spec, max_layouts=0) for name, spec in SPECS.items()}


def reference_decode(raw: bytes, spec: dict) -> dict[str, str] | None:
    """pyiso8583's answer, or None when it rejects (any exception)."""
    try:
        return iso8583.decode(bytearray(raw), spec)[0]
    except Exception:
        return None


def ours_decode(codec: Codec, raw: bytes) -> dict[str, str] | None:
    try:
        return codec.decode(raw)
    except CodecError:
        return None


@pytest.mark.parametrize("name", DIALECTS)
@given(data=st.data())
def test_encode_and_decode_match_pyiso8583(name: str, data: st.DataObject) -> None:
    spec = SPECS[name]
    doc = data.draw(field_dicts(spec))
    expected = bytes(iso8583.encode(dict(doc), spec)[0])
    for codec in (EAGER[name], GENERIC[name]):
        for _ in range(2):  # the second pass runs the compiled layout
            assert codec.encode(doc) == expected
            decoded = codec.decode(expected)
            assert decoded == iso8583.decode(bytearray(expected), spec)[0]
            assert list(decoded) == list(iso8583.decode(bytearray(expected), spec)[0])


@pytest.mark.parametrize("name", DIALECTS)
@given(data=st.data())
def test_mutated_messages_agree_with_pyiso8583(name: str, data: st.DataObject) -> None:
    spec = SPECS[name]
    doc = data.draw(field_dicts(spec))
    raw = bytearray(iso8583.encode(dict(doc), spec)[0])
    EAGER[name].decode(bytes(raw))  # the layout is now compiled
    edits = data.draw(st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 255),
                                         st.sampled_from(["set", "insert", "delete"])),
                               min_size=1, max_size=4))
    for pos, byte, kind in edits:
        pos = min(pos, len(raw) - 1)
        if kind == "set":
            raw[pos] = byte
        elif kind == "insert":
            raw.insert(pos, byte)
        elif len(raw) > 1:
            del raw[pos]
    expected = reference_decode(bytes(raw), spec)
    for codec in (EAGER[name], GENERIC[name]):
        assert ours_decode(codec, bytes(raw)) == expected


@pytest.mark.parametrize("name", DIALECTS)
@given(data=st.data())
def test_length_prefix_variants_agree(name: str, data: st.DataObject) -> None:
    """Non-canonical but int()-valid ASCII lengths (' 5', '+5') on a
    compiled layout: pyiso8583 accepts some of them; so must we."""
    spec = SPECS[name]
    doc = data.draw(field_dicts(spec, numbers=[2, 3, 32, 44, 102]))
    raw = bytes(iso8583.encode(dict(doc), spec)[0])
    EAGER[name].decode(raw)
    variant = data.draw(st.sampled_from([b" ", b"+", b"-", b"_", b"\xa0", b"\x85"]))
    pos = data.draw(st.integers(0, len(raw) - 1))
    mutated = raw[:pos] + variant + raw[pos + 1 :]
    expected = reference_decode(mutated, spec)
    assert ours_decode(EAGER[name], mutated) == expected
    assert ours_decode(GENERIC[name], mutated) == expected


@pytest.mark.parametrize("name", DIALECTS)
@given(raw=st.binary(max_size=300))
def test_random_bytes_agree(name: str, raw: bytes) -> None:
    expected = reference_decode(raw, SPECS[name])
    assert ours_decode(EAGER[name], raw) == expected
    assert ours_decode(GENERIC[name], raw) == expected


@pytest.mark.parametrize("name", DIALECTS)
@given(data=st.data())
@settings(max_examples=40)
def test_every_proper_prefix_is_rejected(name: str, data: st.DataObject) -> None:
    spec = SPECS[name]
    doc = data.draw(field_dicts(spec))
    raw = bytes(iso8583.encode(dict(doc), spec)[0])
    EAGER[name].decode(raw)
    for end in range(len(raw)):
        with pytest.raises(CodecError):
            EAGER[name].decode(raw[:end])


@pytest.mark.parametrize("name", DIALECTS)
@given(data=st.data())
def test_invalid_dicts_rejected_like_pyiso8583(name: str, data: st.DataObject) -> None:
    """Values of the wrong length or alphabet: both reject, or both encode
    the same bytes."""
    spec = SPECS[name]
    doc = data.draw(field_dicts(spec))
    key = data.draw(st.sampled_from(sorted(doc)))
    doc[key] = data.draw(st.text(max_size=12))
    try:
        expected: bytes | None = bytes(iso8583.encode(dict(doc), spec)[0])
    except Exception:
        expected = None
    for codec in (EAGER[name], GENERIC[name]):
        for _ in range(2):
            try:
                got: bytes | None = codec.encode(doc)
            except CodecError:
                got = None
            assert got == expected
