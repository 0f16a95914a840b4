"""Key check values: a few public bytes that identify a key without
revealing it, so operators can compare keys across systems.

TDES: the first 3 bytes of TDES-ECB(key, 8 zero bytes) (the legacy KCV of
ANSI X9.24-1). AES: the first 5 bytes of AES-CMAC(key, 16 zero bytes), as
ANSI X9.24-1:2017 annex A recommends for AES keys. HMAC keys (TR-31
algorithm ``H``, e.g. the PAN hash key): the first 5 bytes of
HMAC-SHA-256(key, 16 zero bytes); X9.24 names no KCV for them, so this one
follows the AES rule's shape with the MAC the key is used for.
"""

from __future__ import annotations

import hashlib
import hmac

from iso_switch.security._ciphers import aes_cmac, tdes_ecb_encrypt

TDES_KCV_BYTES = 3
AES_KCV_BYTES = 5
HMAC_KCV_BYTES = 5


def tdes_kcv(key: bytes, length: int = TDES_KCV_BYTES) -> str:
    """Upper-case hex KCV of a DES/TDES key."""
    return tdes_ecb_encrypt(key, bytes(8))[:length].hex().upper()


def aes_kcv(key: bytes, length: int = AES_KCV_BYTES) -> str:
    """Upper-case hex CMAC-based KCV of an AES key."""
    return aes_cmac(key, bytes(16))[:length].hex().upper()


def hmac_kcv(key: bytes, length: int = HMAC_KCV_BYTES) -> str:
    """Upper-case hex KCV of an HMAC key."""
    return hmac.new(key, bytes(16), hashlib.sha256).digest()[:length].hex().upper()


def kcv(key: bytes, algorithm: str) -> str:
    """KCV for a TR-31 algorithm letter: ``T`` (TDES), ``D`` (DES), ``A``
    (AES), ``H`` (HMAC)."""
    if algorithm == "A":
        return aes_kcv(key)
    if algorithm == "H":
        return hmac_kcv(key)
    return tdes_kcv(key)
