"""The operations a switch asks a hardware security module for.

The switch never handles a clear key or a clear PIN outside this interface:
the server and the issuer call an :class:`Hsm`, and :class:`SoftwareHsm`
serves it in-process from a :class:`~iso_switch.security.keystore.KeyStore`.
A network HSM (Thales payShield, Futurex, AWS Payment Cryptography) can be
added later behind the same methods, which is why every method takes and
returns only things an HSM would: KSNs, encrypted PIN blocks, MACs, key
names, TR-31 key blocks and key check values.

Failures of the remote side are answers, not exceptions, where the caller
must answer anyway: ``verify_request_mac`` returns ``False`` for a bad MAC,
a malformed KSN or an unknown key set (all ``63``). Methods that produce
something raise :class:`KsnError` when they cannot.
"""

from __future__ import annotations

import abc
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from iso_switch.security import tr31
from iso_switch.security._ciphers import tdes_ecb_decrypt_uncached, tdes_ecb_encrypt
from iso_switch.security.dukpt import PREFIX_CACHE_ENTRIES, DukptDeriver, DukptKeys
from iso_switch.security.errors import KeyStoreError, KsnError, PinBlockError, SecurityError
from iso_switch.security.keystore import KeyInfo, KeyStore, MasterKey, RetiredBdk
from iso_switch.security.ksn import Ksn, parse_ksn, tdes_ksn_bytes
from iso_switch.security.mac import (
    RETAIL_MAC_BYTES,
    cmac_aes,
    retail_mac,
    verify_cmac_aes,
    verify_retail_mac,
)
from iso_switch.security.pinblock import FORMAT_0, FORMAT_4, decrypt_pin_block, translate_pin_block
from iso_switch.security.pinverify import (
    ibm3624_offset,
    validation_data_from_pan,
    verify_ibm3624_offset,
    verify_visa_pvv,
    visa_pvv,
)
from iso_switch.security.replay import (
    REPLAY_WINDOW_COUNTERS,
    ReplayState,
    ReplayWindow,
    check_replay,
)

__all__ = [
    "REPLAY_WINDOW_COUNTERS",
    "Hsm",
    "KeyInfo",
    "Ksn",
    "KsnError",
    "PinVerificationData",
    "ReplayState",
    "ReplayWindow",
    "SoftwareHsm",
    "check_replay",
    "parse_ksn",
]

PIN_METHOD_PVV = "pvv"
PIN_METHOD_IBM3624 = "ibm3624"
PIN_METHODS = (PIN_METHOD_PVV, PIN_METHOD_IBM3624)
DEFAULT_PVKI = 1
# Derived working keys per KSN: a request's MAC check, PIN check and
# response MAC share one derivation. Entry: the KSN string and three 16-byte
# keys, about 450 bytes, so about 2 MiB at this bound.
KSN_CACHE_ENTRIES = 4096
PIN_BLOCK_BYTES = 8
#: Devices per rotated BDK whose first authentication under it is logged;
#: past this the set starts again (a device may then be logged twice).
GRACE_LOGGED_DEVICES_MAX = 10_000
_UNSET = object()  # the zone PIN key's name, not yet looked up
_PVK_USAGE = {PIN_METHOD_PVV: tr31.USAGE_PVK_VISA, PIN_METHOD_IBM3624: tr31.USAGE_PVK_IBM3624}


logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _GraceBdk:
    """A rotated BDK the HSM still derives from, until ``until_s`` (epoch
    seconds), and the devices already logged as using it."""

    bdk: RetiredBdk
    deriver: DukptDeriver
    until_s: float
    logged: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class PinVerificationData:
    """What an issuer stores per card to verify a PIN later; holds no PIN.

    ``method``: ``'pvv'`` (Visa PIN verification value) or ``'ibm3624'``
    (IBM 3624 offset). ``pvki``: PIN verification key index (0-9).
    ``value``: the 4-digit PVV or the offset (as many digits as the PIN).
    ``key_name``: the key store name of the PIN verification key. Safe to
    persist and to log: without the PVK it does not reveal the PIN any
    faster than guessing.
    """

    method: str
    pvki: int
    value: str
    key_name: str


