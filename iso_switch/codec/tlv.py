"""BER-TLV (ISO/IEC 8825-1 as profiled by EMV Book 3 Annex B) for DE55.

DE55 arrives from terminals we do not control, so the parser is strict and
bounded: tags of at most ``MAX_TAG_BYTES``, definite lengths in their
shortest form only (an over-long form would give one value two encodings),
at most ``MAX_TLV_DEPTH`` nested templates and ``MAX_TLV_ITEMS`` items in
all. Strictness is what makes ``build_tlv(parse_tlv(data)) == data`` hold
for everything ``parse_tlv`` accepts.

ICC data holds the PAN (5A), track 2 equivalent data (57) and other card
data: a ``TlvError`` names an offset and a fixed reason, never a value, and
a ``Tlv``'s repr shows tags and lengths only. ``display_value`` is the one
place deciding what of an item a person may see.
"""

from __future__ import annotations

import binascii
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from iso_switch.codec.masking import mask_pan, mask_track2

# Templates nested inside templates, at most (EMV uses 2 or 3).
MAX_TLV_DEPTH = 8
# Items in one parse, counted at every level (DE55 is at most a few hundred bytes).
MAX_TLV_ITEMS = 256
# Tag bytes, at most (EMV tags are 1 or 2 bytes; 3 is allowed for proprietary tags).
MAX_TAG_BYTES = 4
# Length bytes after the 0x8N prefix, at most (0x81, 0x82, 0x83).
MAX_LENGTH_BYTES = 3

_CONSTRUCTED_BIT = 0x20
_TAG_NUMBER_MASK = 0x1F
_MORE_TAG_BYTES_BIT = 0x80
_LONG_LENGTH_BIT = 0x80
_SHORT_LENGTH_MAX = 0x7F
_PAN_PAD = "F"


class TlvError(ValueError):
    """Bytes that are not valid BER-TLV, or items that cannot be built.

    ``offset`` is the byte offset in the data (on build: in the output) where
    the problem was found; ``reason`` is a fixed text that never includes a
    value.
    """

    __slots__ = ("offset", "reason")

    def __init__(self, reason: str, offset: int) -> None:
        super().__init__(f"{reason} at offset {offset}")
        self.reason = reason
        self.offset = offset

    def __reduce__(self) -> tuple[type[TlvError], tuple[str, int]]:
        return (self.__class__, (self.reason, self.offset))


@dataclass(frozen=True, slots=True)
class Tlv:
    """One data object: ``tag`` as upper-case hex (``"9F02"``), ``value`` its
    content bytes, ``children`` the parsed items of a constructed tag
    (``None`` for a primitive one).

    A constructed item built by hand needs only ``children``: ``value`` is
    filled in as their encoding. The repr never shows a value.
    """

    tag: str
    value: bytes = field(default=b"", repr=False)
    children: tuple[Tlv, ...] | None = None

    def __post_init__(self) -> None:
        tag_bytes = tag_to_bytes(self.tag)
        if is_constructed(tag_bytes) != (self.children is not None):
            need = "children" if is_constructed(tag_bytes) else "children=None"
            raise TlvError(f"tag {self.tag} needs {need}", 0)
        if self.children and not self.value:
            # A template built by hand: its value is its encoded children,
            # so it equals the same template parsed from bytes.
            object.__setattr__(self, "value", build_tlv(self.children))

    @property
    def constructed(self) -> bool:
        return self.children is not None

    def __repr__(self) -> str:
        if self.children is None:
            return f"Tlv(tag={self.tag!r}, length={len(self.value)})"
        return f"Tlv(tag={self.tag!r}, children={self.children!r})"

    @classmethod
    def template(cls, tag: str, children: Iterable[Tlv]) -> Tlv:
        """A constructed item whose value is its children, encoded."""
        return cls(tag=tag, children=tuple(children))


def tag_to_bytes(tag: str) -> bytes:
    """A tag's bytes from its hex, checked to be one well-formed BER tag."""
    try:
        raw = bytes.fromhex(tag)
    except ValueError:
        raise TlvError("tag is not hex", 0) from None
    if tag != tag.upper() or not raw:
        raise TlvError("tag must be upper-case hex", 0)
    if _tag_length(raw, 0, len(raw)) != len(raw):
        raise TlvError("tag bytes do not form one BER tag", 0)
    return raw


def is_constructed(tag_bytes: bytes) -> bool:
    """Bit 6 of the first tag byte: the value is itself BER-TLV."""
    return bool(tag_bytes[0] & _CONSTRUCTED_BIT)


