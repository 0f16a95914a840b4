"""TDES DUKPT (ANSI X9.24-1:2009), host and terminal-simulator side.

A terminal holds an initial PIN encryption key (IPEK) derived from a base
derivation key (BDK) and its initial KSN; each transaction's key follows
from the IPEK by one non-reversible key generation step per one-bit of the
21-bit counter, from the most significant bit down. The host repeats that
derivation from the BDK.

Caching: consecutive counters of one device share all but their lowest
bits, so :class:`DukptDeriver` keeps the key of every counter *prefix* it
has computed (keyed by device + prefix) in a bounded LRU. A device's next
counter then costs one generation step (two single-DES encryptions)
instead of up to ten. Entry cost: a 16-byte key plus a tuple key and
dictionary slot, about 200 bytes, so the default
:data:`PREFIX_CACHE_ENTRIES` costs about 13 MiB at most.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from iso_switch.security._ciphers import des_ecb_encrypt_uncached, tdes_ecb_encrypt
from iso_switch.security.ksn import (
    TDES_COUNTER_BITS,
    TDES_COUNTER_MASK,
    TDES_COUNTER_ONE_BITS_MAX,
    Ksn,
    check_tdes_counter,
    tdes_ksn_bytes,
)

# X9.24-1 variant masks (XORed into the transaction key).
PIN_VARIANT = bytes.fromhex("00000000000000FF00000000000000FF")
MAC_REQUEST_VARIANT = bytes.fromhex("000000000000FF00000000000000FF00")
MAC_RESPONSE_VARIANT = bytes.fromhex("00000000FF00000000000000FF000000")
DATA_REQUEST_VARIANT = bytes.fromhex("0000000000FF00000000000000FF0000")
DATA_RESPONSE_VARIANT = bytes.fromhex("000000FF00000000000000FF00000000")
_PIN_VARIANT_INT = int.from_bytes(PIN_VARIANT, "big")
_MAC_REQUEST_VARIANT_INT = int.from_bytes(MAC_REQUEST_VARIANT, "big")
_MAC_RESPONSE_VARIANT_INT = int.from_bytes(MAC_RESPONSE_VARIANT, "big")
_KEY_MASK = bytes.fromhex("C0C0C0C000000000C0C0C0C000000000")
_HALF_MASK = 0xC0C0C0C000000000
_KSN_BITS = 80
PREFIX_CACHE_ENTRIES = 65536


def _xor16(key: bytes, mask: bytes) -> bytes:
    return (int.from_bytes(key, "big") ^ int.from_bytes(mask, "big")).to_bytes(16, "big")


def derive_ipek(bdk: bytes, ksn: bytes | str) -> bytes:
    """IPEK (X9.24-1 A.6): TDES of the KSN's leftmost 64 bits with the
    counter cleared, under the BDK (left half) and BDK XOR C0C0.. (right)."""
    raw = bytes.fromhex(ksn) if isinstance(ksn, str) else ksn
    if len(raw) != 10 or len(bdk) != 16:
        raise ValueError("IPEK derivation needs a 16-byte BDK and a 10-byte KSN")
    cleared = int.from_bytes(raw, "big") & ~TDES_COUNTER_MASK & ((1 << _KSN_BITS) - 1)
    register = (cleared >> 16).to_bytes(8, "big")
    return tdes_ecb_encrypt(bdk, register) + tdes_ecb_encrypt(_xor16(bdk, _KEY_MASK), register)


def _one_way(left: int, right: int, register: int) -> int:
    data = (register ^ right).to_bytes(8, "big")
    crypto = des_ecb_encrypt_uncached(left.to_bytes(8, "big"), data)
    return int.from_bytes(crypto, "big") ^ right


def _generate_key(key: int, register: int) -> int:
    """The non-reversible key generation process, on 128-bit ints."""
    left = key >> 64
    right = key & 0xFFFFFFFFFFFFFFFF
    new_right = _one_way(left, right, register)
    new_left = _one_way(left ^ _HALF_MASK, right ^ _HALF_MASK, register)
    return (new_left << 64) | new_right


def _register_base(ksn_bytes: bytes) -> int:
    """Rightmost 64 bits of the KSN with the counter cleared."""
    return int.from_bytes(ksn_bytes[2:], "big") & ~TDES_COUNTER_MASK


def derive_transaction_key_from_ipek(ipek: bytes, ksn: bytes | str) -> bytes:
    """Transaction key for the KSN's counter, from the IPEK (no cache)."""
    raw = bytes.fromhex(ksn) if isinstance(ksn, str) else ksn
    counter = int.from_bytes(raw[-3:], "big") & TDES_COUNTER_MASK
    register = _register_base(raw)
    key = int.from_bytes(ipek, "big")
    bit = 1 << (TDES_COUNTER_BITS - 1)
    while bit:
        if counter & bit:
            register |= bit
            key = _generate_key(key, register)
        bit >>= 1
    return key.to_bytes(16, "big")


def derive_transaction_key(bdk: bytes, ksn: bytes | str) -> bytes:
    """Transaction key from the BDK (what the host computes; no cache)."""
    raw = bytes.fromhex(ksn) if isinstance(ksn, str) else ksn
    return derive_transaction_key_from_ipek(derive_ipek(bdk, raw), raw)


def pin_key(transaction_key: bytes) -> bytes:
    return _xor16(transaction_key, PIN_VARIANT)


def mac_request_key(transaction_key: bytes) -> bytes:
    return _xor16(transaction_key, MAC_REQUEST_VARIANT)


def mac_response_key(transaction_key: bytes) -> bytes:
    return _xor16(transaction_key, MAC_RESPONSE_VARIANT)


