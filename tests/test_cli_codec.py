"""``iso-switch decode`` / ``encode``: what they print, and what they never print."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from iso_switch.cli import main
from iso_switch.cli.codec_cmd import mask_track1
from iso_switch.codec import Codec, Tlv, build_de55, load_spec

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "specs" / "samples" / "purchase-0200.hex"
DEMO_PAN = "4761739001010010"
DIALECTS = ("ascii87-hex", "ascii87-bin", "bcd87")


def _run(argv: list[str]) -> tuple[int, str, str]:
    """main() with stdout and stderr captured (usable inside hypothesis)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def _write(directory: str, name: str, data: bytes) -> str:
    path = Path(directory) / name
    path.write_bytes(data)
    return str(path)


# ---------------------------------------------------------------- the sample


def test_sample_decodes_masked(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", "--hex", str(SAMPLE)]) == 0
    out = capsys.readouterr().out
    assert DEMO_PAN not in out
    assert "DE  2  Primary Account Number (PAN)  476173******0010" in out
    assert "MTI           0200" in out
    for text in ("000000001234", "TERM0001", "MERCHANT0000001", " 156"):
        assert text in out
    assert "9F02      Amount, Authorised" in out
    assert "<8 bytes>" in out  # the cryptogram


def test_sample_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", "--hex", "--json", str(SAMPLE)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["t"] == "0200"
    assert shown["2"] == "476173******0010"
    assert shown["41"] == "TERM0001"
    assert shown["55"][0] == {"tag": "9F02", "name": "Amount, Authorised", "length": 6,
                              "value": "000000001234"}


def test_installed_command_decodes_the_sample() -> None:
    command = Path(sys.executable).parent / "iso-switch"
    result = subprocess.run(
        [str(command), "decode", "--hex", str(SAMPLE)],
        capture_output=True, text=True, check=False, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "476173******0010" in result.stdout
    assert DEMO_PAN not in result.stdout + result.stderr


# ---------------------------------------------------------------- never in clear


def _sensitive_message(dialect: str, pan: str, discretionary: str, secret: bytes) -> dict[str, str]:
    separator = "D" if dialect == "bcd87" else "="
    track = f"{pan}D2812201{discretionary}"
    pin_block = secret.hex().upper()
    mac = secret[::-1].hex().upper()
    icc = build_de55([
        Tlv("9F02", bytes.fromhex("000000001234")),
        Tlv("5A", bytes.fromhex(pan + "F" * (len(pan) % 2))),
        Tlv("57", bytes.fromhex(track + "F" * (len(track) % 2))),
        Tlv("9F10", secret),
        Tlv.template("70", [Tlv("5F20", b"DOE/JOHN")]),
    ])
    fields = {
        "t": "0200", "2": pan, "3": "000000", "4": "000000001234",
        "35": f"{pan}{separator}2812201{discretionary}",
        "52": pin_block, "55": icc, "64": mac, "128": mac,
    }
    if dialect != "bcd87":
        fields["45"] = f"B{pan}^DOE/JOHN^2812201{discretionary}"
        fields["96"] = pin_block
    return fields


def _varied_digits(low: int, high: int) -> st.SearchStrategy[str]:
    """Digit strings too varied to turn up in the output by chance."""
    return st.text(alphabet="0123456789", min_size=low, max_size=high).filter(
        lambda s: len(set(s)) >= 5
    )


# Each example runs the whole CLI three times: fewer examples than the profile.
@pytest.mark.parametrize("dialect", DIALECTS)
@settings(max_examples=max(10, settings().max_examples // 8))
@given(
    pan=_varied_digits(13, 19),
    discretionary=_varied_digits(8, 10),  # track 2 holds at most 37 characters
    secret=st.binary(min_size=8, max_size=8).filter(lambda b: len(set(b)) > 5),
)
def test_decode_never_prints_pan_track_pin_block_or_mac(
    dialect: str, pan: str, discretionary: str, secret: bytes
) -> None:
    fields = _sensitive_message(dialect, pan, discretionary, secret)
    codec = Codec(load_spec(dialect))
    raw = codec.encode(fields)
    forbidden = [pan, discretionary, secret.hex().upper(), secret[::-1].hex().upper(),
                 "DOE/JOHN", "444F452F4A4F484E"]
    # What may be shown; a secret equal to a part of it proves nothing.
    decoded = codec.decode(raw)
    public = " ".join(decoded[key] for key in ("t", "p", "1", "3", "4"))
    assume(not any(text in public for text in forbidden))
    with tempfile.TemporaryDirectory() as directory:
        raw_path = _write(directory, "m.bin", raw)
        hex_path = _write(directory, "m.hex", raw.hex().encode())
        for argv in (["decode", "--spec", dialect, raw_path],
                     ["decode", "--spec", dialect, "--json", raw_path],
                     ["decode", "--spec", dialect, "--hex", hex_path]):
            code, out, err = _run(argv)
            assert code == 0, err
            for text in forbidden:
                assert text not in out.upper()
            assert pan[:6] + "*" * (len(pan) - 10) + pan[-4:] in out


def test_mask_track1() -> None:
    assert mask_track1(f"B{DEMO_PAN}^DOE/JOHN^2812") == "B476173******0010^" + "*" * 13
    assert mask_track1(f"{DEMO_PAN}") == "*" * len(DEMO_PAN)


def test_unparseable_icc_and_subfields_are_masked(capsys: pytest.CaptureFixture[str]) -> None:
    fields = {"t": "0200", "54": DEMO_PAN + "XXXX", "55": "5A08" + DEMO_PAN + "00",
              "95": "ABC" + DEMO_PAN + "0" * 23, "48": f"note {DEMO_PAN} end"}
    raw = Codec(load_spec("ascii87-hex")).encode(fields)
    with tempfile.TemporaryDirectory() as directory:
        assert main(["decode", _write(directory, "m.bin", raw)]) == 0
        out = capsys.readouterr().out
        assert main(["decode", "--json", _write(directory, "m.bin", raw)]) == 0
        out += capsys.readouterr().out
    assert DEMO_PAN not in out
    assert "not BER-TLV" in out
    assert "not a valid DE54" in out


def test_decode_prints_de54_and_de90_parts(capsys: pytest.CaptureFixture[str]) -> None:
    fields = {"t": "0410", "54": "0001156C000001000000" "0002156D000000000500",
              "90": "0200" "000123" "0615103000" "00000123456" "00000000000"}
    raw = Codec(load_spec("ascii87-hex")).encode(fields)
    with tempfile.TemporaryDirectory() as directory:
        assert main(["decode", _write(directory, "m.bin", raw)]) == 0
    out = capsys.readouterr().out
    assert "account 00  ledger     currency 156  amount_minor +1000000" in out
    assert "account 00  available  currency 156  amount_minor -500" in out
    assert "original MTI 0200  STAN 000123  DE7 0615103000" in out
    assert "acquirer 00000123456" in out


# ---------------------------------------------------------------- input and errors


def test_several_hex_messages_one_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    codec = Codec(load_spec("ascii87-hex"))
    first = codec.encode({"t": "0800", "11": "000001"}).hex()
    second = codec.encode({"t": "0810", "11": "000001", "39": "00"}).hex()
    spaced = " ".join(second[i:i + 8] for i in range(0, len(second), 8))
    text = f"# two messages\n{first}\n\n{spaced}\n"
    with tempfile.TemporaryDirectory() as directory:
        assert main(["decode", "--hex", "--json", _write(directory, "m.hex", text.encode())]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["t"] for line in lines] == ["0800", "0810"]


def test_decode_error_exits_1_without_content(capsys: pytest.CaptureFixture[str]) -> None:
    raw = Codec(load_spec("ascii87-hex")).encode({"t": "0200", "2": DEMO_PAN})
    with tempfile.TemporaryDirectory() as directory:
        assert main(["decode", _write(directory, "m.bin", raw[:-3])]) == 1
        captured = capsys.readouterr()
        assert captured.err.startswith("error: ")
        assert "field 2" in captured.err
        assert DEMO_PAN[:12] not in captured.err + captured.out
        good = raw.hex()
        text = f"{good}\n{raw[:-3].hex()}\n"
        assert main(["decode", "--hex", _write(directory, "m.hex", text.encode())]) == 1
        captured = capsys.readouterr()
        assert "476173******0010" in captured.out
        assert "message 2:" in captured.err


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"3032Z0", "not valid hex"), (b"303", "not valid hex"), (b"# only a comment\n", "no message"),
     (b"\xff\xfe", "non-ASCII")],
)
def test_bad_hex_input(data: bytes, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        assert main(["decode", "--hex", _write(directory, "m.hex", data)]) == 1
    assert message in capsys.readouterr().err


def test_unknown_spec_and_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", "--spec", "no-such-dialect", str(SAMPLE)]) == 1
    assert "no spec named" in capsys.readouterr().err
    assert main(["decode", "--hex", str(SAMPLE) + ".missing"]) == 1
    assert capsys.readouterr().err.startswith("error: ")


# ---------------------------------------------------------------- encode


@pytest.mark.parametrize("dialect", DIALECTS)
def test_encode_then_decode_round_trip(
    dialect: str, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    fields = {"t": "0200", "2": DEMO_PAN, "3": "000000", "4": "000000001234",
              "41": "TERM0001", "49": "156"}
    with tempfile.TemporaryDirectory() as directory:
        path = _write(directory, "f.json", json.dumps(fields).encode())
        assert main(["encode", "--spec", dialect, path]) == 0
        raw = capsysbinary.readouterr().out
        assert main(["encode", "--spec", dialect, "--hex", path]) == 0
        hex_text = capsysbinary.readouterr().out.decode()
    codec = Codec(load_spec(dialect))
    assert raw == codec.encode(fields)
    assert hex_text == raw.hex().upper() + "\n"
    decoded = codec.decode(raw)
    assert {k: decoded[k] for k in fields} == fields


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b'["t"]', "JSON object"),
        (b'{"t": "0200", "4": 1234}', "field 4: value must be a string"),
        (b'{"t": "0200", "2": "47617390010100100000000"}', "field 2"),
    ],
)
def test_encode_errors_exit_1(
    document: bytes, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        assert main(["encode", _write(directory, "f.json", document)]) == 1
    captured = capsys.readouterr()
    assert message in captured.err
    assert "4761739001010010" not in captured.err
    assert captured.out == ""


def test_help_mentions_the_dialects(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("decode", "encode"):
        with pytest.raises(SystemExit) as done:
            main([command, "--help"])
        assert done.value.code == 0
        out = capsys.readouterr().out
        for dialect in DIALECTS:
            assert dialect in out
        assert "--spec" in out and "--hex" in out
