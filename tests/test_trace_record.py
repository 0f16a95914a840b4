"""Trace recording: the format, sealing and masking (sans-I/O), the
recorder's buffering, and a real switch recording its frames.

A trace must never hold a PAN, track data or a PIN block in clear, and its
sealed fields must open again with the key store's trace key (that is what
replay relies on).
"""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from iso_switch.bootstrap import build_hsm
from iso_switch.cli import build_parser
from iso_switch.codec import Codec, load_spec
from iso_switch.security.keystore import KeyStore, MasterKey
from iso_switch.server.trace import TraceRecorder, open_trace
from iso_switch.trace import (
    PROTECTED_FIELDS,
    FieldSealer,
    Frame,
    TraceEntry,
    TraceError,
    TraceGap,
    TraceHeader,
    mask_value,
    message_line,
    parse_lines,
    protect,
    read_trace,
    sealer_from_store,
    trace_key,
)
from tests.server_helpers import (
    CARD_RICH,
    Terminal,
    connect,
    make_config,
    start_switch,
)

KEY = bytes(range(32))
TRACK2 = CARD_RICH + "=2812101123456789"


# -- sans-I/O --------------------------------------------------------------------


@given(field_id=st.sampled_from(sorted(PROTECTED_FIELDS)), value=st.text(max_size=200))
def test_sealed_field_opens_back_only_as_the_same_field_of_the_same_trace(field_id, value):
    sealer = FieldSealer(KEY, "0011223344556677")
    token = sealer.seal(field_id, value)
    assert sealer.open(field_id, token) == value
    assert sealer.seal(field_id, value) != token  # a fresh nonce every time
    with pytest.raises(TraceError):
        sealer.open(field_id + "0", token)
    with pytest.raises(TraceError):
        sealer.for_trace("8899aabbccddeeff").open(field_id, token)
    with pytest.raises(TraceError):
        FieldSealer(bytes(32), "0011223344556677").open(field_id, token)


@given(pan=st.from_regex(r"[1-9][0-9]{15,18}", fullmatch=True),
       pin_block=st.binary(min_size=8, max_size=8), masked=st.booleans(),
       dialect=st.sampled_from(["ascii87-hex", "ascii87-bin"]))
def test_no_line_holds_a_pan_track_or_pin_block(pan, pin_block, masked, dialect):
    codec = Codec(load_spec(dialect))
    track2 = pan + "=2812101123456789"
    raw = codec.encode({"t": "0200", "2": pan, "3": "000000", "4": "000000001000",
                        "35": track2, "52": pin_block.hex().upper(), "102": pan[::-1]})
    sealer = None if masked else FieldSealer(KEY, "0011223344556677")
    line = message_line("0011223344556677", datetime.now(UTC),
                        Frame(0.0, 1, 1, dialect, dialect, "in", raw), codec, sealer)
    for secret in (pan, track2, pin_block.hex().upper(), pan[::-1], "2812101123456789"):
        assert secret not in line


def test_sealer_repr_and_errors_show_no_key_or_value():
    sealer = FieldSealer(KEY, "0011223344556677")
    assert KEY.hex() not in repr(sealer).lower()
    token = sealer.seal("2", CARD_RICH)
    with pytest.raises(TraceError) as caught:
        sealer.open("35", token)
    assert CARD_RICH not in str(caught.value) and token not in str(caught.value)


def test_masking_keeps_six_and_four_of_a_pan_and_nothing_of_secrets():
    assert mask_value("2", CARD_RICH) == "476173******0010"
    assert mask_value("102", "6222020000000015") == "622202******0015"
    assert mask_value("35", TRACK2).startswith("476173******0010=")
    assert "2812" not in mask_value("35", TRACK2)
    assert mask_value("52", "0123456789ABCDEF") == "*" * 16
    assert mask_value("14", "2812") == "****"


def test_protect_seals_or_masks_exactly_the_protected_fields():
    fields = {"t": "0200", "2": CARD_RICH, "4": "000000001000", "35": TRACK2,
              "52": "0123456789ABCDEF", "62": "FFFF9876543210E00001", "64": "00" * 8}
    sealed = protect(fields, FieldSealer(KEY, "0011223344556677"))
    assert set(sealed.sealed) == {"2", "35", "52"}
    assert sealed.clear == {"t": "0200", "4": "000000001000", "62": "FFFF9876543210E00001",
                            "64": "00" * 8}
    masked = protect(fields, None)
    assert masked.sealed == {}
    assert set(masked.masked) == {"2", "35", "52"}
    assert masked.clear["2"] == "476173******0010"


def test_a_malformed_line_is_named_by_number_never_by_content():
    lines = ['{"kind":"gap","trace":"00","dropped":1}', '{"kind":"message","pan":"'
             + CARD_RICH + '"']
    with pytest.raises(TraceError) as caught:
        list(parse_lines(lines))
    assert "line 2" in str(caught.value)
    assert CARD_RICH not in str(caught.value)


def test_the_trace_key_must_exist_unless_the_trace_is_masked(tmp_path):
    store = KeyStore(None, MasterKey(bytes(32), "test"))
    with pytest.raises(TraceError, match="keys generate"):
        trace_key(store)
    config = make_config(tmp_path, trace__enabled=True)
    with pytest.raises(TraceError):
        open_trace(config, store)
    assert open_trace(make_config(tmp_path, trace__enabled=True, trace__masked=True),
                      store) is not None
    assert open_trace(make_config(tmp_path), store) is None  # off by default
    store.generate("trace", "D0", "A", 32, "B")
    assert trace_key(store)[0] == "trace"


