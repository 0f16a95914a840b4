"""The MAC rules of the terminal interface (section 4), in one place.

What the acquirer demands of its terminals' message authentication codes:

- which field holds a message's MAC: DE64, or DE128 when the message has a
  secondary bitmap (:data:`MAC_FIELDS`, :func:`mac_field`);
- which bytes it covers: the message as received from its MTI through the
  byte before the MAC field, without length header or TPDU. The MAC field
  is fixed-length and the last field of the message (the codec rejects
  bytes after the last field), so that is the message less its last
  :attr:`MacLayout.wire_bytes` bytes, in either dialect (16 hex characters
  on a hex bitmap, 8 bytes on a binary one);
- which key: the DUKPT MAC-request key of the request's KSN for requests,
  the MAC-response key of the same KSN for responses. The keys never leave
  the :class:`~iso_switch.security.hsm.Hsm`; this module only hands it the
  covered bytes (the HSM compares in constant time);
- which requests must carry one (:func:`mac_required`), which responses
  carry one (:func:`response_maced`), and the verdict that becomes ``63``
  (:func:`request_verdict`, :func:`check_mac`).

Sans-I/O: no socket, no clock, no trio; tests call it with bytes. The
server verifies a request's MAC where it decodes it (before the terminal
is known: :func:`verify_request_mac`), the ledger side decides with the
terminal's profile (:func:`request_verdict`).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from iso_switch.codec import Codec
from iso_switch.codes import ResponseCode
from iso_switch.ledger.records import TerminalRow
from iso_switch.security.errors import SecurityError
from iso_switch.security.hsm import Hsm
from iso_switch.security.mac import RETAIL_MAC_BYTES

#: Where a MAC may be: DE64 without a secondary bitmap, DE128 with one.
PRIMARY_MAC_FIELD: Final = "64"
SECONDARY_MAC_FIELD: Final = "128"
MAC_FIELDS: Final = (PRIMARY_MAC_FIELD, SECONDARY_MAC_FIELD)
#: The decoded key of the secondary bitmap, and of the KSN whose keys MAC.
SECONDARY_BITMAP: Final = "1"
KSN_FIELD: Final = "62"
#: Message classes (first two MTI digits) a terminal profile may require to
#: be MACed; network management (08xx) is never MACed.
MAC_CLASSES: Final = ("01", "02", "04")
NETWORK_CLASS: Final = "08"
#: Responses that are never MACed, whatever their request carried.
UNMACED_RESPONSE_CODES: Final = frozenset(
    {ResponseCode.FORMAT_ERROR, ResponseCode.SECURITY_VIOLATION})
#: What the server tells the ledger about a request's MAC.
MacStatus = Literal["valid", "invalid", "absent"]


class MacVerdict(enum.StrEnum):
    """What a request's MAC means for its answer."""

    OK = "ok"  # carried, and verifies under the request key of its KSN
    NOT_NEEDED = "not needed"  # none carried, and none required
    MISSING = "missing"  # none carried where the terminal profile requires one
    BAD = "bad"  # carried, and does not verify (wrong, malformed, wrong size)
    NO_KEY = "no key"  # carried, but no KSN, or one whose key set is unknown


# The members as module constants: reading ``MacVerdict.OK`` is a
# descriptor call on Python 3.11, and these run for every request.
_OK, _NOT_NEEDED, _MISSING, _BAD, _NO_KEY = (
    MacVerdict.OK, MacVerdict.NOT_NEEDED, MacVerdict.MISSING, MacVerdict.BAD, MacVerdict.NO_KEY)
#: The verdicts answered ``63``.
REFUSED: Final = (_MISSING, _BAD, _NO_KEY)


@dataclass(frozen=True, slots=True)
class MacLayout:
    """How one dialect writes its MAC fields: ``wire_bytes`` per field (16
    on a hex dialect, 8 on a binary one) and whether the field is
    ``binary``. Fields of variable length cannot hold a MAC and are left
    out. Built once per listener or device, read per message."""

    codec: Codec
    wire_bytes: Mapping[str, int]
    binary: Mapping[str, bool]

    @classmethod
    def of(cls, codec: Codec) -> MacLayout:
        sizes: dict[str, int] = {}
        binary: dict[str, bool] = {}
        for name in MAC_FIELDS:
            spec = codec.fields.get(name)
            if spec is None or spec.len_type != 0:
                continue
            sizes[name] = spec.max_len
            binary[name] = spec.binary
        return cls(codec, sizes, binary)

    def covered(self, message: bytes, name: str) -> bytes | None:
        """The bytes a MAC in field ``name`` of the decoded ``message``
        covers; ``None`` when this dialect cannot hold a MAC there."""
        size = self.wire_bytes.get(name)
        if size is None or len(message) < size:
            return None
        return message[:-size]

    def head(self, fields: Mapping[str, str], name: str) -> bytes:
        """``fields`` (no bitmap keys, no MAC) encoded with a placeholder in
        the MAC field ``name``, then cut before it: the bytes to MAC."""
        size = self.wire_bytes[name]
        placeholder = "0" * (2 * RETAIL_MAC_BYTES if self.binary[name] else size)
        return self.codec.encode({**fields, name: placeholder})[:-size]

    def tail(self, name: str, mac: bytes) -> bytes:
        """The MAC field ``name`` as written: the MAC's bytes on a binary
        field, its upper-case hex on a character one."""
        return mac if self.binary[name] else mac.hex().upper().encode("ascii")