class Hsm(abc.ABC):
    """Operations a switch asks an HSM for. All methods are thread-safe in
    the sense that they hold no per-call state; implementations may cache."""

    # --- DUKPT: the terminal side of docs/interface.md section 4 -----------------

    @abc.abstractmethod
    def check_ksn(self, ksn: str) -> Ksn:
        """Parse ``ksn`` and check its key set is known. Raises
        :class:`KsnError` when malformed, unknown, or its counter has too
        many one-bits (exhausted). Does not check replay (that is state the
        ledger commits: see :func:`check_replay`)."""

    @abc.abstractmethod
    def verify_request_mac(self, ksn: str, data: bytes, mac: bytes) -> bool:
        """TDES DUKPT MAC-request key of ``ksn``, ISO 9797-1 algorithm 3,
        padding method 1, full 8 bytes, compared in constant time. ``False``
        (never raises) for a wrong MAC, a malformed KSN or an unknown key
        set."""

    @abc.abstractmethod
    def generate_response_mac(self, ksn: str, data: bytes) -> bytes:
        """8-byte retail MAC under the MAC-response key variant of ``ksn``.
        Raises :class:`KsnError` when the KSN is unusable."""

    @abc.abstractmethod
    def verify_pin(
        self, ksn: str, encrypted_pin_block: bytes, pan: str, verification: PinVerificationData
    ) -> bool | None:
        """Decrypt the ISO 9564 format 0 block under the DUKPT PIN key of
        ``ksn``, check it against ``pan`` and verify the PIN by PVV or IBM
        3624 offset. ``False`` for a wrong PIN, ``None`` for a block that
        does not decode as format 0 (forged, corrupted, wrong key or PAN:
        not a wrong try, so a forger cannot lock a card); raises
        :class:`KsnError` for an
        unusable KSN. Never returns or logs the PIN."""

    def rewrap_pin_block(self, ksn: str, encrypted_pin_block_hex: str) -> bytes | None:
        """PIN translation at the edge: the block under the DUKPT PIN key of
        ``ksn`` re-encrypted, unchanged inside, under the zone PIN key, so
        the issuer side verifies it under one long-lived key instead of
        deriving the terminal's keys again. ``None`` when there is no zone
        PIN key or the block or KSN is unusable: the caller then verifies
        under the DUKPT key (:meth:`verify_pin`), which answers exactly as
        before. This default has no zone key."""
        return None

    def verify_zone_pin(
        self, zone_pin_block: bytes, pan: str, verification: PinVerificationData
    ) -> bool | None:
        """:meth:`verify_pin` for a block from :meth:`rewrap_pin_block`."""
        raise NotImplementedError("this HSM has no zone PIN key")

    @abc.abstractmethod
    def make_pin_verification_data(
        self, pan: str, pin: str, method: str = PIN_METHOD_PVV
    ) -> PinVerificationData:
        """Verification data for seeding cards and an operator's set-PIN,
        under the store's PIN verification key. The result holds no PIN."""

    @abc.abstractmethod
    def translate_pin(
        self,
        ksn: str,
        encrypted_pin_block: bytes,
        pan: str,
        dest_key_name: str,
        dest_format: int = 0,
    ) -> bytes:
        """Re-encrypt a DUKPT-encrypted format 0 block under the store key
        ``dest_key_name`` (usage P0) in ``dest_format`` (0, 1, 3, or 4 for
        an AES key). Translation from 0 to 1 is refused (it would drop the
        PAN binding). Raises :class:`PinBlockError` / :class:`KsnError`."""

    # --- MACs under stored keys -------------------------------------------

    @abc.abstractmethod
    def generate_mac(self, key_name: str, data: bytes) -> bytes:
        """Retail MAC (TDES key, usage M3) or AES-CMAC (AES key, usage M6)
        of ``data`` under a stored key; the key's usage picks the algorithm."""

    @abc.abstractmethod
    def verify_mac(self, key_name: str, data: bytes, mac: bytes) -> bool:
        """Constant-time check of a MAC made by :meth:`generate_mac`."""

    # --- key management -----------------------------------------------------

    @abc.abstractmethod
    def generate_key(
        self, name: str, usage: str, algorithm: str = "T", length: int = 16
    ) -> KeyInfo:
        """Create a random key (TR-31 ``usage`` such as ``B0``, ``P0``,
        ``M3``, ``V2``, ``K0``; ``algorithm`` ``T`` or ``A``), store it and
        return its info (with KCV, never the key)."""

    @abc.abstractmethod
    def import_key(self, name: str, key_block: str, kbpk_name: str) -> KeyInfo:
        """Import a TR-31 key block wrapped under the stored key
        ``kbpk_name`` (usage K0/K1). Raises :class:`KeyBlockError` when it
        fails its MAC; nothing is stored then."""

    @abc.abstractmethod
    def export_key(self, name: str, kbpk_name: str) -> str:
        """The stored key ``name`` as a TR-31 key block under ``kbpk_name``."""

    @abc.abstractmethod
    def key_info(self, name: str) -> KeyInfo:
        """Name, usage, algorithm, KCV and creation date of a stored key."""

    @abc.abstractmethod
    def list_keys(self) -> list[KeyInfo]:
        """All stored keys' info, sorted by name."""