async def test_a_full_buffer_drops_frames_and_says_so(tmp_path):
    path = tmp_path / "t.jsonl"
    recorder = TraceRecorder(path, sealer=None, buffer_lines_max=2, flush_interval_s=10)
    async with trio.open_nursery() as nursery:
        await nursery.start(recorder.run)
        for _ in range(5):
            recorder.record_in(1, "ascii87-hex", "ascii87-hex", b"not a message")
        recorder.close()
    items = read_trace(path)
    assert isinstance(items[0], TraceHeader)
    assert next(i for i in items if isinstance(i, TraceGap)).dropped == 3
    entries = [i for i in items if isinstance(i, TraceEntry)]
    assert [e.error for e in entries] == ["undecodable", "undecodable"]
    assert recorder.dropped_total == 3 and recorder.written_total == 2


def test_serve_has_the_trace_flags():
    parser = build_parser()
    args = parser.parse_args(["serve", "--trace", "t.jsonl", "--trace-masked"])
    assert args.trace == Path("t.jsonl") and args.trace_masked


# -- a real switch -----------------------------------------------------------------


async def _record_some(tmp_path: Path, **overrides: object) -> tuple[Path, list[dict[str, str]]]:
    """Echo, a purchase with PIN and MAC, a balance inquiry, a track 2
    purchase on the MAC-less terminal; returns the trace path and the
    requests as sent."""
    sent: list[dict[str, str]] = []
    async with trio.open_nursery() as nursery:
        running = await start_switch(nursery, tmp_path, trace__enabled=True,
                                     trace__path="trace.jsonl", **overrides)
        async with connect(running) as client:
            terminal = Terminal("TERM0001")
            plain = Terminal("TERM0003")
            for sealed in (
                terminal.seal(client.codec, terminal.network("301")),
                terminal.seal(client.codec, terminal.financial(amount=1234), pin="1234",
                              mac=True),
                terminal.seal(client.codec, terminal.financial(code="300000", amount=0),
                              pin="1234", mac=True),
                plain.seal(client.codec, {k: v for k, v in plain.financial().items()
                                          if k != "2"} | {"35": TRACK2}),
            ):
                response = await client.call(sealed)
                assert response["39"] == "00"
                sent.append(sealed.fields)
        running.switch.shutdown()
    return tmp_path / "trace.jsonl", sent


async def test_recording_holds_every_frame_and_no_cardholder_data_in_clear(tmp_path):
    path, sent = await _record_some(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert CARD_RICH not in text and TRACK2 not in text and "=2812" not in text
    for fields in sent:
        if "52" in fields:
            assert fields["52"] not in text
    items = read_trace(path)
    header = items[0]
    assert isinstance(header, TraceHeader) and not header.masked
    entries = [i for i in items if isinstance(i, TraceEntry)]
    assert [(e.direction, e.fields["t"]) for e in entries] == [
        ("in", "0800"), ("out", "0810"), ("in", "0200"), ("out", "0210"),
        ("in", "0200"), ("out", "0210"), ("in", "0200"), ("out", "0210")]
    assert {e.conn for e in entries} == {1}
    ins = [e for e in entries if e.direction == "in"]
    outs = [e for e in entries if e.direction == "out"]
    assert [e.seq for e in ins] == [e.seq for e in outs] == [1, 2, 3, 4]
    assert all(e.listener == e.dialect == "ascii87-hex" for e in entries)
    hsm = build_hsm(make_config(tmp_path))
    sealer, _name, kcv = sealer_from_store(hsm.key_store)
    assert header.key_kcv == kcv
    for entry, fields in zip(ins, sent, strict=True):
        restored = entry.restored(sealer)
        assert {k: v for k, v in restored.items() if k not in ("p", "1")} == fields
    assert outs[2].fields["54"]  # balances stay readable
    assert outs[1].restored(sealer)["2"] == CARD_RICH
    first = json.loads(text.splitlines()[1])
    assert {"time", "at_s", "conn", "listener", "dir", "dialect", "msg"} <= set(first)


async def test_masked_recording_keeps_six_and_four_and_nothing_to_open(tmp_path):
    path, _sent = await _record_some(tmp_path, trace__masked=True)
    text = path.read_text()
    assert CARD_RICH not in text and "=2812" not in text
    assert "476173******0010" in text
    items = read_trace(path)
    assert isinstance(items[0], TraceHeader) and items[0].masked
    entries = [i for i in items if isinstance(i, TraceEntry)]
    assert all(not e.sealed for e in entries)
    purchase = entries[2]
    assert set(purchase.masked) == {"2", "52"}
    assert purchase.fields["52"] == "*" * 16


async def test_tracing_is_off_by_default(tmp_path):
    async with trio.open_nursery() as nursery:
        running = await start_switch(nursery, tmp_path)
        assert running.switch.trace is None
        running.switch.shutdown()
    assert not (tmp_path / "trace.jsonl").exists()


def test_an_unwritable_trace_path_fails_at_startup_with_a_reason(tmp_path):
    (tmp_path / "file").write_text("")
    config = make_config(tmp_path, trace__enabled=True, trace__masked=True,
                         trace__path=str(tmp_path / "file" / "trace.jsonl"))
    with pytest.raises(TraceError, match="cannot write the trace"):
        open_trace(config, None)