def mac_field(fields: Mapping[str, str]) -> str:
    """The field a decoded message's MAC is in: DE128 when it has a
    secondary bitmap, else DE64."""
    return SECONDARY_MAC_FIELD if SECONDARY_BITMAP in fields else PRIMARY_MAC_FIELD


def mac_field_for_encoding(fields: Mapping[str, str]) -> str:
    """:func:`mac_field` for a message about to be encoded: the codec
    writes a secondary bitmap when a field above 64 is present."""
    for key in fields:
        if key.isdigit() and 64 < int(key) < 128:
            return SECONDARY_MAC_FIELD
    return PRIMARY_MAC_FIELD


def may_carry_mac(mti: str) -> bool:
    """Every class but network management (08xx) may be MACed."""
    return not mti.startswith(NETWORK_CLASS)


def mac_required(terminal: TerminalRow | None, mti: str) -> bool:
    """Whether a request must carry a valid MAC: per the terminal profile,
    for 01xx, 02xx and 04xx. An unknown terminal needs none (its request is
    checked when it carries one, then answered ``03`` by a later check)."""
    return terminal is not None and terminal.mac_required and mti[:2] in MAC_CLASSES


def parse_mac(value: str) -> bytes | None:
    """A decoded MAC field's bytes; ``None`` when it is not hex."""
    try:
        return bytes.fromhex(value)
    except ValueError:
        return None


def verify_request_mac(hsm: Hsm, layout: MacLayout, message: bytes,
                       fields: Mapping[str, str]) -> MacVerdict | None:
    """The MAC a decoded request carries, verified under the MAC-request key
    of its KSN: ``OK``, ``BAD`` or ``NO_KEY``; ``None`` when it carries
    none (whether it needed one depends on its terminal:
    :func:`request_verdict`). ``message`` is the request as received, from
    its MTI on."""
    name = mac_field(fields)
    value = fields.get(name)
    if value is None:
        return None
    ksn = fields.get(KSN_FIELD)
    if ksn is None:
        return _NO_KEY
    # MacLayout.covered and parse_mac inline: this runs for every request.
    size = layout.wire_bytes.get(name)
    if size is None or len(message) < size:
        return _BAD
    try:
        tag = bytes.fromhex(value)
    except ValueError:
        return _BAD
    if hsm.verify_request_mac(ksn, message[:-size], tag):
        return _OK
    return _why_not(hsm, ksn)


def _why_not(hsm: Hsm, ksn: str) -> MacVerdict:
    """A MAC that failed: ``NO_KEY`` when its KSN names no usable key (only
    failures pay for this second look), else ``BAD``."""
    try:
        hsm.check_ksn(ksn)
    except SecurityError:
        return _NO_KEY
    return _BAD


def mac_status(carried: MacVerdict | None) -> MacStatus:
    """What the ledger side is told of a request's MAC, from
    :func:`verify_request_mac`."""
    if carried is _OK:
        return "valid"
    return "absent" if carried is None else "invalid"


def request_verdict(status: MacStatus, terminal: TerminalRow | None, mti: str) -> MacVerdict:
    """The verdict once the terminal is known: a carried MAC stands as
    verified; a missing one is ``MISSING`` where the profile requires one."""
    if status == "valid":
        return _OK
    if status == "invalid":
        return _BAD
    return _MISSING if mac_required(terminal, mti) else _NOT_NEEDED


def check_mac(verdict: MacVerdict) -> ResponseCode | None:
    """The MAC step of the order of checks: ``63`` for a refused MAC."""
    return ResponseCode.SECURITY_VIOLATION if verdict in REFUSED else None


def response_maced(request_mac_valid: bool, rc: str) -> bool:
    """A response is MACed when its request carried a valid MAC, unless it
    answers ``30`` or ``63``."""
    return request_mac_valid and rc not in UNMACED_RESPONSE_CODES


def encode_response(hsm: Hsm, layout: MacLayout, response: Mapping[str, str],
                    request_ksn: str) -> bytes:
    """A response encoded with its MAC under the MAC-response key of its
    request's KSN. Raises :class:`~iso_switch.security.errors.KsnError`
    when that KSN is unusable (it verified the request's MAC, so it is not)."""
    name = mac_field_for_encoding(response)
    head = layout.head(response, name)
    return head + layout.tail(name, hsm.generate_response_mac(request_ksn, head))


__all__ = [
    "KSN_FIELD", "MAC_CLASSES", "MAC_FIELDS", "PRIMARY_MAC_FIELD", "REFUSED",
    "SECONDARY_MAC_FIELD", "UNMACED_RESPONSE_CODES", "MacLayout", "MacStatus", "MacVerdict",
    "check_mac", "encode_response", "mac_field", "mac_field_for_encoding", "mac_required",
    "mac_status", "may_carry_mac", "parse_mac", "request_verdict", "response_maced",
    "verify_request_mac",
]