def _tag_length(data: bytes, start: int, end: int) -> int:
    """Number of bytes of the tag at ``start`` (the container ends at
    ``end``); raises on a bad or cut tag."""
    first = data[start]
    if first == 0x00:
        raise TlvError("zero tag byte (padding is not accepted)", start)
    if first & _TAG_NUMBER_MASK != _TAG_NUMBER_MASK:
        return 1
    index = start + 1
    while True:
        if index >= end:
            raise TlvError("truncated tag", start)
        if index - start + 1 > MAX_TAG_BYTES:
            raise TlvError(f"tag longer than {MAX_TAG_BYTES} bytes", start)
        if not data[index] & _MORE_TAG_BYTES_BIT:
            return index - start + 1
        index += 1


def _read_length(data: bytes, start: int, end: int) -> tuple[int, int]:
    """The length at ``start`` and the offset just after it."""
    if start >= end:
        raise TlvError("truncated length", start)
    first = data[start]
    if first <= _SHORT_LENGTH_MAX:
        return first, start + 1
    count = first & ~_LONG_LENGTH_BIT
    if count == 0:
        raise TlvError("indefinite length (0x80) is not accepted", start)
    if count > MAX_LENGTH_BYTES:
        raise TlvError(f"length field longer than {MAX_LENGTH_BYTES} bytes", start)
    after = start + 1 + count
    if after > end:
        raise TlvError("truncated length", start)
    length = int.from_bytes(data[start + 1:after], "big")
    if length < _minimum_for_long_form(count):
        raise TlvError("over-long length encoding", start)
    return length, after


def _minimum_for_long_form(count: int) -> int:
    """Smallest length that needs ``count`` length bytes (shortest form rule)."""
    return _SHORT_LENGTH_MAX + 1 if count == 1 else 1 << (8 * (count - 1))


def _encode_length(length: int) -> bytes:
    if length <= _SHORT_LENGTH_MAX:
        return bytes((length,))
    count = (length.bit_length() + 7) // 8
    if count > MAX_LENGTH_BYTES:
        raise TlvError(f"value longer than {MAX_LENGTH_BYTES} length bytes can say", 0)
    return bytes((_LONG_LENGTH_BIT | count,)) + length.to_bytes(count, "big")


class _Budget:
    """Items left for one parse (shared across nesting levels)."""

    __slots__ = ("left",)

    def __init__(self, items: int) -> None:
        self.left = items


def parse_tlv(data: bytes) -> list[Tlv]:
    """Every item in ``data``, constructed tags parsed into their children.

    Raises ``TlvError`` (with the offset) on a truncated or malformed item,
    nesting deeper than ``MAX_TLV_DEPTH`` or more than ``MAX_TLV_ITEMS``
    items. Empty data is an empty list.
    """
    return _parse(bytes(data), 0, len(data), 0, _Budget(MAX_TLV_ITEMS))


def _parse(data: bytes, start: int, end: int, depth: int, budget: _Budget) -> list[Tlv]:
    items: list[Tlv] = []
    offset = start
    while offset < end:
        budget.left -= 1
        if budget.left < 0:
            raise TlvError(f"more than {MAX_TLV_ITEMS} items", offset)
        tag_end = offset + _tag_length(data, offset, end)
        tag_bytes = data[offset:tag_end]
        length, value_start = _read_length(data, tag_end, end)
        value_end = value_start + length
        if value_end > end:
            raise TlvError("value runs past the end of its container", offset)
        value = data[value_start:value_end]
        children: tuple[Tlv, ...] | None = None
        if is_constructed(tag_bytes):
            if depth >= MAX_TLV_DEPTH:
                raise TlvError(f"templates nested deeper than {MAX_TLV_DEPTH}", offset)
            children = tuple(_parse(data, value_start, value_end, depth + 1, budget))
        items.append(Tlv(tag=tag_bytes.hex().upper(), value=value, children=children))
        offset = value_end
    return items


def build_tlv(items: Iterable[Tlv]) -> bytes:
    """The BER-TLV encoding of ``items`` (shortest length forms).

    A constructed item is encoded from its children. Raises ``TlvError``
    for nesting deeper than ``MAX_TLV_DEPTH`` (what ``parse_tlv`` would
    refuse) or a value too long for three length bytes.
    """
    out = bytearray()
    _build(items, out, 0)
    return bytes(out)


def _build(items: Iterable[Tlv], out: bytearray, depth: int) -> None:
    for item in items:
        start = len(out)
        if item.children is None:
            content = item.value
        else:
            if depth >= MAX_TLV_DEPTH:
                raise TlvError(f"templates nested deeper than {MAX_TLV_DEPTH}", start)
            inner = bytearray()
            _build(item.children, inner, depth + 1)
            content = bytes(inner)
        out += bytes.fromhex(item.tag)
        try:
            out += _encode_length(len(content))
        except TlvError as exc:
            raise TlvError(exc.reason, start) from None
        out += content


