"""Sealing and masking of a trace's protected fields (sans-I/O).

Sealed fields can be opened again with the key store's trace key (replay
needs them); masked ones cannot be restored by anyone.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from iso_switch.codec.masking import MASK_CHAR, mask_pan, mask_track2
from iso_switch.security import tr31
from iso_switch.security.errors import SecurityError
from iso_switch.security.keystore import KeyStore
from iso_switch.trace.errors import TraceError

TRACE_KEY_NAME = "trace"
# Fields that never reach a trace in clear: PAN, expiry, track 2 / 3 / 1,
# PIN block, chip data (holds track 2 equivalent and cryptograms), and the
# account numbers of transfers (they look like PANs and identify a person).
PROTECTED_FIELDS = frozenset({"2", "14", "35", "36", "45", "52", "55", "102", "103"})
_PAN_FIELDS = frozenset({"2", "102", "103"})
_TRACK2_FIELDS = frozenset({"35"})
TRACE_ID_BYTES = 8
NONCE_BYTES = 12
AES_256_KEY_BYTES = 32


class FieldSealer:
    """AES-256-GCM per field under the trace key. Its repr shows the trace
    id, never the key."""

    __slots__ = ("_aead", "trace_id")

    def __init__(self, key: bytes, trace_id: str) -> None:
        if len(key) != AES_256_KEY_BYTES:
            raise TraceError("the trace key must be an AES-256 key")
        self._aead = AESGCM(key)
        self.trace_id = trace_id

    def __repr__(self) -> str:
        return f"FieldSealer(trace_id={self.trace_id!r})"

    def _aad(self, field_id: str) -> bytes:
        return f"iso-switch trace {self.trace_id} field {field_id}".encode("ascii")

    def seal(self, field_id: str, value: str) -> str:
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, value.encode("utf-8"), self._aad(field_id))
        return base64.b64encode(nonce + sealed).decode("ascii")

    def open(self, field_id: str, token: str) -> str:
        try:
            raw = base64.b64decode(token, validate=True)
            clear = self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:],
                                       self._aad(field_id))
            return clear.decode("utf-8")
        except (binascii.Error, ValueError, InvalidTag, UnicodeDecodeError):
            raise TraceError(f"field {field_id} of trace {self.trace_id} fails its "
                             "authentication (wrong trace key, or an edited trace)") from None

    def for_trace(self, trace_id: str) -> FieldSealer:
        """The same key for another recording (a file may hold several)."""
        other = object.__new__(FieldSealer)
        other._aead = self._aead
        other.trace_id = trace_id
        return other


def mask_value(field_id: str, value: str) -> str:
    """What a masked trace keeps of a protected field: a PAN's first 6 and
    last 4, track 2's masked PAN, nothing of the rest but its length."""
    if field_id in _PAN_FIELDS:
        return mask_pan(value)
    if field_id in _TRACK2_FIELDS:
        return mask_track2(value)
    return MASK_CHAR * len(value)


@dataclass(frozen=True, slots=True)
class Protected:
    """A message split for the trace: clear fields, sealed fields, and the
    ids of fields that were masked (their masked value is in ``clear``)."""

    clear: dict[str, str]
    sealed: dict[str, str]
    masked: tuple[str, ...]


def protect(fields: Mapping[str, str], sealer: FieldSealer | None) -> Protected:
    """Seal (``sealer`` given) or mask (``None``) every protected field."""
    clear: dict[str, str] = {}
    sealed: dict[str, str] = {}
    masked: list[str] = []
    for key, value in fields.items():
        if key not in PROTECTED_FIELDS:
            clear[key] = value
        elif sealer is not None:
            sealed[key] = sealer.seal(key, value)
        else:
            clear[key] = mask_value(key, value)
            masked.append(key)
    return Protected(clear, sealed, tuple(masked))


def trace_key(store: KeyStore) -> tuple[str, bytes, str]:
    """``(name, key, kcv)`` of the trace key: the key named
    :data:`TRACE_KEY_NAME`, else the store's only AES data key (D0)."""
    if TRACE_KEY_NAME in store:
        name = TRACE_KEY_NAME
    else:
        names = [n for n in store.names_with_usage(tr31.USAGE_DATA_ENCRYPTION)
                 if store.info(n).algorithm == "A"]
        if len(names) != 1:
            raise TraceError(
                "no trace key in the key store: create one with `iso-switch keys generate "
                f"{TRACE_KEY_NAME} --usage D0 --algorithm A --length 32 --mode B`, or set "
                "trace.masked = true"
            )
        name = names[0]
    try:
        key = store.key_for(name, (tr31.USAGE_DATA_ENCRYPTION,), tr31.MODE_ENCRYPT)
        store.key_for(name, (tr31.USAGE_DATA_ENCRYPTION,), tr31.MODE_DECRYPT)
    except SecurityError as exc:
        raise TraceError(f"key {name!r} cannot serve as the trace key: {exc}") from None
    if len(key) != AES_256_KEY_BYTES or store.info(name).algorithm != "A":
        raise TraceError(f"key {name!r} cannot serve as the trace key: it must be AES-256")
    return name, key, store.info(name).kcv


def new_trace_id() -> str:
    """A fresh random trace id (16 hex characters)."""
    return secrets.token_hex(TRACE_ID_BYTES)


def sealer_from_store(store: KeyStore, trace_id: str | None = None
                      ) -> tuple[FieldSealer, str, str]:
    """``(sealer, key name, key kcv)`` over the store's trace key."""
    name, key, kcv = trace_key(store)
    return FieldSealer(key, trace_id or new_trace_id()), name, kcv


__all__ = [
    "PROTECTED_FIELDS",
    "TRACE_KEY_NAME",
    "FieldSealer",
    "Protected",
    "mask_value",
    "new_trace_id",
    "protect",
    "sealer_from_store",
    "trace_key",
]
