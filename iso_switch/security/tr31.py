"""TR-31 / ANSI X9.143 key blocks: wrap and unwrap, and the key usage and
mode-of-use rules that travel with a key.

Versions B (TDES key block protection key, CMAC-derived keys, the binding
method X9.143 requires for TDES) and D (AES) are what this project writes.
A and C (the variant binding of TR-31:2005/2010) are read so that keys from
older systems can be imported, and written only when asked explicitly.

A key block's header (usage, algorithm, mode of use, exportability,
optional blocks) is authenticated by the block's MAC: changing "P0" to
"M3" breaks the MAC, which is why usage enforcement can trust it.
Error messages never include the block's key data or MAC.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from iso_switch.security._ciphers import (
    aes_cbc_decrypt,
    aes_cbc_encrypt,
    aes_cmac,
    tdes_cbc_decrypt,
    tdes_cbc_encrypt,
    tdes_cmac,
    xor_bytes,
)
from iso_switch.security.errors import KeyBlockError, KeyUsageError

HEADER_CHARS = 16
KEY_BLOCK_CHARS_MAX = 9992
VERSIONS = ("A", "B", "C", "D")
_MAC_BYTES = {"A": 4, "B": 8, "C": 4, "D": 16}
_BLOCK_BYTES = {"A": 8, "B": 8, "C": 8, "D": 16}
_KBPK_BYTES = {"A": (8, 16, 24), "B": (16, 24), "C": (8, 16, 24), "D": (16, 24, 32)}
_KEY_BYTES = {"T": (16, 24), "D": (8,), "A": (16, 24, 32)}
_PRINTABLE = frozenset(chr(c) for c in range(0x20, 0x7F))

# Usage -> modes of use it may carry (X9.143 table 6 subset the switch uses).
USAGE_BDK = "B0"
USAGE_DUKPT_INITIAL_KEY = "B1"
USAGE_KEK = "K0"
USAGE_KBPK = "K1"
USAGE_PIN_ENCRYPTION = "P0"
USAGE_MAC_ISO9797_ALG3 = "M3"
USAGE_MAC_CMAC = "M6"
USAGE_HMAC = "M7"
USAGE_PVK_IBM3624 = "V1"
USAGE_PVK_VISA = "V2"
USAGE_DATA_ENCRYPTION = "D0"
USAGE_MODES: dict[str, frozenset[str]] = {
    USAGE_BDK: frozenset("X"),
    USAGE_DUKPT_INITIAL_KEY: frozenset("X"),
    USAGE_KEK: frozenset("BEDN"),
    USAGE_KBPK: frozenset("BEDN"),
    USAGE_PIN_ENCRYPTION: frozenset("BEDN"),
    USAGE_MAC_ISO9797_ALG3: frozenset("CGVN"),
    USAGE_MAC_CMAC: frozenset("CGVN"),
    USAGE_HMAC: frozenset("CGVN"),
    "M0": frozenset("CGVN"),
    "M1": frozenset("CGVN"),
    USAGE_PVK_IBM3624: frozenset("CGVN"),
    USAGE_PVK_VISA: frozenset("CGVN"),
    USAGE_DATA_ENCRYPTION: frozenset("BEDN"),
}
# What an operation needs from the mode of use.
MODE_GENERATE = "G"
MODE_VERIFY = "V"
MODE_ENCRYPT = "E"
MODE_DECRYPT = "D"
MODE_DERIVE = "X"
_MODES_ALLOWING = {
    MODE_GENERATE: frozenset("CGN"),
    MODE_VERIFY: frozenset("CVN"),
    MODE_ENCRYPT: frozenset("BEN"),
    MODE_DECRYPT: frozenset("BDN"),
    MODE_DERIVE: frozenset("X"),
}
EXPORTABLE = "E"


@dataclass(frozen=True, slots=True)
class KeyBlockHeader:
    """The clear, authenticated part of a key block. Holds no key."""

    version: str
    key_usage: str
    algorithm: str
    mode_of_use: str
    key_version: str = "00"
    exportability: str = "N"
    optional_blocks: tuple[tuple[str, str], ...] = ()

    def optional(self, block_id: str) -> str | None:
        for ident, data in self.optional_blocks:
            if ident == block_id:
                return data
        return None


def _check_header(header: KeyBlockHeader) -> None:
    if header.version not in VERSIONS:
        raise KeyBlockError("key block version must be A, B, C or D")
    fields = (header.key_usage, header.algorithm, header.mode_of_use, header.key_version,
              header.exportability)
    sizes = (2, 1, 1, 2, 1)
    for value, size in zip(fields, sizes, strict=True):
        if len(value) != size or not value.isascii() or not value.isalnum():
            raise KeyBlockError("key block header field malformed")
    allowed = USAGE_MODES.get(header.key_usage)
    if allowed is not None and header.mode_of_use not in allowed:
        raise KeyUsageError("mode of use not allowed for this key usage")
    for ident, data in header.optional_blocks:
        if len(ident) != 2 or not ident.isalnum() or ident == "PB":
            raise KeyBlockError("optional block id malformed")
        if any(ch not in _PRINTABLE for ch in data) or len(data) + 4 > 0xFF:
            raise KeyBlockError("optional block data malformed")


def _encode_optional(header: KeyBlockHeader) -> tuple[str, int]:
    """Optional blocks + a PB padding block so the header fills whole
    cipher blocks (X9.143 requires it)."""
    text = "".join(f"{ident}{len(data) + 4:02X}{data}" for ident, data in header.optional_blocks)
    count = len(header.optional_blocks)
    block = _BLOCK_BYTES[header.version]
    remainder = (HEADER_CHARS + len(text)) % block
    if remainder:
        pad = block - remainder
        if pad < 4:
            pad += block
        text += f"PB{pad:02X}" + "0" * (pad - 4)
        count += 1
    return text, count


def _header_text(header: KeyBlockHeader, total_chars: int, opt_count: int) -> str:
    return (
        f"{header.version}{total_chars:04d}{header.key_usage}{header.algorithm}"
        f"{header.mode_of_use}{header.key_version}{header.exportability}{opt_count:02d}00"
    )


def _check_kbpk(version: str, kbpk: bytes) -> None:
    if len(kbpk) not in _KBPK_BYTES[version]:
        raise KeyBlockError(f"key block protection key has the wrong length for version {version}")


def _tdes_derive(kbpk: bytes) -> tuple[bytes, bytes]:
    """Version B: KBEK and KBAK by TDES-CMAC of derivation data."""
    three_key = len(kbpk) == 24
    algorithm, bits = (b"\x00\x01", b"\x00\xc0") if three_key else (b"\x00\x00", b"\x00\x80")
    enc = b""
    auth = b""
    for counter in range(1, 4 if three_key else 3):
        enc += tdes_cmac(kbpk, bytes((counter,)) + b"\x00\x00\x00" + algorithm + bits)
        auth += tdes_cmac(kbpk, bytes((counter,)) + b"\x00\x01\x00" + algorithm + bits)
    return enc, auth


def _aes_derive(kbpk: bytes) -> tuple[bytes, bytes]:
    """Version D: KBEK and KBAK by AES-CMAC of derivation data."""
    algorithm, bits = {16: (b"\x00\x02", b"\x00\x80"), 24: (b"\x00\x03", b"\x00\xc0"),
                       32: (b"\x00\x04", b"\x01\x00")}[len(kbpk)]
    enc = b""
    auth = b""
    for counter in range(1, 2 if len(kbpk) == 16 else 3):
        enc += aes_cmac(kbpk, bytes((counter,)) + b"\x00\x00\x00" + algorithm + bits)
        auth += aes_cmac(kbpk, bytes((counter,)) + b"\x00\x01\x00" + algorithm + bits)
    return enc[: len(kbpk)], auth[: len(kbpk)]


def _variant_keys(kbpk: bytes) -> tuple[bytes, bytes]:
    """Versions A and C: KBEK = KBPK XOR 45.., KBAK = KBPK XOR 4D.."""
    return xor_bytes(kbpk, b"\x45" * len(kbpk)), xor_bytes(kbpk, b"\x4d" * len(kbpk))


def _cbc_mac_tdes(key: bytes, data: bytes) -> bytes:
    return tdes_cbc_encrypt(key, bytes(8), data)[-8:]


def wrap(kbpk: bytes, header: KeyBlockHeader, key: bytes) -> str:
    """Wrap ``key`` under ``kbpk`` into an ASCII TR-31 key block."""
    _check_header(header)
    version = header.version
    _check_kbpk(version, kbpk)
    if len(key) not in _KEY_BYTES.get(header.algorithm, (len(key),)):
        raise KeyBlockError("key length does not match the header's algorithm")
    optional, opt_count = _encode_optional(header)
    block = _BLOCK_BYTES[version]
    payload_len = 2 + len(key)
    padded_len = payload_len + (-payload_len % block)
    clear = (len(key) * 8).to_bytes(2, "big") + key + secrets.token_bytes(padded_len - payload_len)
    total = HEADER_CHARS + len(optional) + 2 * len(clear) + 2 * _MAC_BYTES[version]
    head = (_header_text(header, total, opt_count) + optional).encode("ascii")
    if version == "B":
        kbek, kbak = _tdes_derive(kbpk)
        mac = tdes_cmac(kbak, head + clear)
        encrypted = tdes_cbc_encrypt(kbek, mac, clear)
    elif version == "D":
        kbek, kbak = _aes_derive(kbpk)
        mac = aes_cmac(kbak, head + clear)
        encrypted = aes_cbc_encrypt(kbek, mac, clear)
    else:
        kbek, kbak = _variant_keys(kbpk)
        encrypted = tdes_cbc_encrypt(kbek, head[:8], clear)
        mac = _cbc_mac_tdes(kbak, head + encrypted)[:4]
    return head.decode("ascii") + encrypted.hex().upper() + mac.hex().upper()


def parse_header(key_block: str) -> tuple[KeyBlockHeader, int]:
    """The header of a key block (no key needed) and its length in chars."""
    if not isinstance(key_block, str) or not key_block.isascii():
        raise KeyBlockError("key block must be ASCII text")
    if len(key_block) < HEADER_CHARS or len(key_block) > KEY_BLOCK_CHARS_MAX:
        raise KeyBlockError("key block length out of range")
    version = key_block[0]
    if version not in VERSIONS:
        raise KeyBlockError("key block version must be A, B, C or D")
    length_text = key_block[1:5]
    if not length_text.isdigit() or int(length_text) != len(key_block):
        raise KeyBlockError("key block length field does not match its length")
    count_text = key_block[12:14]
    if not count_text.isdigit():
        raise KeyBlockError("key block optional block count malformed")
    position = HEADER_CHARS
    blocks: list[tuple[str, str]] = []
    for _ in range(int(count_text)):
        ident = key_block[position : position + 2]
        length_hex = key_block[position + 2 : position + 4]
        try:
            length = int(length_hex, 16)
        except ValueError:
            raise KeyBlockError("optional block length malformed") from None
        if length == 0:
            raise KeyBlockError("extended-length optional blocks are not supported")
        if length < 4 or position + length > len(key_block):
            raise KeyBlockError("optional block length out of range")
        if ident != "PB":
            blocks.append((ident, key_block[position + 4 : position + length]))
        position += length
    header = KeyBlockHeader(
        version=version,
        key_usage=key_block[5:7],
        algorithm=key_block[7],
        mode_of_use=key_block[8],
        key_version=key_block[9:11],
        exportability=key_block[11],
        optional_blocks=tuple(blocks),
    )
    return header, position


def unwrap(kbpk: bytes, key_block: str) -> tuple[KeyBlockHeader, bytes]:
    """Check the MAC and return the header and the clear key.

    Raises :class:`KeyBlockError` for a malformed block, a wrong key block
    protection key or a corrupted block (the last two are indistinguishable
    by design: both fail the MAC).
    """
    header, header_chars = parse_header(key_block)
    version = header.version
    _check_kbpk(version, kbpk)
    mac_chars = 2 * _MAC_BYTES[version]
    body = key_block[header_chars:-mac_chars]
    block = _BLOCK_BYTES[version]
    if header_chars % block or len(body) < 2 * block or len(body) % (2 * block):
        raise KeyBlockError("key block data length malformed")
    try:
        encrypted = bytes.fromhex(body)
        mac = bytes.fromhex(key_block[-mac_chars:])
    except ValueError:
        raise KeyBlockError("key block data is not hex") from None
    head = key_block[:header_chars].encode("ascii")
    if version == "B":
        kbek, kbak = _tdes_derive(kbpk)
        clear = tdes_cbc_decrypt(kbek, mac, encrypted)
        expected = tdes_cmac(kbak, head + clear)
    elif version == "D":
        kbek, kbak = _aes_derive(kbpk)
        clear = aes_cbc_decrypt(kbek, mac, encrypted)
        expected = aes_cmac(kbak, head + clear)
    else:
        kbek, kbak = _variant_keys(kbpk)
        expected = _cbc_mac_tdes(kbak, head + encrypted)[:4]
        clear = tdes_cbc_decrypt(kbek, head[:8], encrypted)
    if not hmac.compare_digest(expected, mac):
        raise KeyBlockError(
            "key block MAC does not verify (wrong key block protection key, or the block "
            "is corrupted)"
        )
    bits = int.from_bytes(clear[:2], "big")
    if bits % 8 or 2 + bits // 8 > len(clear):
        raise KeyBlockError("key block key length malformed")
    key = clear[2 : 2 + bits // 8]
    if header.algorithm in _KEY_BYTES and len(key) not in _KEY_BYTES[header.algorithm]:
        raise KeyBlockError("key length does not match the header's algorithm")
    return header, key


def require_use(header: KeyBlockHeader, usages: tuple[str, ...], operation: str) -> None:
    """Raise :class:`KeyUsageError` unless the key's usage is one of
    ``usages`` and its mode of use allows ``operation`` (``MODE_*``)."""
    if header.key_usage not in usages:
        raise KeyUsageError(
            f"key usage {header.key_usage} not allowed here (needs one of {', '.join(usages)})"
        )
    if header.mode_of_use not in _MODES_ALLOWING[operation]:
        raise KeyUsageError(f"mode of use {header.mode_of_use} does not allow this operation")
