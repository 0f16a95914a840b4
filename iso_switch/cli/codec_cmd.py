"""``iso-switch decode`` and ``iso-switch encode``: look inside messages.

What a person sees is masked by construction: every value goes through
``masked_fields`` before it is printed, whatever the output format. PANs show
first 6 + last 4, track data only its masked PAN, and PIN blocks, MACs and
ICC values are never shown. Errors come from ``CodecError``, whose message
names a field and an offset and never carries field content.
"""

from __future__ import annotations

import argparse
import binascii
import json
import sys
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

from iso_switch.codec import Codec, CodecError, SpecError, load_spec
from iso_switch.codec.masking import MASK_CHAR, mask_pan, mask_pans_in_text, mask_track2
from iso_switch.codec.subfields import (
    AMOUNT_DIGITS,
    SubfieldError,
    parse_de54,
    parse_de90,
    parse_de95,
)
from iso_switch.codec.tlv import Tlv, TlvError, display_value, parse_de55, tag_name

DEFAULT_SPEC = "ascii87-hex"
# Input larger than this is refused before parsing (a message is at most
# 64 KiB; a file of many hex messages a few MiB).
MAX_INPUT_BYTES = 16 * 1024 * 1024
_DIALECTS_HELP = (
    "Dialects shipped in specs/: ascii87-hex (all ASCII, hex bitmaps, PIN and MAC; "
    "listener 8583), ascii87-bin (ASCII fields, binary bitmaps, PIN, MAC and ICC data; "
    "listener 8584), bcd87 (packed-BCD POS dialect). --spec also takes a path to a "
    "pyiso8583-style JSON spec."
)
# Fields whose content is never displayed, only its length.
HIDDEN_FIELDS: frozenset[str] = frozenset({"36", "52", "64", "96", "128"})
PAN_FIELD = "2"
TRACK2_FIELD = "35"
TRACK1_FIELD = "45"
ICC_FIELD = "55"
_TRACK1_SEPARATOR = "^"
# Fields printed as they are: the MTI and bitmaps (checked by the codec).
_PLAIN_FIELDS: frozenset[str] = frozenset({"t", "p", "1"})
# Fields printed as they are when they parse (digits in fixed positions, which
# PAN masking would garble); hidden when they do not.
_SUBFIELD_PARSERS: dict[str, Callable[[str], object]] = {
    "54": parse_de54, "90": parse_de90, "95": parse_de95,
}
# Any run of this many digits or more could be a PAN, even inside a longer run.
_INDENT = 7
_TAG_WIDTH = 8
_TAG_NAME_WIDTH = 36


class InputError(ValueError):
    """The input file is not what the options say (bad hex, not JSON, ...)."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    decode = subparsers.add_parser(
        "decode",
        help="decode ISO 8583 messages and print them masked",
        description="Decode one ISO 8583 message (or several, one hex message per line "
        "with --hex) and print the MTI, bitmaps and every field with its description. "
        "PANs are masked to first 6 + last 4; track data, PIN blocks, MACs and ICC "
        "(DE55) values are never shown. DE55 is printed as a BER-TLV tree, DE54 as its "
        "balances and DE90 as its parts. " + _DIALECTS_HELP,
    )
    _spec_argument(decode)
    decode.add_argument(
        "--hex", action="store_true",
        help="the input is hex text (whitespace ignored; several messages: one per line, "
        "lines starting with # are comments) instead of raw bytes",
    )
    decode.add_argument("--json", action="store_true",
                        help="print each message as a JSON object of masked field values, "
                        "one per line")
    decode.add_argument("file", nargs="?", default="-",
                        help="file to read, or - for standard input (default)")
    decode.set_defaults(func=_decode)

    encode = subparsers.add_parser(
        "encode",
        help="encode a JSON object of fields into an ISO 8583 message",
        description="Read a JSON object mapping field keys (\"t\" for the MTI, \"2\", "
        "\"3\", ...; bitmaps are computed) to string values, encode it and write the "
        "raw message to standard output (or hex with --hex). Binary fields are given "
        "as hex. " + _DIALECTS_HELP,
    )
    _spec_argument(encode)
    encode.add_argument("--hex", action="store_true",
                        help="write the message as one line of hex instead of raw bytes")
    encode.add_argument("file", nargs="?", default="-",
                        help="JSON file to read, or - for standard input (default)")
    encode.set_defaults(func=_encode)


def _spec_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--spec", default=DEFAULT_SPEC, metavar="NAME|PATH",
        help=f"dialect name or JSON spec file (default {DEFAULT_SPEC})",
    )


# ---------------------------------------------------------------- masking


def masked_fields(fields: Mapping[str, str]) -> dict[str, Any]:
    """The decoded fields as they may be shown to a person.

    DE55 becomes a list of TLV items (see ``masked_icc``); every other value a
    masked string.
    """
    result: dict[str, Any] = {}
    for key, value in fields.items():
        if key == ICC_FIELD:
            result[key] = masked_icc(value)
        else:
            result[key] = mask_value(key, value)
    return result


def mask_value(key: str, value: str) -> str:
    """One field's value, masked by what the field is."""
    if key == PAN_FIELD:
        return mask_pan(value)
    if key == TRACK2_FIELD:
        return mask_track2(value)
    if key == TRACK1_FIELD:
        return mask_track1(value)
    if key in HIDDEN_FIELDS:
        return f"<{len(value)} chars hidden>"
    if key in _PLAIN_FIELDS:
        return value
    parser = _SUBFIELD_PARSERS.get(key)
    if parser is not None:
        try:
            parser(value)
        except SubfieldError:
            return f"<{len(value)} chars hidden: not a valid DE{key}>"
        if key == "95":
            # Only the actual amount is checked; the rest is free text.
            return value[:AMOUNT_DIGITS] + mask_free_text(value[AMOUNT_DIGITS:])
        return value
    return mask_free_text(value)


