"""The masking processor every log event passes through.

Two independent nets, because either alone misses something:

- **By name**: a key named like a secret (``pin``, ``pin_block``, ``key``,
  ``mac``, ``track2``, ``de52`` ... case-insensitive, camelCase or
  snake_case, at any depth of nested dicts) has its value replaced by
  ``[REDACTED]``; a key named like a PAN (``pan``, ``card_pan``, ``de2``)
  keeps only the PCI-permitted first 6 + last 4 digits. Bare field numbers
  used as keys (a decoded message logged as a dict: ``{"2": ..., "35":
  ...}``) are treated like ``deN``. A name with a ``masked`` part
  (``pan_masked``) is not redacted: it is already masked, and it still goes
  through the second net.
- **By content**: every string anywhere in the event, however it is named,
  has track 2 data (PAN, ``=`` or ``D``, digits) reduced to its masked PAN
  and each run of 13-19 digits masked
  (:func:`iso_switch.codec.masking.mask_pans_in_text`); so do integers of
  13-19 digits. Bytes are never shown, only their length (a raw message or
  PIN block must never be hex-dumped). Other objects are shown by their
  masked ``repr``.

Booleans, ``None`` and floats are kept under any name: ``mac_ok=True`` says
nothing secret.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, MutableMapping
from typing import Any, Final

from iso_switch.codec.masking import mask_pan, mask_pans_in_text, mask_track2

__all__ = [
    "MAX_MASK_DEPTH",
    "REDACTED",
    "mask_event_dict",
    "mask_text",
    "mask_value",
]

#: What a secret's value becomes.
REDACTED: Final = "[REDACTED]"
#: Nesting deeper than this is cut off rather than walked (a bound on work
#: and a guard against self-referencing structures).
MAX_MASK_DEPTH: Final = 8
_TOO_DEEP: Final = "[TOO DEEP]"

# Name parts that make a value secret. Compound spellings ("pinblock",
# "masterkey") are listed because camelCase splitting does not see them.
_SECRET_PARTS: Final = frozenset(
    {
        "pin", "pinblock", "pvv", "key", "keys", "masterkey", "mac", "bdk", "ipek",
        "kek", "zpk", "tpk", "tak", "zak", "track", "track1", "track2", "track3",
        "cvv", "cvv2", "cvc", "cvc2", "icvv", "secret", "password", "passphrase",
        "cryptogram", "plaintext", "cleartext",
    }
)  # fmt: skip
_PAN_PARTS: Final = frozenset({"pan", "de2"})
# ISO 8583 fields holding secrets: 35/36/45 track data, 52 PIN block, 53
# security control, 64/128 MACs, 96 message security code.
_SECRET_FIELDS: Final = frozenset({35, 36, 45, 52, 53, 64, 96, 128})
_PAN_FIELD: Final = 2

_KEEP, _MASK_PAN, _REDACT = 0, 1, 2

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_FIELD_NAME = re.compile(r"(?:de|field|f)?_?0*([0-9]{1,3})")
# Track 2 in free text: a PAN, a separator, then expiry, service code and
# discretionary data. The PAN regex alone would leave the digits after the
# separator, and those (with the PAN) are what a skimmer needs.
_TRACK2_IN_TEXT = re.compile(r"(?<![0-9])[0-9]{12,19}[=Dd][0-9]{4,}")
_PAN_INT_MIN: Final = 10**12  # 13 digits
_PAN_INT_LIMIT: Final = 10**19  # 20 digits


# Key names repeat on every line: classify each once. Bounded: cleared when
# full (names are code, not data, so this practically never happens).
_VERDICTS: dict[str, int] = {}
_MAX_CACHED_NAMES: Final = 4096
# A string shorter than this holds no 13-digit run (and no track 2).
_MIN_MASKABLE_CHARS: Final = 13


def _classify(name: str) -> int:
    """_KEEP, _MASK_PAN or _REDACT for a key name."""
    lowered = _CAMEL_BOUNDARY.sub("_", name).lower()
    field = _FIELD_NAME.fullmatch(lowered)
    if field is not None:
        number = int(field.group(1))
        if number in _SECRET_FIELDS:
            return _REDACT
        return _MASK_PAN if number == _PAN_FIELD else _KEEP
    parts = {part for part in _NON_ALNUM.split(lowered) if part}
    if "masked" in parts:
        return _KEEP
    if parts & _SECRET_PARTS:
        return _REDACT
    if parts & _PAN_PARTS or lowered.replace("_", "") == "primaryaccountnumber":
        return _MASK_PAN
    return _KEEP


def mask_text(text: str) -> str:
    """Track 2 data and every run of 13-19 digits masked in free text."""
    if "=" in text or "D" in text or "d" in text:
        text = _TRACK2_IN_TEXT.sub(lambda match: mask_track2(match.group()), text)
    return mask_pans_in_text(text)


def mask_value(value: Any, depth: int = 0) -> Any:
    """``value`` with every digit run that could be a PAN masked, recursively.

    Returns a new container; never mutates its argument.
    """
    if isinstance(value, str):
        return mask_text(value)
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        if _PAN_INT_MIN <= abs(value) < _PAN_INT_LIMIT:
            return mask_pans_in_text(str(value))
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if depth >= MAX_MASK_DEPTH:
        return _TOO_DEEP
    if isinstance(value, Mapping):
        return _mask_mapping(value, depth + 1)
    if isinstance(value, list | tuple | set | frozenset):
        return [mask_value(item, depth + 1) for item in value]
    if isinstance(value, BaseException):
        return mask_text(f"{type(value).__name__}: {value}")
    return mask_text(repr(value))


def _verdict(name: object) -> int:
    if isinstance(name, str):
        verdict = _VERDICTS.get(name)
        if verdict is None:
            if len(_VERDICTS) >= _MAX_CACHED_NAMES:
                _VERDICTS.clear()
            verdict = _VERDICTS[name] = _classify(name)
        return verdict
    if isinstance(name, int) and not isinstance(name, bool):
        return _classify(str(name))
    return _KEEP


def _mask_item(name: object, value: Any, depth: int) -> Any:
    if value is None or isinstance(value, bool | float):
        return value
    verdict = _verdict(name)
    if verdict == _REDACT:
        return REDACTED
    if verdict == _MASK_PAN:
        return mask_pan(str(value)) if isinstance(value, str | int) else REDACTED
    return mask_value(value, depth)


def _mask_mapping(mapping: Mapping[Any, Any], depth: int) -> dict[Any, Any]:
    # The hot path (every log line): short strings, which cannot hold a
    # 13-digit run, and ints below 13 digits are kept without a regex.
    masked: dict[Any, Any] = {}
    for key, value in mapping.items():
        cls = value.__class__
        if (cls is str and len(value) < _MIN_MASKABLE_CHARS) or (
            cls is int and -_PAN_INT_MIN < value < _PAN_INT_MIN
        ):
            if _verdict(key) != _KEEP:
                value = _mask_item(key, value, depth)
        else:
            value = _mask_item(key, value, depth)
        if key.__class__ is str and len(key) >= _MIN_MASKABLE_CHARS:
            key = mask_text(key)
        masked[key] = value
    return masked


def mask_event_dict(
    logger: object, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask secrets by name and PANs by content.

    :class:`~iso_switch.logs.setup.SafeRenderer` calls it as the very last
    step before rendering; it is exported for other chains (tests, the
    stdlib bridge).
    """
    return _mask_mapping(event_dict, 0)
