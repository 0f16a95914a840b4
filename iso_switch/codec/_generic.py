"""The reference paths: a field-by-field decoder and encoder that follow
pyiso8583's algorithm step for step.

They serve three purposes: messages whose bitmap layout has not been
compiled yet, unusual specs the compiler does not specialise, and the exact
error (field and offset) whenever a compiled path bails out. They are built
from ``FieldSpec`` values once per ``Codec``; nothing here reads the spec
dict per message.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable, Mapping
from typing import Any

from iso_switch.codec._spec import BCD, BINARY, FieldSpec
from iso_switch.codec.errors import CodecError

# (message, start offset, decoded dict) -> offset after the field
FieldDecoder = Callable[[bytes, int, dict[str, str]], int]
# (value, offset the field would start at) -> encoded bytes
FieldEncoder = Callable[[object, int], bytes]


def _parse_length(fs: FieldSpec, raw_len: bytes, pos: int) -> int:
    """Length prefix as pyiso8583 reads it (including its leniencies:
    ``int()`` accepts surrounding blanks and underscores in text lengths)."""
    if fs.len_enc == BINARY:
        return int.from_bytes(raw_len, "big", signed=False)
    if fs.len_enc == BCD:
        try:
            return int(raw_len.hex(), 10)
        except ValueError:
            raise CodecError("invalid BCD length", fs.key, pos) from None
    try:
        text = raw_len.decode(fs.len_enc)
    except UnicodeError:
        raise CodecError("undecodable length", fs.key, pos) from None
    try:
        return int(text)
    except ValueError:
        raise CodecError("non-numeric length", fs.key, pos) from None


def _strip_pad(fs: FieldSpec, value: str, pos: int) -> str:
    """Remove the pad nibble of an odd-length nibble field (left, else right)."""
    if fs.left_pad and value[:1] == fs.left_pad:
        return value[1:]
    if fs.right_pad and value[-1:] == fs.right_pad:
        return value[:-1]
    raise CodecError("odd nibble count without its pad", fs.key, pos)


def make_field_decoder(fs: FieldSpec) -> FieldDecoder:
    key = fs.key
    len_type = fs.len_type
    max_len = fs.max_len

    def decode_field(s: bytes, idx: int, out: dict[str, str]) -> int:
        out[key] = ""
        raw_len = s[idx : idx + len_type]
        if len(raw_len) != len_type:
            raise CodecError("truncated length prefix", key, idx)
        if len_type == 0:
            enc_len = max_len
        else:
            enc_len = _parse_length(fs, raw_len, idx)
            if enc_len > max_len:
                raise CodecError("length over the field maximum", key, idx)
        idx += len_type
        if enc_len == 0:
            return idx
        if fs.nibbles:
            byte_len = (enc_len + 1) // 2 if enc_len & 1 else enc_len // 2
        else:
            byte_len = enc_len
        data = s[idx : idx + byte_len]
        if len(data) != byte_len:
            raise CodecError("truncated field data", key, idx)
        if fs.binary:
            value = data.hex().upper()
            if fs.nibbles and enc_len & 1:
                value = _strip_pad(fs, value, idx)
            out[key] = value
        else:
            try:
                out[key] = data.decode(fs.data_enc)
            except UnicodeError:
                raise CodecError("undecodable field data", key, idx) from None
        return idx + byte_len

    return decode_field


def bitmap_width(fs: FieldSpec) -> int:
    """Bytes one 64-bit bitmap takes on the wire."""
    return 8 if fs.binary else 16


def decode_bitmap(fs: FieldSpec, s: bytes, idx: int) -> tuple[str, bytes]:
    """One bitmap at ``idx``: (decoded text, bitmap bytes). Text bitmaps go
    through ``bytes.fromhex`` exactly as in pyiso8583."""
    width = bitmap_width(fs)
    data = s[idx : idx + width]
    if len(data) != width:
        raise CodecError("truncated bitmap", fs.key, idx)
    if fs.binary:
        return data.hex().upper(), data
    try:
        text = data.decode(fs.data_enc)
    except UnicodeError:
        raise CodecError("undecodable bitmap", fs.key, idx) from None
    try:
        return text, bytes.fromhex(text)
    except ValueError:
        raise CodecError("non-hex bitmap", fs.key, idx) from None


def bitmap_fields(bitmap: bytes, offset: int) -> list[int]:
    return [
        offset + byte_idx * 8 + bit
        for byte_idx, byte in enumerate(bitmap)
        for bit in range(1, 9)
        if byte >> (8 - bit) & 1
    ]


class GenericCodec:
    """Field-by-field codec with pyiso8583's exact semantics."""

    def __init__(self, fields: Mapping[str, FieldSpec]) -> None:
        self.fields = fields
        self.decoders: dict[str, FieldDecoder] = {
            key: make_field_decoder(fs) for key, fs in fields.items() if key not in ("t", "p")
        }
        self.encoders: dict[str, FieldEncoder] = {
            key: make_field_encoder(fs) for key, fs in fields.items() if key not in ("t", "p")
        }
        self.has_header = fields["h"].max_len > 0

    # -- decode ---------------------------------------------------------

    def decode_head(self, s: bytes, out: dict[str, str]) -> tuple[int, list[int], str]:
        """Header, MTI and bitmaps: (offset after them, field numbers, last key)."""
        idx = 0
        if self.has_header:
            idx = self.decoders["h"](s, idx, out)
        mti = self.fields["t"]
        out["t"] = ""
        width = 2 if mti.binary else 4
        data = s[idx : idx + width]
        if len(data) != width:
            raise CodecError("truncated message type", "t", idx)
        if mti.binary:
            out["t"] = data.hex().upper()
        else:
            try:
                out["t"] = data.decode(mti.data_enc)
            except UnicodeError:
                raise CodecError("undecodable message type", "t", idx) from None
        idx += width

        primary = self.fields["p"]
        text, bitmap = decode_bitmap(primary, s, idx)
        out["p"] = text
        idx += bitmap_width(primary)
        numbers = bitmap_fields(bitmap, 0)
        last = "p"
        if numbers and numbers[0] == 1:
            numbers.pop(0)
            secondary = self.fields.get("1")
            if secondary is None:
                raise CodecError("secondary bitmap not in spec", "1", idx)
            last = "1"
            text, bitmap = decode_bitmap(secondary, s, idx)
            out["1"] = text
            idx += bitmap_width(secondary)
            more = bitmap_fields(bitmap, 64)
            if more and more[0] == 65:
                more.pop(0)
                text, bitmap = decode_bitmap(secondary, s, idx)
                out["1"] += text
                idx += bitmap_width(secondary)
                more += bitmap_fields(bitmap, 128)
            numbers += more
        return idx, numbers, last

    def decode(self, s: bytes) -> dict[str, str]:
        out: dict[str, str] = {}
        idx, numbers, last = self.decode_head(s, out)
        decoders = self.decoders
        for number in numbers:
            last = str(number)
            decoder = decoders.get(last)
            if decoder is None:
                raise CodecError("field not in spec", last, idx)
            idx = decoder(s, idx, out)
        if idx != len(s):
            raise CodecError("extra data after last field", last, idx)
        return out

    # -- encode ---------------------------------------------------------

    def encode(self, doc: Mapping[str, Any]) -> bytes:
        """Encode as pyiso8583.encode does, step for step (including how it
        reads numeric keys: ``"01"`` names field 1 and forces a secondary
        bitmap), but without touching the caller's mapping."""
        if not isinstance(doc, Mapping):
            raise CodecError("fields must be a mapping", "p", 0)
        doc = {key: value for key, value in doc.items() if key not in ("1", "65")}
        out = bytearray()
        if self.has_header:
            if "h" not in doc:
                raise CodecError("header required by the spec", "h", 0)
            out += self.encoders["h"](doc["h"], 0)
        if "t" not in doc:
            raise CodecError("message type required", "t", len(out))
        out += encode_mti(self.fields["t"], doc["t"], len(out))
        numbers: set[int] = set()
        for key in doc:
            if not isinstance(key, str):
                raise CodecError("field keys must be strings", "p", len(out))
            if key.isnumeric():
                try:
                    numbers.add(int(key))
                except ValueError:
                    raise CodecError("unusable field key", "p", len(out)) from None
        if any(not 1 <= n <= 192 for n in numbers):
            raise CodecError("field number outside 1-192", "p", len(out))
        tertiary = sorted(n for n in numbers if n > 128)
        if tertiary:
            numbers.add(65)
        secondary = sorted(n for n in numbers if 64 < n <= 128)
        if secondary:
            numbers.add(1)
        out += encode_bitmap(self.fields["p"], [n for n in numbers if n <= 64], 0, len(out))
        if 1 in numbers:
            spec1 = self.fields.get("1")
            if spec1 is None:
                raise CodecError("secondary bitmap not in spec", "1", len(out))
            out += encode_bitmap(spec1, secondary, 64, len(out))
            numbers.discard(1)
            if 65 in numbers:
                out += encode_bitmap(spec1, tertiary, 128, len(out))
                numbers.discard(65)
        for number in sorted(numbers):
            key = str(number)
            encoder = self.encoders.get(key)
            if encoder is None:
                raise CodecError("field not in spec", key, len(out))
            if key not in doc:
                raise CodecError("unusable field key", key, len(out))
            out += encoder(doc[key], len(out))
        return bytes(out)


