"""Spec loading and validation.

Specs are pyiso8583 spec dicts: data, not code. They are validated once,
when a ``Codec`` is built, and normalised into ``FieldSpec`` values so that
the per-message paths never look at the dict again.
"""

from __future__ import annotations

import codecs
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iso_switch.codec.errors import SpecError

BINARY = "b"
BCD = "bcd"
MAX_FIELD_NUMBER = 192
MAX_LEN_TYPE = 4
SPECS_DIR_ENV = "ISO_SWITCH_SPECS_DIR"
_REQUIRED_PROPS = ("data_enc", "len_enc", "len_type", "max_len")
_HEX_PAD = frozenset("0123456789ABCDEFabcdef")


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of a spec, normalised.

    ``data_enc`` / ``len_enc`` are ``"b"``, ``"bcd"`` (lengths only) or a
    canonical Python codec name (``codecs.lookup(...).name``), so ``"ASCII"``
    and ``"ascii"`` compile to the same code.
    """

    key: str
    data_enc: str
    len_enc: str
    len_type: int
    max_len: int
    nibbles: bool
    left_pad: str
    right_pad: str
    desc: str

    @property
    def binary(self) -> bool:
        return self.data_enc == BINARY

    @property
    def fixed(self) -> bool:
        return self.len_type == 0

    @property
    def pad(self) -> str:
        """The pad used for odd nibble counts (left wins, as in pyiso8583)."""
        return self.left_pad or self.right_pad


def _codec_name(field: str, prop: str, value: object, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or not value:
        raise SpecError(field, prop, "must be a non-empty string")
    if value in allowed:
        return value
    try:
        return codecs.lookup(value).name
    except LookupError:
        raise SpecError(field, prop, f"unknown encoding {value!r}") from None


def _field_spec(key: str, raw: Mapping[str, Any]) -> FieldSpec:
    if not isinstance(raw, Mapping):
        raise SpecError(key, "*", "must be a mapping of properties")
    for prop in _REQUIRED_PROPS:
        if prop not in raw:
            raise SpecError(key, prop, "is required")
    data_enc = _codec_name(key, "data_enc", raw["data_enc"], (BINARY,))
    len_enc = _codec_name(key, "len_enc", raw["len_enc"], (BINARY, BCD))
    len_type = raw["len_type"]
    if not isinstance(len_type, int) or isinstance(len_type, bool):
        raise SpecError(key, "len_type", "must be an integer")
    if not 0 <= len_type <= MAX_LEN_TYPE:
        raise SpecError(key, "len_type", f"must be 0..{MAX_LEN_TYPE}")
    max_len = raw["max_len"]
    if not isinstance(max_len, int) or isinstance(max_len, bool) or max_len < 0:
        raise SpecError(key, "max_len", "must be a non-negative integer")
    len_count = raw.get("len_count", "bytes")
    if len_count not in ("bytes", "nibbles"):
        raise SpecError(key, "len_count", "must be 'bytes' or 'nibbles'")
    pads = []
    for prop in ("left_pad", "right_pad"):
        pad = raw.get(prop, "")
        if not isinstance(pad, str):
            raise SpecError(key, prop, "must be a string")
        # pyiso8583 uses only the first character.
        pad = pad[:1]
        if pad and pad not in _HEX_PAD:
            raise SpecError(key, prop, "must be a hex digit")
        pads.append(pad)
    desc = raw.get("desc", "")
    if not isinstance(desc, str):
        raise SpecError(key, "desc", "must be a string")
    return FieldSpec(
        key=key,
        data_enc=data_enc,
        len_enc=len_enc,
        len_type=len_type,
        max_len=max_len,
        nibbles=len_count == "nibbles",
        left_pad=pads[0],
        right_pad=pads[1],
        desc=desc,
    )


def validate_spec(spec: Mapping[str, Any]) -> dict[str, FieldSpec]:
    """Validate a pyiso8583 spec dict and return its normalised fields.

    Raises ``SpecError`` naming the field and property at fault. Keys starting
    with ``_`` (comments in our JSON specs) are ignored.
    """
    if not isinstance(spec, Mapping):
        raise SpecError("*", "*", "a spec must be a mapping of field keys")
    for required in ("h", "t", "p"):
        if required not in spec:
            raise SpecError(required, "*", "is required in every spec")
    fields: dict[str, FieldSpec] = {}
    for key, raw in spec.items():
        if not isinstance(key, str):
            raise SpecError(repr(key), "*", "field keys must be strings")
        if key.startswith("_"):
            continue
        if key not in ("h", "t", "p"):
            if not key.isdigit() or str(int(key)) != key:
                raise SpecError(key, "*", "unknown field key")
            if not 1 <= int(key) <= MAX_FIELD_NUMBER:
                raise SpecError(key, "*", f"field number must be 1..{MAX_FIELD_NUMBER}")
        fields[key] = _field_spec(key, raw)
    if fields["t"].data_enc != BINARY and fields["t"].nibbles:
        raise SpecError("t", "len_count", "the MTI is measured in bytes")
    return fields


def specs_dir() -> Path:
    """Where the named dialects live: ``$ISO_SWITCH_SPECS_DIR`` or the
    checkout's ``specs/`` (the project runs from its checkout, see ``./run``)."""
    override = os.environ.get(SPECS_DIR_ENV)
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2] / "specs"


def list_specs() -> list[str]:
    """Names of the dialects shipped in ``specs/``."""
    return sorted(p.stem for p in specs_dir().glob("*.json"))


def load_spec(name_or_path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a dialect by name (``ascii87-hex``, ``ascii87-bin``, ``bcd87``) or
    from a JSON file path, validate it and return the pyiso8583 spec dict.

    The returned dict has no ``_`` comment keys, so it can be handed to
    pyiso8583 unchanged.
    """
    candidate = Path(name_or_path)
    if candidate.suffix == ".json" or candidate.exists():
        path = candidate
    else:
        path = specs_dir() / f"{name_or_path}.json"
        if not path.exists():
            known = ", ".join(list_specs())
            raise FileNotFoundError(f"no spec named {str(name_or_path)!r} (known: {known})")
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, dict):
        raise SpecError("*", "*", f"{path} does not hold a JSON object")
    spec = {key: value for key, value in data.items() if not key.startswith("_")}
    validate_spec(spec)
    return spec