class SoftwareHsm(Hsm):
    """The in-process :class:`Hsm`: keys from a :class:`KeyStore`, TDES
    DUKPT per key set with a per-device prefix cache (see
    :mod:`~iso_switch.security.dukpt`) and a bounded LRU of derived working
    keys per KSN (:data:`KSN_CACHE_ENTRIES`, about 2 MiB).

    Thread-safe: the switch verifies MACs on its trio thread and PINs in the
    ledger writer's thread with the same instance, so the KSN derived for the
    MAC is found again for the PIN. A lock guards the derivation caches;
    cipher contexts are per thread (see ``_ciphers``).
    """

    def __init__(
        self,
        key_store: KeyStore,
        *,
        pvk_names: Mapping[str, str] | None = None,
        ksn_cache_entries: int = KSN_CACHE_ENTRIES,
        prefix_cache_entries: int = PREFIX_CACHE_ENTRIES,
        bdk_grace_s: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``pvk_names`` maps ``'pvv'`` /
        ``'ibm3624'`` to the PIN verification key to use (default: the only
        V2 / V1 key in the store). ``bdk_grace_s``: how long after its
        rotation a BDK still serves the key set it had (0: not at all);
        ``clock`` gives epoch seconds (tests move it)."""
        self._store = key_store
        self._pvk_names = dict(pvk_names or {})
        self._derivers: dict[str, DukptDeriver] = {}
        self._ksn_cache: OrderedDict[str, DukptKeys] = OrderedDict()
        self._ksn_cache_entries = ksn_cache_entries
        self._lock = threading.Lock()
        self._prefix_cache_entries = prefix_cache_entries
        self._zone_pin_name: object = _UNSET
        self._grace: dict[str, _GraceBdk] = {}
        self._bdk_grace_s = bdk_grace_s
        self._clock = clock

    @classmethod
    def from_bdks(
        cls, bdks: Mapping[str, bytes], *, pvk: bytes | None = None, **kwargs: object
    ) -> SoftwareHsm:
        """An HSM over an in-memory store holding the given BDKs (key set id
        -> 16-byte key) and optionally a PVK named ``pvk`` for both methods:
        for tests and simulators."""
        store = KeyStore(None, MasterKey(b"\x00" * 32, "in-memory test store"))
        for index, (key_set_id, bdk) in enumerate(sorted(bdks.items())):
            store.add(f"bdk-{index}", bdk, tr31.USAGE_BDK, "T", "X", key_set_id=key_set_id)
        if pvk is not None:
            store.add("pvk", pvk, tr31.USAGE_PVK_VISA, "T", "C")
            store.add("pvk-ibm3624", pvk, tr31.USAGE_PVK_IBM3624, "T", "C")
        return cls(store, **kwargs)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return (f"SoftwareHsm(key_sets={self._store.key_set_ids()}, "
                f"cached_ksns={len(self._ksn_cache)})")

    @property
    def key_store(self) -> KeyStore:
        return self._store

    @property
    def uses_demo_keys(self) -> bool:
        """True when the store is wrapped under the demo master key."""
        return self._store.uses_demo_master_key

    # --- DUKPT -------------------------------------------------------------

    def _current_deriver(self, key_set_id: str) -> DukptDeriver | None:
        """The deriver of the key set's current BDK (made once), or None."""
        bdk = self._store.bdk_for_key_set(key_set_id)
        if bdk is None:
            return None
        deriver = self._derivers[key_set_id] = DukptDeriver(bdk, self._prefix_cache_entries)
        return deriver

    def _grace_deriver(self, key_set_id: str) -> DukptDeriver:
        """The deriver of the rotated BDK that had this key set, while its
        grace period lasts. The key set identifier alone picks the key (a
        rotation always gives the new BDK another one), so a KSN is never
        tried under two keys: a forged one costs what it always did, and
        which BDK a MAC or PIN block authenticated under is never in doubt.
        The end is checked on every use, not when the deriver is made."""
        grace = self._grace.get(key_set_id)
        if grace is None:
            retired = self._store.retired_bdk(key_set_id)
            if retired is None:
                raise KsnError("no base derivation key for the KSN's key set")
            grace = _GraceBdk(retired, DukptDeriver(retired.key, self._prefix_cache_entries),
                              retired.retired_at.timestamp() + self._bdk_grace_s)
            self._grace[key_set_id] = grace
        if self._clock() >= grace.until_s:
            raise KsnError("the KSN's base derivation key was rotated and its grace period "
                           "is over")
        return grace.deriver

    def _deriver(self, key_set_id: str) -> DukptDeriver:
        return (self._derivers.get(key_set_id) or self._current_deriver(key_set_id)
                or self._grace_deriver(key_set_id))

    def check_ksn(self, ksn: str) -> Ksn:
        parsed = parse_ksn(ksn)
        with self._lock:
            self._deriver(parsed.key_set_id)
        return parsed

    def dukpt_keys(self, ksn: str) -> DukptKeys:
        """The working keys of ``ksn`` (cached). In-process callers only: a
        network HSM would never return them. Keys under a rotated BDK are
        not cached per KSN, so its grace period ends for every KSN at once
        (its deriver's prefix cache still makes a repeat cheap)."""
        with self._lock:
            cache = self._ksn_cache
            keys = cache.get(ksn)
            if keys is not None:
                cache.move_to_end(ksn)
                return keys
            raw = tdes_ksn_bytes(ksn)
            key_set_id = raw[:5].hex().upper()
            deriver = self._derivers.get(key_set_id) or self._current_deriver(key_set_id)
            if deriver is None:
                return self._grace_deriver(key_set_id).keys(raw)
            keys = deriver.keys(raw)
            cache[ksn] = keys
            if len(cache) > self._ksn_cache_entries:
                cache.popitem(last=False)
            return keys

    def _authenticated(self, ksn: str) -> None:
        """A MAC verified or a PIN block decoded under ``ksn``'s keys: when
        those came from a rotated BDK, log the device's first such use, so
        operators see which devices still need their new key (names, key
        version, KCV and KSN parts only)."""
        grace = self._grace.get(ksn[:10].upper())
        if grace is None:
            return
        device_id = parse_ksn(ksn).device_id
        if device_id in grace.logged:
            return
        if len(grace.logged) >= GRACE_LOGGED_DEVICES_MAX:
            grace.logged.clear()
        grace.logged.add(device_id)
        bdk = grace.bdk
        logger.info(
            "device %s of key set %s authenticated under the rotated BDK %s version %s "
            "(KCV %s) in its grace period, which ends %s: inject the new key",
            device_id, bdk.key_set_id, bdk.name, bdk.key_version, bdk.kcv,
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(grace.until_s)))

    def verify_request_mac(self, ksn: str, data: bytes, mac: bytes) -> bool:
        try:
            keys = self.dukpt_keys(ksn)
        except KsnError:
            return False
        if len(mac) != RETAIL_MAC_BYTES:
            return False
        if not verify_retail_mac(keys.mac_request, data, mac):
            return False
        if self._grace:  # only once a rotated BDK has been asked for
            self._authenticated(ksn)
        return True

    def generate_response_mac(self, ksn: str, data: bytes) -> bytes:
        return retail_mac(self.dukpt_keys(ksn).mac_response, data)

    def verify_pin(
        self, ksn: str, encrypted_pin_block: bytes, pan: str, verification: PinVerificationData
    ) -> bool | None:
        keys = self.dukpt_keys(ksn)
        try:
            pin = decrypt_pin_block(keys.pin, encrypted_pin_block, pan, FORMAT_0)
        except PinBlockError:
            return None
        if self._grace:
            self._authenticated(ksn)
        return self._check_pin(pan, pin, verification)

    def zone_pin_key_name(self) -> str | None:
        """The store's zone PIN key: its only TDES P0 key usable both to
        encrypt (rewrap) and to decrypt (verify); else none, and PIN blocks
        are verified under the terminals' DUKPT keys. An encrypt-only P0 key
        is a remote issuer's zone PIN key, which PIN blocks are only ever
        translated to, so it never counts here."""
        if self._zone_pin_name is _UNSET:
            names = [n for n in self._store.names_with_usage(tr31.USAGE_PIN_ENCRYPTION)
                     if self._store.info(n).algorithm == "T"
                     and self._store.info(n).mode_of_use != tr31.MODE_ENCRYPT]
            self._zone_pin_name = names[0] if len(names) == 1 else None
        return self._zone_pin_name  # type: ignore[return-value]

    def rewrap_pin_block(self, ksn: str, encrypted_pin_block_hex: str) -> bytes | None:
        name = self.zone_pin_key_name()
        if name is None or len(encrypted_pin_block_hex) != 2 * PIN_BLOCK_BYTES:
            return None
        try:
            block = bytes.fromhex(encrypted_pin_block_hex)
            keys = self.dukpt_keys(ksn)
            zone_key = self._store.key_for(name, (tr31.USAGE_PIN_ENCRYPTION,),
                                           tr31.MODE_ENCRYPT)
        except (ValueError, SecurityError, KeyStoreError):
            return None
        # The clear block lives only in this expression: never stored.
        return tdes_ecb_encrypt(zone_key, tdes_ecb_decrypt_uncached(keys.pin, block))

    def verify_zone_pin(
        self, zone_pin_block: bytes, pan: str, verification: PinVerificationData
    ) -> bool | None:
        name = self.zone_pin_key_name()
        if name is None:
            raise KeyStoreError("no zone PIN key in the key store")
        zone_key = self._store.key_for(name, (tr31.USAGE_PIN_ENCRYPTION,), tr31.MODE_DECRYPT)
        try:
            pin = decrypt_pin_block(zone_key, zone_pin_block, pan, FORMAT_0)
        except PinBlockError:
            return None
        return self._check_pin(pan, pin, verification)

    def _check_pin(self, pan: str, pin: str, verification: PinVerificationData) -> bool:
        method = verification.method
        if method not in _PVK_USAGE:
            return False
        pvk = self._store.key_for(verification.key_name, (_PVK_USAGE[method],), tr31.MODE_VERIFY)
        if method == PIN_METHOD_PVV:
            return verify_visa_pvv(pvk, pan, verification.pvki, pin, verification.value)
        return verify_ibm3624_offset(pvk, validation_data_from_pan(pan), pin, verification.value)

    def make_pin_verification_data(
        self, pan: str, pin: str, method: str = PIN_METHOD_PVV
    ) -> PinVerificationData:
        if method not in _PVK_USAGE:
            raise PinBlockError("PIN verification method must be 'pvv' or 'ibm3624'")
        name = self._pvk_name(method)
        pvk = self._store.key_for(name, (_PVK_USAGE[method],), tr31.MODE_GENERATE)
        if method == PIN_METHOD_PVV:
            value = visa_pvv(pvk, pan, DEFAULT_PVKI, pin)
            return PinVerificationData(method, DEFAULT_PVKI, value, name)
        value = ibm3624_offset(pvk, validation_data_from_pan(pan), pin)
        return PinVerificationData(method, 0, value, name)

    def _pvk_name(self, method: str) -> str:
        name = self._pvk_names.get(method)
        if name is not None:
            return name
        names = self._store.names_with_usage(_PVK_USAGE[method])
        if len(names) != 1:
            raise KeyStoreError(
                f"need exactly one {_PVK_USAGE[method]} key for {method} (found {len(names)}); "
                "name one in the configuration"
            )
        return names[0]

    def translate_pin(
        self,
        ksn: str,
        encrypted_pin_block: bytes,
        pan: str,
        dest_key_name: str,
        dest_format: int = 0,
    ) -> bytes:
        dest_key = self._store.key_for(
            dest_key_name, (tr31.USAGE_PIN_ENCRYPTION,), tr31.MODE_ENCRYPT
        )
        is_aes = self._store.info(dest_key_name).algorithm == "A"
        if is_aes != (dest_format == FORMAT_4):
            raise PinBlockError("format 4 needs an AES key; formats 0, 1, 3 a TDES key")
        return translate_pin_block(
            self.dukpt_keys(ksn).pin, encrypted_pin_block, FORMAT_0, dest_key, dest_format, pan
        )

    # --- MACs under stored keys -------------------------------------------

    def generate_mac(self, key_name: str, data: bytes) -> bytes:
        usage = self._store.info(key_name).usage
        key = self._store.key_for(
            key_name, (tr31.USAGE_MAC_ISO9797_ALG3, tr31.USAGE_MAC_CMAC), tr31.MODE_GENERATE
        )
        if usage == tr31.USAGE_MAC_ISO9797_ALG3:
            return retail_mac(key, data)
        return cmac_aes(key, data)

    def verify_mac(self, key_name: str, data: bytes, mac: bytes) -> bool:
        usage = self._store.info(key_name).usage
        key = self._store.key_for(
            key_name, (tr31.USAGE_MAC_ISO9797_ALG3, tr31.USAGE_MAC_CMAC), tr31.MODE_VERIFY
        )
        if usage == tr31.USAGE_MAC_ISO9797_ALG3:
            return verify_retail_mac(key, data, mac)
        return verify_cmac_aes(key, data, mac)

    # --- key management -----------------------------------------------------

    def generate_key(
        self, name: str, usage: str, algorithm: str = "T", length: int = 16
    ) -> KeyInfo:
        self._zone_pin_name = _UNSET  # a new P0 key may change the zone key
        return self._store.generate(name, usage, algorithm, length)

    def import_key(self, name: str, key_block: str, kbpk_name: str) -> KeyInfo:
        kbpk = self._store.key_for(kbpk_name, (tr31.USAGE_KEK, tr31.USAGE_KBPK), tr31.MODE_DECRYPT)
        self._zone_pin_name = _UNSET
        return self._store.import_block(name, key_block, kbpk)

    def export_key(self, name: str, kbpk_name: str) -> str:
        kbpk = self._store.key_for(kbpk_name, (tr31.USAGE_KEK, tr31.USAGE_KBPK), tr31.MODE_ENCRYPT)
        return self._store.export_block(name, kbpk)

    def key_info(self, name: str) -> KeyInfo:
        return self._store.info(name)

    def list_keys(self) -> list[KeyInfo]:
        return self._store.list_keys()
