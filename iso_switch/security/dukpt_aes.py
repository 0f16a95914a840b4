"""AES DUKPT (ANSI X9.24-3-2017), host and terminal-simulator side.

Every derivation is one AES-ECB encryption (two for 256-bit keys) of a
16-byte derivation data block: version 01, block counter, key usage,
algorithm, length in bits, then either the 8-byte initial key ID (for the
initial key) or the 4-byte derivation ID + 4-byte counter. Intermediate
derivation keys follow the counter's one-bits from the most significant
down, like TDES DUKPT; working keys (PIN, MAC, data) are derived from the
final intermediate key of the transaction's counter.
"""

from __future__ import annotations

from iso_switch.security._ciphers import aes_ecb_encrypt
from iso_switch.security.ksn import AES_COUNTER_BITS, AesKsn, check_aes_counter, parse_aes_ksn

# Key usage indicators (X9.24-3-2017 table 2).
USAGE_KEY_ENCRYPTION = 0x0002
USAGE_PIN_ENCRYPTION = 0x1000
USAGE_MAC_GENERATION = 0x2000
USAGE_MAC_VERIFICATION = 0x2001
USAGE_MAC_BOTH = 0x2002
USAGE_DATA_ENCRYPT = 0x3000
USAGE_DATA_DECRYPT = 0x3001
USAGE_DATA_BOTH = 0x3002
USAGE_INTERMEDIATE = 0x8000
USAGE_INITIAL_KEY = 0x8001
# Algorithm indicators (table 3) and their key lengths in bits.
ALGORITHM_2TDEA = 0x0000
ALGORITHM_3TDEA = 0x0001
ALGORITHM_AES128 = 0x0002
ALGORITHM_AES192 = 0x0003
ALGORITHM_AES256 = 0x0004
ALGORITHM_HMAC = 0x0005
_KEY_BITS = {
    ALGORITHM_2TDEA: 128,
    ALGORITHM_3TDEA: 192,
    ALGORITHM_AES128: 128,
    ALGORITHM_AES192: 192,
    ALGORITHM_AES256: 256,
    ALGORITHM_HMAC: 128,
}
_ALGORITHM_OF_KEY_BYTES = {16: ALGORITHM_AES128, 24: ALGORITHM_AES192, 32: ALGORITHM_AES256}


def _derivation_data(usage: int, algorithm: int, tail: bytes, block: int = 1) -> bytes:
    bits = _KEY_BITS[algorithm]
    return (
        bytes((0x01, block))
        + usage.to_bytes(2, "big")
        + algorithm.to_bytes(2, "big")
        + bits.to_bytes(2, "big")
        + tail
    )


def _derive(key: bytes, usage: int, algorithm: int, tail: bytes) -> bytes:
    """X9.24-3 DERIVE-KEY: as many AES blocks as the derived key needs."""
    size = _KEY_BITS[algorithm] // 8
    out = b""
    block = 1
    while len(out) < size:
        out += aes_ecb_encrypt(key, _derivation_data(usage, algorithm, tail, block))
        block += 1
    return out[:size]


def derive_initial_key(bdk: bytes, initial_key_id: bytes | str) -> bytes:
    """The terminal's initial key from the BDK and 8-byte initial key ID."""
    ikid = bytes.fromhex(initial_key_id) if isinstance(initial_key_id, str) else initial_key_id
    if len(ikid) != 8:
        raise ValueError("the AES DUKPT initial key ID has 8 bytes")
    return _derive(bdk, USAGE_INITIAL_KEY, _ALGORITHM_OF_KEY_BYTES[len(bdk)], ikid)


def derive_derivation_key(initial_key: bytes, derivation_id: bytes, counter: int) -> bytes:
    """The intermediate derivation key of ``counter`` from the initial key."""
    check_aes_counter(counter)
    algorithm = _ALGORITHM_OF_KEY_BYTES[len(initial_key)]
    key = initial_key
    working = 0
    bit = 1 << (AES_COUNTER_BITS - 1)
    while bit:
        if counter & bit:
            working |= bit
            tail = derivation_id + working.to_bytes(4, "big")
            key = _derive(key, USAGE_INTERMEDIATE, algorithm, tail)
        bit >>= 1
    return key


def derive_working_key(
    derivation_key: bytes, derivation_id: bytes, counter: int, usage: int, algorithm: int
) -> bytes:
    """A working key (PIN, MAC, data...) of the given usage and algorithm."""
    return _derive(derivation_key, usage, algorithm, derivation_id + counter.to_bytes(4, "big"))


def host_working_key(
    bdk: bytes, ksn: AesKsn | str, usage: int, algorithm: int = ALGORITHM_AES128
) -> bytes:
    """What the host derives for a transaction: BDK -> initial key ->
    derivation key of the counter -> working key of ``usage``."""
    parsed = parse_aes_ksn(ksn) if isinstance(ksn, str) else ksn
    initial = derive_initial_key(bdk, parsed.initial_key_id)
    derivation_id = parsed.initial_key_id[4:]
    derivation = derive_derivation_key(initial, derivation_id, parsed.counter)
    return derive_working_key(derivation, derivation_id, parsed.counter, usage, algorithm)
