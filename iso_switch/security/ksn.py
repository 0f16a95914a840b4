"""Key serial numbers (KSN) of TDES DUKPT (ANSI X9.24-1) and AES DUKPT
(ANSI X9.24-3-2017): parsing and the checks the host makes before it
derives anything.

A TDES KSN is 80 bits (20 hex characters, DE62 of docs/interface.md section 4):
a 40-bit key set identifier that selects the base derivation key, a 19-bit
device (TRSM) identifier and a 21-bit transaction counter with at most 10
one-bits. An AES KSN is 96 bits: a 64-bit initial key ID (32-bit BDK ID and
32-bit derivation ID) and a 32-bit counter with at most 16 one-bits.
Messages here never repeat the KSN text: it is not secret, but it comes from
the network and errors must not echo input.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass

from iso_switch.security.errors import KsnError

TDES_KSN_HEX_CHARS = 20
TDES_COUNTER_BITS = 21
TDES_COUNTER_MASK = (1 << TDES_COUNTER_BITS) - 1
# ANSI X9.24-1: an originator never uses a counter with more than 10 one-bits;
# after 0x1FF800 its key space is exhausted (about a million transactions).
TDES_COUNTER_ONE_BITS_MAX = 10
AES_KSN_HEX_CHARS = 24
AES_COUNTER_BITS = 32
# ANSI X9.24-3-2017 section 6.1: at most 16 one-bits in the 32-bit counter.
AES_COUNTER_ONE_BITS_MAX = 16
_TDES_KSN_PATTERN = re.compile(f"[0-9A-Fa-f]{{{TDES_KSN_HEX_CHARS}}}")
_AES_KSN_PATTERN = re.compile(f"[0-9A-Fa-f]{{{AES_KSN_HEX_CHARS}}}")


@dataclass(frozen=True, slots=True)
class Ksn:
    """A parsed TDES DUKPT KSN.

    ``key_set_id``: first 5 bytes as upper-case hex (``FFFF987654``), picks
    the BDK. ``device_id``: bytes 6-8 as hex with the counter bits cleared
    (``3210E0``), the familiar spelling of the 19-bit device identifier.
    ``counter``: the 21-bit transaction counter.
    """

    key_set_id: str
    device_id: str
    counter: int

    @property
    def device_key(self) -> str:
        """Key set + device: the identity replay state and bindings hang on."""
        return self.key_set_id + self.device_id

    @property
    def initial_ksn(self) -> bytes:
        """The 10-byte KSN with the counter cleared (input to the IPEK)."""
        return bytes.fromhex(self.key_set_id + self.device_id + "0000")

    def to_bytes(self) -> bytes:
        value = int(self.key_set_id + self.device_id + "0000", 16) | self.counter
        return value.to_bytes(10, "big")

    def __str__(self) -> str:
        return self.to_bytes().hex().upper()


def parse_ksn(ksn_hex: str) -> Ksn:
    """Parse a TDES KSN of exactly 20 hex characters (either case).

    Raises :class:`KsnError` when it is malformed, its counter is zero (the
    initial key, never used for a transaction) or has more than
    :data:`TDES_COUNTER_ONE_BITS_MAX` one-bits. Whether the key set is known
    is the :class:`~iso_switch.security.hsm.Hsm`'s question, not this one's.
    """
    raw = tdes_ksn_bytes(ksn_hex)
    tail = int.from_bytes(raw[5:], "big")
    counter = tail & TDES_COUNTER_MASK
    check_tdes_counter(counter)
    device = (tail & ~TDES_COUNTER_MASK) >> 16
    return Ksn(key_set_id=raw[:5].hex().upper(), device_id=f"{device:06X}", counter=counter)


def tdes_ksn_bytes(ksn_hex: str) -> bytes:
    """The 10 bytes of a well-formed TDES KSN (:class:`KsnError` if not
    exactly 20 hex characters). Counter rules are checked separately."""
    if not isinstance(ksn_hex, str) or _TDES_KSN_PATTERN.fullmatch(ksn_hex) is None:
        raise KsnError(f"KSN must be {TDES_KSN_HEX_CHARS} hex characters")
    return binascii.unhexlify(ksn_hex)


def check_tdes_counter(counter: int) -> None:
    """Raise :class:`KsnError` for a counter no TDES originator may use."""
    if counter <= 0 or counter > TDES_COUNTER_MASK:
        raise KsnError("KSN counter is zero or out of range")
    if counter.bit_count() > TDES_COUNTER_ONE_BITS_MAX:
        raise KsnError(
            f"KSN counter has more than {TDES_COUNTER_ONE_BITS_MAX} one-bits "
            "(device key space exhausted, or a forged KSN)"
        )


@dataclass(frozen=True, slots=True)
class AesKsn:
    """A parsed AES DUKPT KSN: 8-byte initial key ID + 32-bit counter.

    ``bdk_id`` (first 4 bytes, hex) selects the BDK; ``derivation_id`` (next
    4 bytes, hex) identifies the device.
    """

    bdk_id: str
    derivation_id: str
    counter: int

    @property
    def initial_key_id(self) -> bytes:
        return bytes.fromhex(self.bdk_id + self.derivation_id)

    @property
    def device_key(self) -> str:
        return self.bdk_id + self.derivation_id

    def __str__(self) -> str:
        return f"{self.bdk_id}{self.derivation_id}{self.counter:08X}"


def parse_aes_ksn(ksn_hex: str) -> AesKsn:
    """Parse an AES DUKPT KSN of exactly 24 hex characters."""
    if not isinstance(ksn_hex, str) or _AES_KSN_PATTERN.fullmatch(ksn_hex) is None:
        raise KsnError(f"AES KSN must be {AES_KSN_HEX_CHARS} hex characters")
    counter = int(ksn_hex[16:], 16)
    check_aes_counter(counter)
    return AesKsn(bdk_id=ksn_hex[:8].upper(), derivation_id=ksn_hex[8:16].upper(), counter=counter)


def check_aes_counter(counter: int) -> None:
    """Raise :class:`KsnError` for a counter no AES originator may use."""
    if counter <= 0 or counter >= 1 << AES_COUNTER_BITS:
        raise KsnError("AES KSN counter is zero or out of range")
    if counter.bit_count() > AES_COUNTER_ONE_BITS_MAX:
        raise KsnError(
            f"AES KSN counter has more than {AES_COUNTER_ONE_BITS_MAX} one-bits "
            "(device key space exhausted, or a forged KSN)"
        )
