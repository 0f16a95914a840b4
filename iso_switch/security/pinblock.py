"""ISO 9564-1 PIN blocks: formats 0, 1 and 3 (8 bytes, TDES) and format 4
(16 bytes, AES): build, encrypt, decrypt, decode and translate.

The clear PIN exists here only as a function argument or return value; it
is never logged and never appears in an error message. Errors say which
rule broke ("fill digits invalid"), which with a wrong key or wrong PAN is
what a real mismatch looks like.

Translation refuses to turn a format 0, 3 or 4 block into format 1: that
would strip the PAN binding an attacker needs to defeat (ISO 9564-1
section 9.3.5). Both sides of a translation use the same, checked PAN.
"""

from __future__ import annotations

import secrets

from iso_switch.security._ciphers import (
    aes_ecb_decrypt,
    aes_ecb_encrypt,
    tdes_ecb_decrypt_uncached,
    tdes_ecb_encrypt,
)
from iso_switch.security.errors import PinBlockError

PIN_DIGITS_MIN = 4
PIN_DIGITS_MAX = 12
PAN_DIGITS_MIN = 8
PAN_DIGITS_MAX = 19
FORMAT_0 = 0
FORMAT_1 = 1
FORMAT_3 = 3
FORMAT_4 = 4
TDES_FORMATS = (FORMAT_0, FORMAT_1, FORMAT_3)
PAN_BOUND_FORMATS = (FORMAT_0, FORMAT_3, FORMAT_4)
FORMATS = (FORMAT_0, FORMAT_1, FORMAT_3, FORMAT_4)
_HEX = "0123456789ABCDEF"
_FORMAT_4_FILL = "A"


def check_pin(pin: str) -> None:
    if not (PIN_DIGITS_MIN <= len(pin) <= PIN_DIGITS_MAX and pin.isascii() and pin.isdigit()):
        raise PinBlockError(f"PIN must be {PIN_DIGITS_MIN}-{PIN_DIGITS_MAX} decimal digits")


def check_pan(pan: str) -> None:
    if not (PAN_DIGITS_MIN <= len(pan) <= PAN_DIGITS_MAX and pan.isascii() and pan.isdigit()):
        raise PinBlockError(f"PAN must be {PAN_DIGITS_MIN}-{PAN_DIGITS_MAX} decimal digits")


def _pan_field(pan: str) -> int:
    """Format 0 / 3 account field: 0000 + the 12 rightmost PAN digits
    excluding the check digit (left-padded with zeros for short PANs)."""
    check_pan(pan)
    return int(pan[:-1][-12:].rjust(12, "0"), 16)


def _random_hex(count: int, alphabet: str) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(count))


def _pin_field(format_nibble: int, pin: str, fill: str) -> int:
    check_pin(pin)
    text = f"{format_nibble:X}{len(pin):X}{pin}{fill}"
    return int(text, 16)


def encode_iso0(pin: str, pan: str) -> bytes:
    """Clear format 0 block: PIN field (0, length, PIN, F fill) XOR PAN field."""
    field = _pin_field(0, pin, "F" * (14 - len(pin)))
    return (field ^ _pan_field(pan)).to_bytes(8, "big")


def encode_iso1(pin: str, fill: str | None = None) -> bytes:
    """Clear format 1 block: 1, length, PIN, random (or given) hex fill. No PAN."""
    fill = _random_hex(14 - len(pin), _HEX) if fill is None else fill
    return _pin_field(1, pin, fill).to_bytes(8, "big")


def encode_iso3(pin: str, pan: str, fill: str | None = None) -> bytes:
    """Clear format 3 block: like format 0 with random A-F fill."""
    fill = _random_hex(14 - len(pin), "ABCDEF") if fill is None else fill
    return (_pin_field(3, pin, fill) ^ _pan_field(pan)).to_bytes(8, "big")


def _decode_pin_field(text: str, format_nibble: str, fill_alphabet: str) -> str:
    """Check and strip a 16-nibble PIN field in upper-case hex."""
    if text[0] != format_nibble:
        raise PinBlockError("PIN block format nibble does not match")
    length = int(text[1], 16)
    if not PIN_DIGITS_MIN <= length <= PIN_DIGITS_MAX:
        raise PinBlockError("PIN block PIN length invalid")
    pin = text[2 : 2 + length]
    if not pin.isdigit():
        raise PinBlockError("PIN block PIN digits invalid")
    if any(ch not in fill_alphabet for ch in text[2 + length :]):
        raise PinBlockError("PIN block fill digits invalid")
    return pin


def decode_iso0(block: bytes, pan: str) -> str:
    """PIN from a clear format 0 block checked against ``pan``."""
    field = int.from_bytes(_eight(block), "big") ^ _pan_field(pan)
    return _decode_pin_field(f"{field:016X}", "0", "F")


def decode_iso1(block: bytes) -> str:
    return _decode_pin_field(_eight(block).hex().upper(), "1", _HEX)


def decode_iso3(block: bytes, pan: str) -> str:
    field = int.from_bytes(_eight(block), "big") ^ _pan_field(pan)
    return _decode_pin_field(f"{field:016X}", "3", "ABCDEF")


def _eight(block: bytes) -> bytes:
    if len(block) != 8:
        raise PinBlockError("a TDES PIN block has 8 bytes")
    return block


