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
from dataclasses import dataclass

from iso_switch.security.errors import KsnError
from iso_switch.security.keystore import KeyInfo
from iso_switch.security.ksn import Ksn, parse_ksn
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

    # --- DUKPT: the terminal side of interface.md section 4 -----------------

    @abc.abstractmethod
    def check_ksn(self, ksn: str) -> Ksn:
        """Parse ``ksn`` and check its key set is known. Raises
        :class:`KsnError` when malformed, unknown, or its counter has too
        many one-bits (exhausted). Does not check replay (that is state the
        ledger commits: see :func:`check_replay`)."""

    @abc.abstractmethod
    def device_allowed(self, ksn: Ksn, terminal_id: str) -> bool:
        """Whether this device may speak for ``terminal_id``. True when no
        device-to-terminal binding is configured (the default)."""

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
    ) -> bool:
        """Decrypt the ISO 9564 format 0 block under the DUKPT PIN key of
        ``ksn``, check it against ``pan`` and verify the PIN by PVV or IBM
        3624 offset. ``False`` for a wrong PIN *or* a block that does not
        decode (wrong PAN, corrupted); raises :class:`KsnError` for an
        unusable KSN. Never returns or logs the PIN."""

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
    """In-process :class:`Hsm` over a key store (filled in by the next commit)."""
