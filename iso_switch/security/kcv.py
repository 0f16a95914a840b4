"""Key check values: a few public bytes that identify a key without
revealing it, so operators can compare keys across systems.

TDES: the first 3 bytes of TDES-ECB(key, 8 zero bytes) (the legacy KCV of
ANSI X9.24-1). AES: the first 5 bytes of AES-CMAC(key, 16 zero bytes), as
ANSI X9.24-1:2017 annex A recommends for AES keys.
"""

from __future__ import annotations

from iso_switch.security._ciphers import aes_cmac, tdes_ecb_encrypt

TDES_KCV_BYTES = 3
AES_KCV_BYTES = 5


def tdes_kcv(key: bytes, length: int = TDES_KCV_BYTES) -> str:
    """Upper-case hex KCV of a DES/TDES key."""
    return tdes_ecb_encrypt(key, bytes(8))[:length].hex().upper()


def aes_kcv(key: bytes, length: int = AES_KCV_BYTES) -> str:
    """Upper-case hex CMAC-based KCV of an AES key."""
    return aes_cmac(key, bytes(16))[:length].hex().upper()


def kcv(key: bytes, algorithm: str) -> str:
    """KCV for a TR-31 algorithm letter: ``T`` (TDES), ``D`` (DES), ``A`` (AES)."""
    return aes_kcv(key) if algorithm == "A" else tdes_kcv(key)