def _data_key(variant_key: bytes) -> bytes:
    # X9.24-1:2009 A.4: the data variant is further encrypted under itself.
    return tdes_ecb_encrypt(variant_key, variant_key[:8]) + tdes_ecb_encrypt(
        variant_key, variant_key[8:]
    )


def data_request_key(transaction_key: bytes) -> bytes:
    return _data_key(_xor16(transaction_key, DATA_REQUEST_VARIANT))


def data_response_key(transaction_key: bytes) -> bytes:
    return _data_key(_xor16(transaction_key, DATA_RESPONSE_VARIANT))


@dataclass(frozen=True, slots=True)
class DukptKeys:
    """The working keys of one TDES DUKPT transaction. Repr shows no key."""

    pin: bytes = field(repr=False)
    mac_request: bytes = field(repr=False)
    mac_response: bytes = field(repr=False)

    @classmethod
    def from_transaction_key(cls, transaction_key: bytes | int) -> DukptKeys:
        key = (
            transaction_key
            if isinstance(transaction_key, int)
            else int.from_bytes(transaction_key, "big")
        )
        return cls(
            pin=(key ^ _PIN_VARIANT_INT).to_bytes(16, "big"),
            mac_request=(key ^ _MAC_REQUEST_VARIANT_INT).to_bytes(16, "big"),
            mac_response=(key ^ _MAC_RESPONSE_VARIANT_INT).to_bytes(16, "big"),
        )


class DukptDeriver:
    """Host-side TDES DUKPT for one BDK with a per-device prefix cache.

    Not thread-safe (an ``OrderedDict`` LRU without a lock). The BDK is held
    in memory, as any software HSM must; its repr shows nothing.
    """

    def __init__(self, bdk: bytes, cache_entries: int = PREFIX_CACHE_ENTRIES) -> None:
        if len(bdk) != 16:
            raise ValueError("a TDES BDK has 16 bytes")
        self._bdk = bdk
        self._cache: OrderedDict[tuple[int, int], int] = OrderedDict()
        self._cache_entries = cache_entries

    def __repr__(self) -> str:
        return f"DukptDeriver(cached_prefixes={len(self._cache)})"

    @property
    def cached_prefixes(self) -> int:
        return len(self._cache)

    def transaction_key(self, ksn: Ksn | str | bytes) -> bytes:
        return self._transaction_key_int(ksn).to_bytes(16, "big")

    def _transaction_key_int(self, ksn: Ksn | str | bytes) -> int:
        """Transaction key of a KSN (text, parsed, or its 10 bytes). Raises
        :class:`KsnError` for a counter no originator may use."""
        if isinstance(ksn, str):
            raw = tdes_ksn_bytes(ksn)
        elif isinstance(ksn, Ksn):
            raw = ksn.to_bytes()
        else:
            raw = ksn
        counter = int.from_bytes(raw[7:], "big") & TDES_COUNTER_MASK
        check_tdes_counter(counter)
        device = _register_base(raw)
        cache = self._cache
        # Strip low bits until a cached prefix (or the IPEK, prefix 0) is found.
        prefix = counter
        pending: list[int] = []
        key: int | None = None
        while True:
            cached = cache.get((device, prefix))
            if cached is not None:
                cache.move_to_end((device, prefix))
                key = cached
                break
            if prefix == 0:
                key = int.from_bytes(derive_ipek(self._bdk, raw), "big")
                self._remember((device, 0), key)
                break
            low = prefix & -prefix
            pending.append(low)
            prefix ^= low
        for bit in reversed(pending):
            prefix |= bit
            key = _generate_key(key, device | prefix)
            self._remember((device, prefix), key)
        return key

    def keys(self, ksn: Ksn | str | bytes) -> DukptKeys:
        return DukptKeys.from_transaction_key(self._transaction_key_int(ksn))

    def _remember(self, slot: tuple[int, int], key: int) -> None:
        cache = self._cache
        cache[slot] = key
        if len(cache) > self._cache_entries:
            cache.popitem(last=False)


class TerminalDukpt:
    """The originator side, for terminal simulators: holds an IPEK and its
    initial KSN and hands out each transaction's KSN and working keys,
    skipping counters with more than ten one-bits as X9.24-1 requires.

    (A real terminal keeps future keys instead of its IPEK; a simulator may
    simply re-derive.) Raises :class:`KsnError` once the key space is used up.
    """

    def __init__(self, ipek: bytes, initial_ksn: str, counter: int = 0) -> None:
        self._ipek = ipek
        raw = bytes.fromhex(initial_ksn)
        self._base = int.from_bytes(raw, "big") & ~TDES_COUNTER_MASK
        self._counter = counter

    @classmethod
    def from_bdk(cls, bdk: bytes, initial_ksn: str, counter: int = 0) -> TerminalDukpt:
        return cls(derive_ipek(bdk, initial_ksn), initial_ksn, counter)

    def __repr__(self) -> str:
        return f"TerminalDukpt(counter={self._counter})"

    def next_transaction(self) -> tuple[str, DukptKeys]:
        """The next usable KSN (20 hex characters) and its working keys."""
        counter = self._counter + 1
        while counter.bit_count() > TDES_COUNTER_ONE_BITS_MAX:
            counter += counter & -counter  # jump past the invalid run (X9.24-1 A.2)
        check_tdes_counter(counter)
        self._counter = counter
        ksn = (self._base | counter).to_bytes(10, "big")
        key = derive_transaction_key_from_ipek(self._ipek, ksn)
        return ksn.hex().upper(), DukptKeys.from_transaction_key(key)