def encode_mti(fs: FieldSpec, value: object, pos: int) -> bytes:
    if not isinstance(value, str):
        raise CodecError("value must be a string", "t", pos)
    if fs.binary:
        try:
            data = binascii.a2b_hex(value)
        except (ValueError, binascii.Error):
            raise CodecError("non-hex message type", "t", pos) from None
        width = 2
    else:
        try:
            data = value.encode(fs.data_enc)
        except UnicodeError:
            raise CodecError("unencodable message type", "t", pos) from None
        width = 4
    if len(data) != width:
        raise CodecError(f"message type must be {width} bytes", "t", pos)
    return data


def bitmap_bytes(numbers: list[int], offset: int) -> bytes:
    bitmap = bytearray(8)
    for number in numbers:
        bit = number - 1 - offset
        bitmap[bit // 8] |= 1 << (7 - bit % 8)
    return bytes(bitmap)


def encode_bitmap(fs: FieldSpec, numbers: list[int], offset: int, pos: int) -> bytes:
    bitmap = bitmap_bytes(numbers, offset)
    if fs.binary:
        return bitmap
    try:
        return bitmap.hex().upper().encode(fs.data_enc)
    except UnicodeError:
        raise CodecError("unencodable bitmap", fs.key, pos) from None


def encode_length(fs: FieldSpec, enc_len: int, pos: int) -> bytes:
    width = fs.len_type
    if fs.len_enc == BINARY:
        try:
            return enc_len.to_bytes(width, "big", signed=False)
        except OverflowError:
            raise CodecError("length does not fit its prefix", fs.key, pos) from None
    if fs.len_enc == BCD:
        digits = f"{enc_len:0{width * 2}d}"
        if len(digits) > width * 2:
            raise CodecError("length does not fit its prefix", fs.key, pos)
        return binascii.a2b_hex(digits)
    try:
        encoded = f"{enc_len:0{width}d}".encode(fs.len_enc)
    except UnicodeError:
        raise CodecError("unencodable length", fs.key, pos) from None
    if len(encoded) > width:
        raise CodecError("length does not fit its prefix", fs.key, pos)
    return encoded


def make_field_encoder(fs: FieldSpec) -> FieldEncoder:
    key = fs.key

    def encode_field(value: object, pos: int) -> bytes:
        if not isinstance(value, str):
            raise CodecError("value must be a string", key, pos)
        if fs.binary:
            text = value
            if fs.nibbles and len(value) & 1:
                text = fs.left_pad + value if fs.left_pad else value + fs.right_pad
            try:
                data = binascii.a2b_hex(text)
            except (ValueError, binascii.Error):
                raise CodecError("non-hex or odd-length binary data", key, pos) from None
            enc_len = len(value) if fs.nibbles else len(data)
        else:
            try:
                data = value.encode(fs.data_enc)
            except UnicodeError:
                raise CodecError("unencodable field data", key, pos) from None
            enc_len = len(data) * 2 if fs.nibbles else len(data)
        if fs.len_type == 0:
            if enc_len != fs.max_len:
                raise CodecError("fixed field of the wrong length", key, pos)
            return data
        if enc_len > fs.max_len:
            raise CodecError("length over the field maximum", key, pos)
        return encode_length(fs, enc_len, pos) + data

    return encode_field
