"""A key entered as clear components, XORed together (split knowledge).

In a key ceremony two or three custodians each hold one component and its
key check value; none of them alone knows anything about the key. This
module checks what they enter and combines it, and refuses every case in
which the result would not be split knowledge after all:

- a component whose KCV differs from the one its custodian read out (named
  by its number, never by its value, which is secret);
- a component without key bits (all zero) or two components alike: XORing
  them contributes nothing, so the key is what the other custodian holds;
- a combined key without key bits or equal to one of the components (three
  components where two cancel out), or, for TDES, one with two like 8-byte
  parts in a row (it would be single DES).

TDES keys compare on their key bits only (the low bit of each byte is the
DES parity bit, which DES ignores), and the combined key is stored with
odd parity, as X9.24 wants keys and as most HSMs set them after an XOR:
the KCV does not change by it. AES keys are used as entered. HMAC keys are
not taken as components.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from itertools import pairwise

from iso_switch.security.errors import KeyStoreError
from iso_switch.security.kcv import kcv

COMPONENTS_MIN = 2
COMPONENTS_MAX = 3
COMPONENT_BYTES = {"T": (16, 24), "A": (16, 24, 32)}
_KEY_BITS = 0xFE  # per TDES byte: the seven key bits, not the parity bit


class ComponentError(KeyStoreError):
    """Components that cannot make a key; the message names the component
    by its number (1, 2, 3), never its value."""


def odd_parity(key: bytes) -> bytes:
    """``key`` with the low bit of every byte set so each byte has an odd
    number of one-bits (DES ignores that bit: the key is the same key)."""
    return bytes((b & _KEY_BITS) | (1 - (b & _KEY_BITS).bit_count() % 2) for b in key)


def _key_bits(key: bytes, algorithm: str) -> bytes:
    return bytes(b & _KEY_BITS for b in key) if algorithm == "T" else key


def _xor(parts: Sequence[bytes]) -> bytes:
    value = 0
    for part in parts:
        value ^= int.from_bytes(part, "big")
    return value.to_bytes(len(parts[0]), "big")


def check_component(number: int, component: bytes, expected_kcv: str, algorithm: str) -> None:
    """One component against the KCV its custodian gave, before any other
    is asked for (a ceremony stops at the first wrong entry)."""
    sizes = COMPONENT_BYTES.get(algorithm)
    if sizes is None:
        raise ComponentError("components make TDES ('T') or AES ('A') keys only")
    if len(component) not in sizes:
        raise ComponentError(f"component {number} has {len(component)} bytes: a "
                             f"{'TDES' if algorithm == 'T' else 'AES'} key has "
                             + " or ".join(str(size) for size in sizes))
    if not any(_key_bits(component, algorithm)):
        raise ComponentError(f"component {number} has no key bits (all zero)")
    if not hmac.compare_digest(kcv(component, algorithm), expected_kcv.strip().upper()):
        raise ComponentError(f"component {number} does not match its KCV: check what was "
                             "entered (nothing was stored)")


def combine_components(components: Sequence[bytes], kcvs: Sequence[str],
                       algorithm: str) -> bytes:
    """The key the components XOR to, each checked against its KCV first;
    :class:`ComponentError` for anything that is not split knowledge."""
    if not COMPONENTS_MIN <= len(components) <= COMPONENTS_MAX:
        raise ComponentError(f"a key takes {COMPONENTS_MIN} or {COMPONENTS_MAX} components")
    if len(kcvs) != len(components):
        raise ComponentError("every component needs its KCV")
    for number, (component, expected) in enumerate(zip(components, kcvs, strict=True), 1):
        check_component(number, component, expected, algorithm)
    if len({len(component) for component in components}) != 1:
        raise ComponentError("the components differ in length")
    bits = [_key_bits(component, algorithm) for component in components]
    for later in range(1, len(bits)):
        for earlier in range(later):
            if hmac.compare_digest(bits[earlier], bits[later]):
                raise ComponentError(f"components {earlier + 1} and {later + 1} are alike: "
                                     "that is not split knowledge")
    key = _xor(components)
    combined = _key_bits(key, algorithm)
    if not any(combined) or any(hmac.compare_digest(combined, b) for b in bits):
        raise ComponentError("the components cancel out: the combined key would be known "
                             "to one custodian alone")
    if algorithm == "T":
        thirds = [combined[i:i + 8] for i in range(0, len(combined), 8)]
        if any(hmac.compare_digest(a, b) for a, b in pairwise(thirds)):
            raise ComponentError("the combined key has two like parts in a row: it is "
                                 "single DES")
        return odd_parity(key)
    return key


__all__ = ["COMPONENTS_MAX", "COMPONENTS_MIN", "ComponentError", "check_component",
           "combine_components", "odd_parity"]