def encode_iso4_pin_field(pin: str, random_part: bytes | None = None) -> bytes:
    """Format 4 plain-text PIN field: 4, length, PIN, A fill to 16 nibbles,
    then 8 random bytes."""
    check_pin(pin)
    head = f"4{len(pin):X}{pin}".ljust(16, _FORMAT_4_FILL)
    tail = secrets.token_bytes(8) if random_part is None else random_part
    if len(tail) != 8:
        raise PinBlockError("format 4 random part has 8 bytes")
    return bytes.fromhex(head) + tail


def encode_iso4_pan_field(pan: str) -> bytes:
    """Format 4 plain-text PAN field: M (PAN length - 12, at least 0), the
    PAN left-justified (left-padded to 12 digits when shorter), zero fill."""
    check_pan(pan)
    extra = max(len(pan) - 12, 0)
    text = f"{extra:X}{pan.rjust(12, '0')}".ljust(32, "0")
    return bytes.fromhex(text)


def decode_iso4_pin_field(field: bytes) -> str:
    if len(field) != 16:
        raise PinBlockError("a format 4 PIN field has 16 bytes")
    return _decode_pin_field(field[:8].hex().upper(), "4", _FORMAT_4_FILL)


def encrypt_iso4(key: bytes, pin: str, pan: str, random_part: bytes | None = None) -> bytes:
    """Format 4: AES(key, AES(key, PIN field) XOR PAN field)."""
    inner = aes_ecb_encrypt(key, encode_iso4_pin_field(pin, random_part))
    mixed = int.from_bytes(inner, "big") ^ int.from_bytes(encode_iso4_pan_field(pan), "big")
    return aes_ecb_encrypt(key, mixed.to_bytes(16, "big"))


def decrypt_iso4(key: bytes, block: bytes, pan: str) -> str:
    if len(block) != 16:
        raise PinBlockError("a format 4 PIN block has 16 bytes")
    mixed = aes_ecb_decrypt(key, block)
    inner = int.from_bytes(mixed, "big") ^ int.from_bytes(encode_iso4_pan_field(pan), "big")
    return decode_iso4_pin_field(aes_ecb_decrypt(key, inner.to_bytes(16, "big")))


def build_pin_block(pin: str, pan: str | None, fmt: int) -> bytes:
    """Clear 8-byte block of format 0, 1 or 3 (format 4 is only ever
    encrypted: see :func:`encrypt_pin_block`)."""
    if fmt == FORMAT_0:
        return encode_iso0(pin, _need_pan(pan))
    if fmt == FORMAT_1:
        return encode_iso1(pin)
    if fmt == FORMAT_3:
        return encode_iso3(pin, _need_pan(pan))
    raise PinBlockError("clear PIN blocks exist for formats 0, 1 and 3")


def decode_pin_block(block: bytes, pan: str | None, fmt: int) -> str:
    if fmt == FORMAT_0:
        return decode_iso0(block, _need_pan(pan))
    if fmt == FORMAT_1:
        return decode_iso1(block)
    if fmt == FORMAT_3:
        return decode_iso3(block, _need_pan(pan))
    raise PinBlockError("clear PIN blocks exist for formats 0, 1 and 3")


def _need_pan(pan: str | None) -> str:
    if pan is None:
        raise PinBlockError("this PIN block format needs the PAN")
    return pan


def encrypt_pin_block(key: bytes, pin: str, pan: str | None, fmt: int) -> bytes:
    """Encrypted block: TDES-ECB of a format 0/1/3 block, or format 4 (AES)."""
    if fmt == FORMAT_4:
        return encrypt_iso4(key, pin, _need_pan(pan))
    return tdes_ecb_encrypt(key, build_pin_block(pin, pan, fmt))


def decrypt_pin_block(key: bytes, block: bytes, pan: str | None, fmt: int) -> str:
    """The PIN of an encrypted block; :class:`PinBlockError` if it does not
    decode (most often the wrong key or the wrong PAN)."""
    if fmt == FORMAT_4:
        return decrypt_iso4(key, block, _need_pan(pan))
    return decode_pin_block(tdes_ecb_decrypt_uncached(key, _eight(block)), pan, fmt)


def translate_pin_block(
    source_key: bytes,
    block: bytes,
    source_format: int,
    dest_key: bytes,
    dest_format: int,
    pan: str | None,
    dest_pan: str | None = None,
) -> bytes:
    """Re-encrypt a PIN block under another key and/or format.

    Refuses PAN-bound -> format 1 (0/3/4 -> 1). The PAN decodes the source
    and encodes the destination; a different ``dest_pan`` is refused, so a
    PIN can never be moved to another card's block.
    """
    if source_format not in FORMATS or dest_format not in FORMATS:
        raise PinBlockError("PIN block format must be 0, 1, 3 or 4")
    if source_format in PAN_BOUND_FORMATS and dest_format not in PAN_BOUND_FORMATS:
        raise PinBlockError("translation from a PAN-bound format to format 1 is refused")
    if dest_pan is not None and dest_pan != pan:
        raise PinBlockError("PIN translation must keep the same PAN on both sides")
    if dest_format in PAN_BOUND_FORMATS and pan is None:
        raise PinBlockError("the destination format needs the PAN")
    pin = decrypt_pin_block(source_key, block, pan, source_format)
    return encrypt_pin_block(dest_key, pin, pan, dest_format)
