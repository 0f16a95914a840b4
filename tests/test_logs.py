"""Logging: whatever is logged, no PAN, track data, PIN block or key comes out.

Each test configures logging onto a StringIO and logs values that hold
secrets in every shape we can think of (by name, by content, nested, as
bytes, as ints, in exception messages and in exception locals).
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from iso_switch.logs import (
    REDACTED,
    TRANSACTION_EVENT,
    BatchedStream,
    configure_logging,
    flush_logs,
    mask_event_dict,
    mask_value,
    transaction_line,
)
from tests.log_helpers import reset_logging

PAN = "4761739001010010"
PAN19 = "6222020000000015123"
TRACK2 = PAN + "=28121010000012300000"
KEY_HEX = "0123456789ABCDEFFEDCBA9876543210"
PIN_BLOCK_HEX = "041274EDCBA9876F"
SECRETS = (PAN, PAN19, TRACK2, KEY_HEX, PIN_BLOCK_HEX, PAN[6:12] + PAN[12:])


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    yield
    reset_logging()
    root.setLevel(level)


def capture(fmt: str = "json", level: str = "debug") -> tuple[io.StringIO, Any]:
    stream = io.StringIO()
    configure_logging(fmt, level, stream, cache_loggers=False)  # type: ignore[arg-type]
    return stream, structlog.get_logger("test")


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def assert_clean(text: str) -> None:
    for secret in (PAN, PAN19, TRACK2, KEY_HEX, PIN_BLOCK_HEX):
        assert secret not in text, secret
    assert "=28121010000012300000" not in text


def test_json_lines_by_default() -> None:
    stream, log = capture()
    log.info("started", listener="ascii87-hex", port=8583)
    (line,) = lines(stream)
    assert line["event"] == "started"
    assert line["level"] == "info"
    assert line["port"] == 8583
    assert line["timestamp"].endswith("Z")


def test_level_filters() -> None:
    stream, log = capture(level="warning")
    log.info("quiet")
    log.warning("loud")
    assert [line["event"] for line in lines(stream)] == ["loud"]


def test_bad_format_or_level_is_refused() -> None:
    with pytest.raises(ValueError, match="format"):
        configure_logging("xml", "info", io.StringIO())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="level"):
        configure_logging("json", "chatty", io.StringIO())


def test_secrets_by_name_are_redacted_at_any_depth_and_any_spelling() -> None:
    stream, log = capture()
    log.info(
        "request",
        pin_block=PIN_BLOCK_HEX,
        PIN=PIN_BLOCK_HEX,
        pinBlock=PIN_BLOCK_HEX,
        key=KEY_HEX,
        mac_key=KEY_HEX,
        masterKey=KEY_HEX,
        bdk=KEY_HEX,
        ipek=KEY_HEX,
        mac="ABCDEF0123456789",
        track2=TRACK2,
        DE35=TRACK2,
        de52=PIN_BLOCK_HEX,
        de64="ABCDEF0123456789",
        de128="ABCDEF0123456789",
        nested={"inner": {"Master_Key": KEY_HEX, "list": [{"pin": "1234"}]}},
        fields={"2": PAN, "35": TRACK2, "52": PIN_BLOCK_HEX, "64": "AB" * 8, "4": "000000001000"},
    )
    text = stream.getvalue()
    assert_clean(text)
    assert "1234" not in text.replace("000000001000", "")
    (line,) = lines(stream)
    for name in ("pin_block", "PIN", "pinBlock", "key", "mac_key", "masterKey", "bdk", "ipek"):
        assert line[name] == REDACTED
    for name in ("mac", "track2", "DE35", "de52", "de64", "de128"):
        assert line[name] == REDACTED
    assert line["nested"]["inner"]["Master_Key"] == REDACTED
    assert line["nested"]["inner"]["list"] == [{"pin": REDACTED}]
    assert line["fields"]["2"] == "476173******0010"
    assert line["fields"]["35"] == REDACTED
    assert line["fields"]["52"] == REDACTED
    assert line["fields"]["4"] == "000000001000"  # an amount is not a secret


def test_pan_named_fields_keep_first_six_last_four() -> None:
    stream, log = capture()
    log.info("card", pan=PAN, card_pan=PAN19, de2=PAN, pan_masked="476173******0010")
    (line,) = lines(stream)
    assert line["pan"] == "476173******0010"
    assert line["card_pan"] == "622202*********5123"
    assert line["de2"] == "476173******0010"
    assert line["pan_masked"] == "476173******0010"


def test_pans_by_content_in_any_string_int_or_key() -> None:
    stream, log = capture()
    log.info(
        f"declined card {PAN}",
        note=f"customer gave {PAN19} on the phone",
        number=int(PAN),
        items=[PAN, (PAN19,), {PAN: "count"}],
        raw=PAN.encode(),
        blob=bytearray(TRACK2.encode()),
    )
    text = stream.getvalue()
    assert_clean(text)
    (line,) = lines(stream)
    assert line["event"] == "declined card 476173******0010"
    assert line["number"] == "476173******0010"
    assert line["raw"] == "<16 bytes>"
    assert line["items"][2] == {"476173******0010": "count"}


def test_short_digit_runs_numbers_and_flags_are_kept() -> None:
    stream, log = capture()
    log.info("ok", stan="000001", amount_minor=500000, rrn="123456789012", mac_ok=True, pin=None)
    (line,) = lines(stream)
    assert line["stan"] == "000001"
    assert line["amount_minor"] == 500000
    assert line["rrn"] == "123456789012"
    assert line["mac_ok"] is True
    assert line["pin"] is None


def test_bound_and_context_values_are_masked_too() -> None:
    stream, log = capture()
    structlog.contextvars.bind_contextvars(track2=TRACK2, peer="127.0.0.1")
    try:
        log.bind(card=PAN).info("bound")
    finally:
        structlog.contextvars.clear_contextvars()
    assert_clean(stream.getvalue())


class Holder:
    def __repr__(self) -> str:
        return f"Holder(pan={PAN})"


def test_arbitrary_objects_are_shown_by_masked_repr() -> None:
    stream, log = capture()
    log.info("obj", holder=Holder(), error=ValueError(f"card {PAN}"))
    assert_clean(stream.getvalue())
    (line,) = lines(stream)
    assert line["error"] == "ValueError: card 476173******0010"


def _fail_with_secrets_in_frame() -> None:
    pan = PAN
    track2 = TRACK2  # noqa: F841
    key = bytes.fromhex(KEY_HEX)  # noqa: F841
    pin_block = PIN_BLOCK_HEX  # noqa: F841
    raise RuntimeError(f"could not route {pan}")  # the other variables are the point


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_exception_tracebacks_hide_frame_variables_and_mask_messages(fmt: str) -> None:
    stream, log = capture(fmt)
    try:
        _fail_with_secrets_in_frame()
    except RuntimeError:
        log.exception("failed", pan=PAN)
    try:
        _fail_with_secrets_in_frame()
    except RuntimeError as error:
        log.error("failed again", exc_info=error)
    text = stream.getvalue()
    assert_clean(text)
    assert "could not route 476173******0010" in text
    assert "_fail_with_secrets_in_frame" in text
    assert bytes.fromhex(KEY_HEX).hex() not in text.lower()
    assert "locals" not in text  # neither a JSON "locals" key nor a rich locals panel


def test_exception_chain_is_masked() -> None:
    stream, log = capture()
    try:
        try:
            raise KeyError(PAN)
        except KeyError as inner:
            raise ValueError(f"outer {TRACK2}") from inner
    except ValueError:
        log.exception("chained")
    assert_clean(stream.getvalue())


def test_stack_info_is_masked() -> None:
    stream, log = capture()
    secret_variable_name_with_pan_4761739001010010 = 1  # appears in the source line
    log.info("here", stack_info=True, n=secret_variable_name_with_pan_4761739001010010)
    assert PAN not in stream.getvalue()


def test_stdlib_logging_goes_through_the_same_masking() -> None:
    stream, _ = capture()
    logging.getLogger("somelib").warning("card %s pin %s", PAN, PIN_BLOCK_HEX)
    try:
        _fail_with_secrets_in_frame()
    except RuntimeError:
        logging.getLogger("somelib").exception("lib failed")
    text = stream.getvalue()
    assert PAN not in text
    assert "476173******0010" in text
    assert "could not route 476173******0010" in text


def test_batched_lines_wait_for_flush_and_keep_their_order() -> None:
    stream = io.StringIO()
    configure_logging("json", "debug", stream, cache_loggers=False, batched=True)
    log = structlog.get_logger("test")
    log.info("first", pan=PAN)
    logging.getLogger("somelib").warning("second %s", PAN)
    transaction_line(log, mti="0200", stan="000001", terminal="TERM0001",
                     processing_code="000000", amount_minor=1, pan_masked=PAN, rc="00",
                     latency_ms=1.0)
    assert stream.getvalue() == ""  # held: one write per flush
    flush_logs()
    events = [line["event"] for line in lines(stream)]
    assert events == ["first", "second 476173******0010", TRANSACTION_EVENT]
    assert_clean(stream.getvalue())
    flush_logs()  # nothing held: nothing written twice
    assert len(lines(stream)) == 3


def test_batched_stream_writes_out_past_its_bound() -> None:
    output = io.StringIO()
    batched = BatchedStream(output, max_chars=100)
    batched.write("a" * 60)
    batched.flush()  # a logger's per-line flush holds on
    assert output.getvalue() == ""
    batched.write("b" * 60)  # 120 held > 100: written at once
    assert output.getvalue() == "a" * 60 + "b" * 60


def test_reconfiguring_writes_out_what_was_held() -> None:
    first = io.StringIO()
    configure_logging("json", "debug", first, cache_loggers=False, batched=True)
    structlog.get_logger("test").info("held")
    second = io.StringIO()
    configure_logging("json", "debug", second, cache_loggers=False)
    assert [line["event"] for line in lines(first)] == ["held"]
    structlog.get_logger("test").info("direct")  # unbatched: written at once
    assert [line["event"] for line in lines(second)] == ["direct"]


def test_console_format_is_masked() -> None:
    stream, log = capture("console")
    log.info("card", pan=PAN, key=KEY_HEX, note=f"saw {PAN19}")
    text = stream.getvalue()
    assert_clean(text)
    assert "476173******0010" in text


def test_transaction_line_has_the_canonical_fields() -> None:
    stream, log = capture()
    transaction_line(
        log,
        mti="0200",
        stan="000123",
        terminal="TERM0001",
        processing_code="000000",
        amount_minor=12345,
        pan_masked=PAN,  # a clear PAN passed by mistake is still masked
        rc="00",
        latency_ms=1.23456789,
        listener="ascii87-hex",
        pin_block=PIN_BLOCK_HEX,
    )
    (line,) = lines(stream)
    assert line["event"] == TRANSACTION_EVENT == "transaction"
    assert line["level"] == "info"
    expected = {
        "mti": "0200",
        "stan": "000123",
        "terminal": "TERM0001",
        "processing_code": "000000",
        "amount_minor": 12345,
        "pan_masked": "476173******0010",
        "rc": "00",
        "latency_ms": 1.235,
        "listener": "ascii87-hex",
        "pin_block": REDACTED,
    }
    assert {key: line[key] for key in expected} == expected


def test_transaction_line_without_a_card() -> None:
    stream, log = capture()
    transaction_line(
        log,
        mti="0800",
        stan="000001",
        terminal=None,
        processing_code=None,
        amount_minor=None,
        pan_masked=None,
        rc="00",
        latency_ms=0.1,
    )
    (line,) = lines(stream)
    assert line["pan_masked"] is None


def test_masking_never_mutates_its_input_and_bounds_depth() -> None:
    event: dict[str, Any] = {"event": "x", "pan": PAN, "deep": {}}
    node = event["deep"]
    for _ in range(20):
        node["next"] = {}
        node = node["next"]
    node["leaf"] = PAN
    masked = mask_event_dict(None, "info", event)
    assert event["pan"] == PAN
    assert PAN not in json.dumps(masked)


@given(
    st.recursive(
        st.one_of(
            st.text(alphabet="0123456789 =-abcD", max_size=40),
            st.integers(),
            st.binary(max_size=20),
            st.none(),
            st.booleans(),
        ),
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(
                st.text(alphabet="0123456789abcpnkey_", max_size=8), children, max_size=4
            ),
        ),
        max_leaves=20,
    )
)
def test_no_run_of_13_or_more_digits_survives(value: Any) -> None:
    text = json.dumps(mask_value({"value": value}), default=str)
    digits = "".join(ch if ch.isdigit() else " " for ch in text)
    assert all(len(run) < 13 or len(run) > 19 for run in digits.split())


def test_logs_package_does_not_import_trio() -> None:
    code = "import sys, iso_switch.logs; assert 'trio' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
