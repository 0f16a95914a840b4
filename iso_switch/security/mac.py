"""Message authentication codes: ISO 9797-1 MAC algorithm 3 (the "retail
MAC" of ANSI X9.19) and AES-CMAC, with constant-time verification.

The retail MAC is a single-DES CBC-MAC under K1 followed by a final
decrypt-under-K2, encrypt-under-K1 on the last block. It is computed as one
single-DES CBC call over all blocks but the last (K1 K1 K1 three-key TDES is
single DES), then one TDES-ECB encryption of (last chaining value XOR last
block) under K1 K2 K1, which equals the ISO output transformation. Two
``cryptography`` calls per MAC regardless of the message length.
"""

from __future__ import annotations

import hmac

from iso_switch.security._ciphers import aes_cmac, des_cbc_mac_chain, tdes_ecb_encrypt_uncached
from iso_switch.security.errors import MacError

RETAIL_MAC_BYTES = 8
AES_CMAC_BYTES = 16
PADDING_METHODS = (1, 2)


def pad_iso9797(data: bytes, method: int, block_bytes: int = 8) -> bytes:
    """ISO 9797-1 padding method 1 (zeros; an empty message becomes one zero
    block) or 2 (0x80 then zeros, always at least one byte)."""
    if method == 1:
        if not data:
            return bytes(block_bytes)
        return data + bytes(-len(data) % block_bytes)
    if method == 2:
        data = data + b"\x80"
        return data + bytes(-len(data) % block_bytes)
    raise MacError("ISO 9797-1 padding method must be 1 or 2")


def retail_mac(key: bytes, data: bytes, padding: int = 1) -> bytes:
    """ISO 9797-1 MAC algorithm 3 with a 16-byte key, full 8 bytes."""
    if len(key) != 16:
        raise MacError("retail MAC needs a 16-byte (double-length) key")
    tail = len(data) % 8
    if padding == 1 and data and not tail:
        padded = data  # already whole blocks: no copy
    elif padding == 1 and data:
        padded = data + bytes(8 - tail)
    else:
        padded = pad_iso9797(data, padding)
    if len(padded) > 8:
        # memoryview: no copy of the message for the slice.
        chain = des_cbc_mac_chain(key[:8], memoryview(padded)[:-8])
        last = int.from_bytes(chain, "big") ^ int.from_bytes(padded[-8:], "big")
        block = last.to_bytes(8, "big")
    else:
        block = padded
    # Keys here are mostly one-off DUKPT keys: no context cache entry.
    return tdes_ecb_encrypt_uncached(key, block)


def verify_retail_mac(key: bytes, data: bytes, mac: bytes, padding: int = 1) -> bool:
    """Constant-time comparison of a full 8-byte retail MAC."""
    if len(mac) != RETAIL_MAC_BYTES:
        return False
    return hmac.compare_digest(retail_mac(key, data, padding), mac)


def cmac_aes(key: bytes, data: bytes, length: int = AES_CMAC_BYTES) -> bytes:
    """AES-CMAC (RFC 4493), optionally truncated to ``length`` bytes."""
    if len(key) not in (16, 24, 32):
        raise MacError("AES-CMAC needs a 16, 24 or 32-byte key")
    return aes_cmac(key, data)[:length]


def verify_cmac_aes(key: bytes, data: bytes, mac: bytes) -> bool:
    """Constant-time check of a (possibly truncated, >= 4 bytes) AES-CMAC."""
    if not 4 <= len(mac) <= AES_CMAC_BYTES:
        return False
    return hmac.compare_digest(cmac_aes(key, data, len(mac)), mac)