def parse_de55(text: str) -> list[Tlv]:
    """DE55 as the codec returns it (hex text) to its items."""
    try:
        data = binascii.unhexlify(text)
    except (binascii.Error, ValueError):
        raise TlvError("DE55 is not hex (odd length or a non-hex character)", 0) from None
    return parse_tlv(data)


def build_de55(items: Iterable[Tlv]) -> str:
    """Items to DE55 hex text (upper case), as the codec expects it."""
    return build_tlv(items).hex().upper()


def walk(items: Iterable[Tlv], depth: int = 0) -> Iterator[tuple[int, Tlv]]:
    """Every item with its nesting depth, depth first, in order."""
    for item in items:
        yield depth, item
        if item.children is not None:
            yield from walk(item.children, depth + 1)


def find(items: Iterable[Tlv], tag: str) -> Tlv | None:
    """The first item with ``tag`` at any depth, or ``None``."""
    for _, item in walk(items):
        if item.tag == tag:
            return item
    return None


# Common EMV tags (EMV Book 3 Annex A; Book 4). For display only.
EMV_TAG_NAMES: Mapping[str, str] = {
    "4F": "Application Identifier (AID)",
    "50": "Application Label",
    "56": "Track 1 Data",
    "57": "Track 2 Equivalent Data",
    "5A": "Application PAN",
    "5F20": "Cardholder Name",
    "5F24": "Application Expiration Date",
    "5F25": "Application Effective Date",
    "5F28": "Issuer Country Code",
    "5F2A": "Transaction Currency Code",
    "5F30": "Service Code",
    "5F34": "PAN Sequence Number",
    "6F": "FCI Template",
    "70": "Record Template",
    "71": "Issuer Script Template 1",
    "72": "Issuer Script Template 2",
    "77": "Response Message Template Format 2",
    "80": "Response Message Template Format 1",
    "82": "Application Interchange Profile",
    "84": "Dedicated File Name",
    "86": "Issuer Script Command",
    "8A": "Authorisation Response Code",
    "8E": "CVM List",
    "91": "Issuer Authentication Data",
    "95": "Terminal Verification Results",
    "9A": "Transaction Date",
    "9B": "Transaction Status Information",
    "9C": "Transaction Type",
    "9F02": "Amount, Authorised",
    "9F03": "Amount, Other",
    "9F06": "Application Identifier (terminal)",
    "9F07": "Application Usage Control",
    "9F08": "Application Version Number (card)",
    "9F09": "Application Version Number (terminal)",
    "9F0D": "Issuer Action Code, Default",
    "9F0E": "Issuer Action Code, Denial",
    "9F0F": "Issuer Action Code, Online",
    "9F10": "Issuer Application Data",
    "9F12": "Application Preferred Name",
    "9F18": "Issuer Script Identifier",
    "9F1A": "Terminal Country Code",
    "9F1E": "Interface Device Serial Number",
    "9F1F": "Track 1 Discretionary Data",
    "9F20": "Track 2 Discretionary Data",
    "9F21": "Transaction Time",
    "9F26": "Application Cryptogram",
    "9F27": "Cryptogram Information Data",
    "9F33": "Terminal Capabilities",
    "9F34": "CVM Results",
    "9F35": "Terminal Type",
    "9F36": "Application Transaction Counter",
    "9F37": "Unpredictable Number",
    "9F41": "Transaction Sequence Counter",
    "9F53": "Transaction Category Code",
    "9F6B": "Track 2 Data (contactless)",
    "9F6E": "Form Factor Indicator",
}

# Tags whose values may be shown in clear: amounts, codes and terminal
# settings, nothing that identifies a card or a cardholder.
CLEAR_TAGS: frozenset[str] = frozenset({
    "4F", "82", "84", "8A", "95", "9A", "9B", "9C", "5F2A", "9F02", "9F03", "9F06",
    "9F09", "9F1A", "9F21", "9F27", "9F33", "9F34", "9F35", "9F36", "9F41",
})
PAN_TAGS: frozenset[str] = frozenset({"5A"})
TRACK2_TAGS: frozenset[str] = frozenset({"57", "9F6B"})


def tag_name(tag: str) -> str:
    """The EMV name of a tag, or ``""`` when it is not in the table."""
    return EMV_TAG_NAMES.get(tag, "")


def display_value(item: Tlv) -> str:
    """What a person may see of an item's value: clear for ``CLEAR_TAGS``,
    a masked PAN for 5A, a masked track for 57 / 9F6B, else its length."""
    if item.children is not None:
        return f"<{len(item.children)} items>"
    if item.tag in CLEAR_TAGS:
        return item.value.hex().upper()
    if item.tag in PAN_TAGS:
        return mask_pan(item.value.hex().upper().rstrip(_PAN_PAD))
    if item.tag in TRACK2_TAGS:
        return mask_track2(item.value.hex().upper().rstrip(_PAN_PAD))
    return f"<{len(item.value)} bytes>"
