"""Framing: bytes in, events out, however TCP splits or joins the stream.

In the spirit of h11's ``tests/test_io.py``: every stream is fed whole, one
byte at a time, and split at every position; limits and bad headers are
remote errors that never carry content.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iso_switch.protocol import (
    DEFAULT_MAX_FRAME_BYTES,
    KEEP_ALIVE,
    NEED_DATA,
    TPDU_BYTES,
    BadLengthHeader,
    BufferOverflow,
    Frame,
    Framer,
    FrameTooLarge,
    FrameTooShort,
    FramingKind,
    KeepAlive,
    LocalProtocolError,
    MessageTooLarge,
    RemoteProtocolError,
    max_length_for,
    swap_tpdu,
)

KINDS = list(FramingKind)
PAN = b"4761739001010010"
TPDU = bytes.fromhex("6000010002")


def events_of(framer: Framer) -> list[Frame | KeepAlive]:
    return list(framer.events())


def feed_in_pieces(framer: Framer, stream: bytes, cuts: list[int]) -> list[Frame | KeepAlive]:
    """Feed ``stream`` cut at ``cuts`` and drain after each piece."""
    events: list[Frame | KeepAlive] = []
    previous = 0
    for cut in [*sorted(cuts), len(stream)]:
        framer.feed(stream[previous:cut])
        events.extend(framer.events())
        previous = cut
    return events


def drain_by_next_frame(framer: Framer) -> list[Frame | KeepAlive]:
    out: list[Frame | KeepAlive] = []
    while (event := framer.next_frame()) is not NEED_DATA:
        assert not isinstance(event, type(NEED_DATA))
        out.append(event)
    return out


# -- headers on the wire ------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "header"),
    [
        (FramingKind.BINARY2, b"\x01\x2c"),
        (FramingKind.BCD2, b"\x03\x00"),
        (FramingKind.ASCII4, b"0300"),
    ],
)
def test_header_encoding_of_each_kind(kind: FramingKind, header: bytes) -> None:
    message = b"M" * 300
    framed = Framer(kind).frame(message)
    assert framed == header + message
    framer = Framer(kind)
    framer.feed(framed)
    assert framer.next_frame() == Frame(message)
    assert framer.next_frame() is NEED_DATA


def test_default_is_two_byte_binary_without_tpdu() -> None:
    framer = Framer()
    assert framer.kind is FramingKind.BINARY2
    assert not framer.tpdu
    assert framer.max_frame_bytes == DEFAULT_MAX_FRAME_BYTES == 8192
    assert framer.frame(b"0800") == b"\x00\x040800"


def test_kind_accepts_config_spelling() -> None:
    assert Framer("bcd2").kind is FramingKind.BCD2
    assert max_length_for("ascii4") == 9999
    assert max_length_for(FramingKind.BINARY2) == 65535


# -- reassembly ---------------------------------------------------------------


def test_whole_buffer_of_several_frames_and_trailing_partial() -> None:
    framer = Framer()
    stream = framer.frame(b"one") + framer.frame(b"two") + framer.frame(b"three")[:4]
    framer.feed(stream)
    assert events_of(framer) == [Frame(b"one"), Frame(b"two")]
    assert framer.has_partial_frame
    assert framer.buffered_bytes == 4
    framer.feed(b"ree")
    assert events_of(framer) == [Frame(b"three")]
    assert not framer.has_partial_frame
    assert framer.buffered_bytes == 0


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("tpdu", [False, True])
def test_one_byte_at_a_time(kind: FramingKind, tpdu: bool) -> None:
    sender = Framer(kind, tpdu=tpdu)
    tp = TPDU if tpdu else None
    messages = [b"0200" + PAN, b"x" * 70, b"0800"]
    stream = b"".join(sender.frame(m, tp) for m in messages)
    framer = Framer(kind, tpdu=tpdu)
    events: list[Frame | KeepAlive] = []
    for index in range(len(stream)):
        framer.feed(stream[index : index + 1])
        events.extend(drain_by_next_frame(framer))
    assert events == [Frame(m, tp) for m in messages]


@pytest.mark.parametrize("kind", KINDS)
def test_split_at_every_position(kind: FramingKind) -> None:
    sender = Framer(kind)
    stream = sender.frame(b"abc") + sender.frame(b"") + sender.frame(b"defgh")
    expected = [Frame(b"abc"), KEEP_ALIVE, Frame(b"defgh")]
    for cut in range(len(stream) + 1):
        assert feed_in_pieces(Framer(kind), stream, [cut]) == expected, cut
        for second in range(cut, len(stream) + 1):
            assert feed_in_pieces(Framer(kind), stream, [cut, second]) == expected


messages_strategy = st.lists(
    st.one_of(st.just(b""), st.binary(min_size=1, max_size=300)), min_size=0, max_size=12
)


@given(
    kind=st.sampled_from(KINDS),
    tpdu=st.booleans(),
    messages=messages_strategy,
    data=st.data(),
)
def test_any_split_and_join_yields_the_same_events(
    kind: FramingKind, tpdu: bool, messages: list[bytes], data: st.DataObject
) -> None:
    sender = Framer(kind, tpdu=tpdu)
    tp = TPDU if tpdu else None
    stream = b"".join(sender.frame(m, tp) for m in messages)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    expected: list[Frame | KeepAlive] = [(Frame(m, tp) if m else KeepAlive(tp)) for m in messages]
    assert feed_in_pieces(Framer(kind, tpdu=tpdu), stream, cuts) == expected
    # The same through drain() and through next_frame(), fed whole.
    whole = Framer(kind, tpdu=tpdu)
    whole.feed(stream)
    assert whole.drain() == expected
    whole = Framer(kind, tpdu=tpdu)
    whole.feed(stream)
    assert drain_by_next_frame(whole) == expected


def test_keep_alives_interleaved_are_events_not_errors() -> None:
    framer = Framer()
    stream = b"\x00\x00" + framer.frame(b"a") + b"\x00\x00\x00\x00" + framer.frame(b"b")
    framer.feed(stream)
    assert events_of(framer) == [KEEP_ALIVE, Frame(b"a"), KEEP_ALIVE, KEEP_ALIVE, Frame(b"b")]
    assert framer.frame(b"") == b"\x00\x00"


def test_tpdu_round_trip_and_swap() -> None:
    framer = Framer(tpdu=True)
    framer.feed(framer.frame(b"0800payload", TPDU))
    (request,) = events_of(framer)
    assert request == Frame(b"0800payload", TPDU)
    assert request.tpdu is not None
    reply_tpdu = swap_tpdu(request.tpdu)
    assert reply_tpdu == bytes.fromhex("6000020001")
    assert swap_tpdu(reply_tpdu) == TPDU
    reply = framer.frame(b"0810", reply_tpdu)
    assert reply == b"\x00\x09" + reply_tpdu + b"0810"


def test_tpdu_only_frame_is_a_keep_alive_with_its_tpdu() -> None:
    framer = Framer("ascii4", tpdu=True)
    framer.feed(b"0005" + TPDU + b"0000")
    assert events_of(framer) == [KeepAlive(TPDU), KEEP_ALIVE]


def test_tpdu_listener_rejects_frames_shorter_than_a_tpdu() -> None:
    framer = Framer(tpdu=True)
    framer.feed(b"\x00\x03abc")
    with pytest.raises(FrameTooShort) as info:
        framer.next_frame()
    assert isinstance(info.value, RemoteProtocolError)
    assert info.value.tpdu_bytes == TPDU_BYTES


def test_tpdu_must_match_the_listener_when_sending() -> None:
    with pytest.raises(LocalProtocolError):
        Framer(tpdu=True).frame(b"0810")
    with pytest.raises(LocalProtocolError):
        Framer(tpdu=True).frame(b"0810", b"\x60\x00")
    with pytest.raises(LocalProtocolError):
        Framer().frame(b"0810", TPDU)
    with pytest.raises(LocalProtocolError):
        swap_tpdu(b"\x60")


def test_frame_repr_never_shows_the_message() -> None:
    text = repr(Frame(b"0200" + PAN, TPDU)) + str(Frame(PAN))
    assert PAN.decode() not in text
    assert "bytes" in text


# -- limits and bad headers ----------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_oversize_frame_is_refused_from_its_header_alone(kind: FramingKind) -> None:
    framer = Framer(kind, max_frame_bytes=100)
    header = Framer(kind, max_frame_bytes=9999).frame(b"x" * 101)[:-101]
    framer.feed(header)  # the header only: nothing of the body was sent
    with pytest.raises(FrameTooLarge) as info:
        framer.next_frame()
    assert info.value.length_bytes == 101
    assert info.value.max_frame_bytes == 100
    assert isinstance(info.value, RemoteProtocolError)
    # The framer stays failed: the connection must be closed.
    with pytest.raises(FrameTooLarge):
        framer.next_frame()
    with pytest.raises(FrameTooLarge):
        framer.feed(b"more")


def test_frame_of_exactly_the_maximum_is_accepted() -> None:
    framer = Framer(max_frame_bytes=100)
    framer.feed(framer.frame(b"y" * 100))
    assert events_of(framer) == [Frame(b"y" * 100)]


def test_default_maximum_is_8_kib() -> None:
    framer = Framer()
    framer.feed(b"\x20\x01")  # 8193
    with pytest.raises(FrameTooLarge):
        list(framer.events())
    framer = Framer()
    framer.feed(b"\x20\x00")  # 8192: waits for the body
    assert framer.drain() == []


def test_good_frames_before_a_bad_header_are_delivered_first() -> None:
    framer = Framer(max_frame_bytes=100)
    framer.feed(framer.frame(b"ok1") + framer.frame(b"ok2") + b"\xff\xff")
    iterator = framer.events()
    assert next(iterator) == Frame(b"ok1")
    assert next(iterator) == Frame(b"ok2")
    with pytest.raises(FrameTooLarge):
        next(iterator)
    # drain(): the good frames now, the error on the next call.
    framer = Framer("bcd2", max_frame_bytes=100)
    framer.feed(framer.frame(b"ok") + b"\xaa\x00")
    assert framer.drain() == [Frame(b"ok")]
    with pytest.raises(BadLengthHeader):
        framer.drain()


@pytest.mark.parametrize(
    ("kind", "header"),
    [
        (FramingKind.BCD2, b"\x0a\x00"),
        (FramingKind.BCD2, b"\x00\xf1"),
        (FramingKind.ASCII4, b"00a1"),
        (FramingKind.ASCII4, b" 123"),
        (FramingKind.ASCII4, b"+123"),
        (FramingKind.ASCII4, b"1_23"),
    ],
)
def test_bad_length_headers(kind: FramingKind, header: bytes) -> None:
    framer = Framer(kind)
    framer.feed(header + b"body")
    with pytest.raises(BadLengthHeader) as info:
        list(framer.events())
    assert isinstance(info.value, RemoteProtocolError)
    assert info.value.kind == kind.value
    assert repr(header) not in str(info.value)


@given(st.binary(min_size=4, max_size=4))
def test_any_ascii4_header_is_a_length_or_a_bad_header(header: bytes) -> None:
    framer = Framer("ascii4", max_frame_bytes=9999)
    framer.feed(header)
    if header.isdigit():
        assert framer.next_frame() in (NEED_DATA, KEEP_ALIVE)
    else:
        with pytest.raises(BadLengthHeader):
            framer.next_frame()


def test_errors_carry_no_content() -> None:
    framer = Framer(max_frame_bytes=64)
    framer.feed(framer.frame(PAN * 4) + b"\x7f\xff" + PAN)
    with pytest.raises(FrameTooLarge) as info:
        list(framer.events())
    assert PAN.decode() not in str(info.value) + repr(info.value)
    assert not any(isinstance(arg, bytes) for arg in info.value.args)


def test_outgoing_message_too_large_is_our_fault() -> None:
    framer = Framer(max_frame_bytes=100)
    with pytest.raises(MessageTooLarge) as info:
        framer.frame(b"z" * 101)
    assert isinstance(info.value, LocalProtocolError)
    with pytest.raises(MessageTooLarge):
        Framer(tpdu=True, max_frame_bytes=100).frame(b"z" * 96, TPDU)


def test_buffer_is_bounded_for_a_caller_that_never_drains() -> None:
    framer = Framer(max_frame_bytes=100, max_buffer_bytes=210)
    framer.feed(framer.frame(b"a" * 100) * 2)
    with pytest.raises(BufferOverflow) as info:
        framer.feed(b"\x00\x05hello")
    assert isinstance(info.value, LocalProtocolError)
    # Draining frees the space again.
    assert len(framer.drain()) == 2
    framer.feed(b"\x00\x05hello")
    assert framer.drain() == [Frame(b"hello")]


def test_default_buffer_bound_fits_a_partial_frame_plus_a_receive_chunk() -> None:
    framer = Framer()
    framer.feed(b"\x20\x00" + b"p" * 8000)  # a partial maximal frame
    framer.feed(b"p" * 192 + b"\x00\x00" * 32000)  # then a full chunk
    events = framer.drain()
    assert events[0] == Frame(b"p" * 8192)
    assert len(events) == 32001


@pytest.mark.parametrize(
    ("kind", "max_frame_bytes"),
    [("binary2", 65536), ("bcd2", 10000), ("ascii4", 10000), ("binary2", 10)],
)
def test_impossible_limits_are_configuration_errors(kind: str, max_frame_bytes: int) -> None:
    with pytest.raises(ValueError, match="max_frame_bytes"):
        Framer(kind, max_frame_bytes=max_frame_bytes)


def test_buffer_bound_must_hold_a_frame() -> None:
    with pytest.raises(ValueError, match="max_buffer_bytes"):
        Framer(max_frame_bytes=100, max_buffer_bytes=50)


def test_bad_kind_is_a_configuration_error() -> None:
    with pytest.raises(ValueError):
        Framer("binary4")


def test_large_frames_fed_in_small_chunks_are_reassembled() -> None:
    framer = Framer(max_frame_bytes=65535)
    messages = [bytes([n]) * 60000 for n in range(3)]
    stream = b"".join(framer.frame(m) for m in messages)
    events: list[Frame | KeepAlive] = []
    for start in range(0, len(stream), 4096):
        framer.feed(stream[start : start + 4096])
        events.extend(framer.drain())
    assert events == [Frame(m) for m in messages]


def test_feeding_memoryview_and_bytearray() -> None:
    framer = Framer()
    framed = framer.frame(b"hello")
    framer.feed(memoryview(framed)[:3])
    framer.feed(bytearray(framed[3:]))
    assert framer.drain() == [Frame(b"hello")]


def test_protocol_package_does_not_import_trio() -> None:
    code = (
        "import sys, iso_switch.protocol, iso_switch.protocol.framing, "
        "iso_switch.protocol.session; assert 'trio' not in sys.modules, 'trio imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