def mask_free_text(text: str) -> str:
    """Mask every run of 13 or more digits as a PAN (first 6 + last 4); the
    rule lives in :func:`iso_switch.codec.masking.mask_pans_in_text`."""
    return mask_pans_in_text(text)


def mask_track1(track1: str) -> str:
    """Track 1 (``B`` PAN ``^`` name ``^`` expiry ...) reduced to its masked
    PAN: the name and discretionary data are cardholder data too."""
    start = 1 if track1[:1].isalpha() else 0
    end = track1.find(_TRACK1_SEPARATOR)
    if end < 0:
        return MASK_CHAR * len(track1)
    return (track1[:start] + mask_pan(track1[start:end]) + _TRACK1_SEPARATOR
            + MASK_CHAR * (len(track1) - end - 1))


def masked_icc(value: str) -> list[dict[str, Any]] | str:
    """DE55 as a list of items (tag, name, length, masked value, children),
    or a note saying why it could not be parsed; never a clear value that
    ``tlv.display_value`` does not allow."""
    try:
        items = parse_de55(value)
    except TlvError as exc:
        return f"<{len(value)} chars hidden: not BER-TLV, {exc}>"
    return [_icc_item(item) for item in items]


def _icc_item(item: Tlv) -> dict[str, Any]:
    shown: dict[str, Any] = {"tag": item.tag, "name": tag_name(item.tag),
                             "length": len(item.value)}
    if item.children is None:
        shown["value"] = display_value(item)
    else:
        shown["children"] = [_icc_item(child) for child in item.children]
    return shown


# ---------------------------------------------------------------- decode


