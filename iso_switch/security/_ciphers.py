"""Block cipher primitives from ``cryptography``, with cached cipher contexts.

Creating a cipher context costs about 3 µs (OpenSSL fetches and initialises
the algorithm); encrypting one block with an existing ECB context costs
about 0.3 µs. ECB contexts hold no chaining state, so one context per key
can serve every later ECB call with that key: they are kept in bounded LRU
caches (:data:`ECB_CONTEXT_CACHE_SIZE` entries each for TDES encrypt, TDES
decrypt, AES encrypt and AES decrypt; an OpenSSL context with its key
schedule is roughly 1 KiB, so at most about 16 MiB in all). CBC contexts
carry chaining state and are made per call.

A context must not be used by two OS threads at once, and the switch does
crypto on two (MACs on the trio thread, PIN verification in the ledger
writer's thread), so every thread gets its own caches (``threading.local``):
the bound above holds per thread.

TDES keys are always expanded to three-key form (K1 K2 K1) before they
reach ``cryptography``, which deprecates two-key TDES; a single-DES key K
becomes K K K, which *is* single DES.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

ECB_CONTEXT_CACHE_SIZE = 4096
DES_BLOCK_BYTES = 8
AES_BLOCK_BYTES = 16
# ECB is what PIN blocks, KCVs and key derivation are defined with: one block at a time.
_ECB = modes.ECB()  # noqa: S305
# Mode objects are immutable: one zero-IV CBC mode serves every CBC-MAC.
_CBC_ZERO_IV = modes.CBC(bytes(8))


def tdes_key24(key: bytes) -> bytes:
    """8, 16 or 24-byte DES/TDES key as the 24-byte three-key form."""
    size = len(key)
    if size == 16:
        return key + key[:8]
    if size == 24:
        return key
    if size == 8:
        return key * 3
    raise ValueError("a TDES key has 8, 16 or 24 bytes")


class _ContextCaches:
    """One thread's ECB contexts, one bounded LRU per cipher and direction."""

    def __init__(self) -> None:
        size = ECB_CONTEXT_CACHE_SIZE
        self.tdes_encryptor = functools.lru_cache(maxsize=size)(
            lambda key24: Cipher(TripleDES(key24), _ECB).encryptor())
        self.tdes_decryptor = functools.lru_cache(maxsize=size)(
            lambda key24: Cipher(TripleDES(key24), _ECB).decryptor())
        self.aes_encryptor = functools.lru_cache(maxsize=size)(
            lambda key: Cipher(algorithms.AES(key), _ECB).encryptor())
        self.aes_decryptor = functools.lru_cache(maxsize=size)(
            lambda key: Cipher(algorithms.AES(key), _ECB).decryptor())

    def all(self) -> dict[str, Any]:
        return {
            "tdes_encrypt": self.tdes_encryptor,
            "tdes_decrypt": self.tdes_decryptor,
            "aes_encrypt": self.aes_encryptor,
            "aes_decrypt": self.aes_decryptor,
        }


_local = threading.local()


def _caches() -> _ContextCaches:
    caches: _ContextCaches | None = getattr(_local, "caches", None)
    if caches is None:
        caches = _local.caches = _ContextCaches()
    return caches


def _tdes_ecb_encryptor(key24: bytes) -> Any:
    return _caches().tdes_encryptor(key24)


def _tdes_ecb_decryptor(key24: bytes) -> Any:
    return _caches().tdes_decryptor(key24)


def _aes_ecb_encryptor(key: bytes) -> Any:
    return _caches().aes_encryptor(key)


def _aes_ecb_decryptor(key: bytes) -> Any:
    return _caches().aes_decryptor(key)


def tdes_ecb_encrypt(key: bytes, data: bytes) -> bytes:
    """TDES-ECB (single DES for an 8-byte key); ``data`` whole blocks."""
    result: bytes = _tdes_ecb_encryptor(tdes_key24(key)).update(data)
    return result


def tdes_ecb_decrypt(key: bytes, data: bytes) -> bytes:
    result: bytes = _tdes_ecb_decryptor(tdes_key24(key)).update(data)
    return result


def des_ecb_encrypt_uncached(key8: bytes, data: bytes) -> bytes:
    """Single DES for one-off keys (DUKPT intermediate keys are each used
    once), kept out of the context caches so they do not evict hot keys."""
    result: bytes = Cipher(TripleDES(key8 * 3), _ECB).encryptor().update(data)
    return result


def tdes_ecb_encrypt_uncached(key: bytes, data: bytes) -> bytes:
    """TDES-ECB for a one-off key (a DUKPT working key): no cache entry."""
    result: bytes = Cipher(TripleDES(tdes_key24(key)), _ECB).encryptor().update(data)
    return result


def tdes_ecb_decrypt_uncached(key: bytes, data: bytes) -> bytes:
    result: bytes = Cipher(TripleDES(tdes_key24(key)), _ECB).decryptor().update(data)
    return result


def des_cbc_mac_chain(key8: bytes, data: bytes | memoryview) -> bytes:
    """Last block of single-DES CBC encryption of ``data`` with a zero IV."""
    result: bytes = Cipher(TripleDES(key8 * 3), _CBC_ZERO_IV).encryptor().update(data)
    return result[-8:]


def tdes_cbc_encrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    encryptor = Cipher(TripleDES(tdes_key24(key)), modes.CBC(iv)).encryptor()
    result: bytes = encryptor.update(data)
    return result


def tdes_cbc_decrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    decryptor = Cipher(TripleDES(tdes_key24(key)), modes.CBC(iv)).decryptor()
    result: bytes = decryptor.update(data)
    return result


def aes_ecb_encrypt(key: bytes, data: bytes) -> bytes:
    result: bytes = _aes_ecb_encryptor(key).update(data)
    return result


def aes_ecb_decrypt(key: bytes, data: bytes) -> bytes:
    result: bytes = _aes_ecb_decryptor(key).update(data)
    return result


def aes_cbc_encrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    result: bytes = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor().update(data)
    return result


def aes_cbc_decrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    result: bytes = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor().update(data)
    return result


def aes_cmac(key: bytes, data: bytes) -> bytes:
    """AES-CMAC (NIST SP 800-38B, RFC 4493), full 16 bytes."""
    mac = CMAC(algorithms.AES(key))
    mac.update(data)
    return mac.finalize()


def tdes_cmac(key: bytes, data: bytes) -> bytes:
    """TDES-CMAC (NIST SP 800-38B with the 64-bit block), full 8 bytes."""
    mac = CMAC(TripleDES(tdes_key24(key)))
    mac.update(data)
    return mac.finalize()


def xor_bytes(left: bytes, right: bytes) -> bytes:
    """XOR of two equal-length byte strings."""
    size = len(left)
    value = int.from_bytes(left, "big") ^ int.from_bytes(right, "big")
    return value.to_bytes(size, "big")


def cache_info() -> dict[str, Any]:
    """Occupancy of this thread's context caches (for the benchmark's memory note)."""
    return {name: cache.cache_info() for name, cache in _caches().all().items()}


def clear_caches() -> None:
    """Drop this thread's cached contexts (and with them the cached keys)."""
    for cache in _caches().all().values():
        cache.cache_clear()
