"""Sealing of cardholder fields for items kept to be sent later (sans-I/O).

A store-and-forward item must rebuild a message carrying DE2 (and DE14 or
DE35 where needed) long after the request, perhaps after a restart, yet the
ledger may hold neither the clear values nor the key. The caller seals the
fields here and hands the ledger an opaque blob.

Blob layout (version 1)::

    0x01 | n | key id (n ASCII bytes: the key's KCV) | nonce (12) | AES-256-GCM

The associated data covers the header and the item's identity (issuer,
transaction group, kind), so a blob copied onto another item, or a header
edited to name another key, does not open. The key id lets a sealer that
holds the current key and its predecessors open old blobs after a rotation,
and refuse clearly (naming only the KCV) one sealed under a key it lacks.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from iso_switch.security import tr31
from iso_switch.security.errors import SecurityError
from iso_switch.security.kcv import aes_kcv
from iso_switch.security.keystore import KeyStore

SEAL_VERSION = 1
NONCE_BYTES = 12
AES_256_KEY_BYTES = 32
_AAD_LABEL = b"iso-switch saf"


class SealError(SecurityError):
    """A blob that does not open: unknown version, a key this sealer does not
    hold, another item's blob, or an edited one. The text names at most the
    key's KCV and the item's identity, never a field's value."""


def _aad(header: bytes, issuer_id: str, txn_group: str, kind: str) -> bytes:
    # JSON keeps the parts unambiguous whatever characters the ids hold.
    identity = json.dumps([issuer_id, txn_group, kind], separators=(",", ":"))
    return _AAD_LABEL + header + identity.encode("utf-8")


def _header(key_id: str) -> bytes:
    raw_id = key_id.encode("ascii")
    return bytes((SEAL_VERSION, len(raw_id))) + raw_id


class CardholderSealer:
    """AES-256-GCM over a mapping of cardholder fields, bound to one SAF item.

    Seals under the current key; opens under it or any older key given, chosen
    by the KCV in the blob's header. Its repr names the KCVs, never a key.
    """

    __slots__ = ("_aeads", "key_id")

    def __init__(self, key: bytes, *, older_keys: tuple[bytes, ...] = ()) -> None:
        for candidate in (key, *older_keys):
            if len(candidate) != AES_256_KEY_BYTES:
                raise SealError("a cardholder sealing key must be an AES-256 key")
        self.key_id = aes_kcv(key)
        self._aeads = {aes_kcv(k): AESGCM(k) for k in (*older_keys, key)}

    def __repr__(self) -> str:
        older = sorted(k for k in self._aeads if k != self.key_id)
        return f"CardholderSealer(key_kcv={self.key_id!r}, older_kcvs={older!r})"

    @classmethod
    def from_store(cls, store: KeyStore, name: str,
                   older_names: tuple[str, ...] = ()) -> CardholderSealer:
        """The sealer over the store's key ``name`` (AES-256, usage D0, allowed
        to encrypt and decrypt); ``older_names`` only need to decrypt."""
        usages = (tr31.USAGE_DATA_ENCRYPTION,)
        try:
            key = store.key_for(name, usages, tr31.MODE_ENCRYPT)
            store.key_for(name, usages, tr31.MODE_DECRYPT)
            older = tuple(store.key_for(n, usages, tr31.MODE_DECRYPT) for n in older_names)
        except SecurityError as exc:
            raise SealError(f"key {name!r} cannot seal cardholder data: {exc}") from None
        for key_name in (name, *older_names):
            if store.info(key_name).algorithm != "A":
                raise SealError(f"key {key_name!r} cannot seal cardholder data: "
                                "it must be AES-256")
        return cls(key, older_keys=older)

    def seal(self, fields: Mapping[str, str], *, issuer_id: str, txn_group: str,
             kind: str) -> bytes:
        """The blob of ``fields`` (data element number to value) for one item."""
        header = _header(self.key_id)
        clear = json.dumps(dict(fields), separators=(",", ":"), sort_keys=True)
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._aeads[self.key_id].encrypt(
            nonce, clear.encode("utf-8"), _aad(header, issuer_id, txn_group, kind))
        return header + nonce + sealed

    def open(self, blob: bytes, *, issuer_id: str, txn_group: str,
             kind: str) -> dict[str, str]:
        """The fields sealed in ``blob`` for this item; :class:`SealError` if
        the blob is not this item's, was edited, or its key is not held."""
        where = f"the sealed fields of {kind} item {txn_group!r} for issuer {issuer_id!r}"
        if len(blob) < 2 or blob[0] != SEAL_VERSION:
            raise SealError(f"{where} have an unknown format version")
        id_end = 2 + blob[1]
        try:
            key_id = blob[2:id_end].decode("ascii")
        except UnicodeDecodeError:
            raise SealError(f"{where} have a damaged header") from None
        aead = self._aeads.get(key_id)
        if aead is None:
            raise SealError(f"{where} are sealed under key KCV {key_id!r}, which this "
                            f"sealer does not hold (it holds {sorted(self._aeads)!r})")
        nonce = blob[id_end:id_end + NONCE_BYTES]
        try:
            clear = aead.decrypt(nonce, blob[id_end + NONCE_BYTES:],
                                 _aad(blob[:id_end], issuer_id, txn_group, kind))
            fields = json.loads(clear.decode("utf-8"))
        except (InvalidTag, ValueError):
            raise SealError(f"{where} fail their authentication (another item's "
                            "blob, or an edited one)") from None
        if not isinstance(fields, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in fields.items()):
            raise SealError(f"{where} do not hold a mapping of fields")
        return fields


__all__ = ["SEAL_VERSION", "CardholderSealer", "SealError"]