def _decode(args: argparse.Namespace) -> int:
    try:
        spec = load_spec(args.spec)
        codec = Codec(spec)
        descs = {key: str(props.get("desc", "")) for key, props in spec.items()}
        data = _read_input(args.file)
        messages = _split_hex(data) if args.hex else [data]
    except (OSError, SpecError, InputError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    failures = 0
    for index, raw in enumerate(messages):
        where = f"message {index + 1}: " if len(messages) > 1 else ""
        try:
            fields = codec.decode(raw)
        except CodecError as exc:
            print(f"error: {where}{exc}", file=sys.stderr)
            failures += 1
            continue
        if args.json:
            print(json.dumps(masked_fields(fields)))
        else:
            if index:
                print()
            print("\n".join(format_message(fields, descs)))
    return 1 if failures else 0


def format_message(fields: Mapping[str, str], descs: Mapping[str, str]) -> list[str]:
    """Lines of the human-readable, masked view of one decoded message."""
    shown = masked_fields(fields)
    lines: list[str] = []
    if fields.get("h"):
        lines.append(f"Header        {shown['h']}")
    lines.append(f"MTI           {shown.get('t', '')}")
    lines.append(f"Bitmap        {shown.get('p', '')}")
    if "1" in fields:
        lines.append(f"Bitmap 2      {shown['1']}")
    numbered = sorted((int(k), k) for k in fields if k.isdigit() and k != "1")
    width = max((len(descs.get(k, "")) for _, k in numbered), default=0)
    for number, key in numbered:
        label = f"DE{number:>3}  {descs.get(key, ''):<{width}}"
        value = shown[key]
        if isinstance(value, str):
            lines.append(f"{label}  {value}")
            lines.extend(_subfield_lines(key, value))
        else:
            lines.append(label.rstrip())
            lines.extend(_icc_lines(value, 0))
    return lines


def _icc_lines(items: list[dict[str, Any]], depth: int) -> list[str]:
    lines: list[str] = []
    for item in items:
        tag = " " * (2 * depth) + item["tag"]
        head = f"{' ' * _INDENT}{tag:<{_TAG_WIDTH}}  {item['name']:<{_TAG_NAME_WIDTH}}"
        if "children" in item:
            lines.append(f"{head}{item['length']:>4}")
            lines.extend(_icc_lines(item["children"], depth + 1))
        else:
            lines.append(f"{head}{item['length']:>4}  {item['value']}")
    return lines


def _subfield_lines(key: str, value: str) -> list[str]:
    """DE54, DE90 and DE95 in parts, under the raw value (nothing when the
    value does not parse: the raw line, masked as free text, says enough)."""
    pad = " " * _INDENT
    try:
        if key == "54":
            return [
                f"{pad}account {b.account_type}  {b.amount_type_name:<9}  currency {b.currency}"
                f"  amount_minor {b.amount_minor:+d}"
                for b in parse_de54(value)
            ]
        if key == "90":
            o = parse_de90(value)
            return [f"{pad}original MTI {o.mti}  STAN {o.stan}  DE7 {o.transmitted}",
                    f"{pad}acquirer {o.acquirer_id}  forwarding {o.forwarding_id}"]
        if key == "95":
            return [f"{pad}actual amount_minor {parse_de95(value).actual_amount_minor}"]
    except SubfieldError as exc:
        return [f"{pad}(not a valid DE{key}: {exc.reason})"]
    return []


def _read_input(path: str) -> bytes:
    stream: BinaryIO
    if path == "-":
        data = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
    else:
        with open(path, "rb") as stream:
            data = stream.read(MAX_INPUT_BYTES + 1)
    if len(data) > MAX_INPUT_BYTES:
        raise InputError(f"input larger than {MAX_INPUT_BYTES} bytes")
    return data


def _split_hex(data: bytes) -> list[bytes]:
    """Hex text to messages: one per non-empty, non-comment line; whitespace
    inside a line is ignored. Errors name the line, never its content."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise InputError("hex input holds non-ASCII bytes") from None
    messages: list[bytes] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = "".join(line.split())
        if not stripped or stripped.startswith("#"):
            continue
        try:
            messages.append(binascii.unhexlify(stripped))
        except (binascii.Error, ValueError):
            raise InputError(f"line {number} is not valid hex (odd length or a non-hex "
                             "character)") from None
    if not messages:
        raise InputError("no message in the input")
    return messages


# ---------------------------------------------------------------- encode


def _encode(args: argparse.Namespace) -> int:
    try:
        codec = Codec(load_spec(args.spec))
        fields = _read_fields(_read_input(args.file))
        raw = codec.encode(fields)
    except CodecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (OSError, SpecError, InputError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.hex:
        sys.stdout.write(raw.hex().upper() + "\n")
        sys.stdout.flush()
    else:
        sys.stdout.flush()
        sys.stdout.buffer.write(raw)
        sys.stdout.buffer.flush()
    return 0


def _read_fields(data: bytes) -> dict[str, str]:
    try:
        document = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        # The position only: the text could hold a PAN.
        line = getattr(exc, "lineno", "?")
        raise InputError(f"input is not valid JSON (line {line})") from None
    if not isinstance(document, dict):
        raise InputError("input must be a JSON object of field key -> string value")
    for key, value in document.items():
        if not isinstance(value, str):
            raise InputError(f"field {key}: value must be a string")
    return document
