"""ISO 8583 codec: pyiso8583-compatible, spec-compiled, stdlib only.

Public API (stable):

- ``load_spec(name_or_path) -> dict``: a dialect from ``specs/`` by name
  (``ascii87-hex``, ``ascii87-bin``, ``bcd87``) or a JSON spec file.
- ``Codec(spec)`` with ``.decode(raw) -> dict[str, str]`` and
  ``.encode(fields) -> bytes``: results identical to pyiso8583's.
- ``CodecError(ValueError)`` with ``.field`` and ``.position``.

Helpers: ``tlv`` (DE55 BER-TLV), ``subfields`` (DE54, DE90), ``masking``.
"""

from iso_switch.codec._codec import Codec
from iso_switch.codec._spec import FieldSpec, list_specs, load_spec, validate_spec
from iso_switch.codec.errors import CodecError, SpecError
from iso_switch.codec.masking import mask_pan, mask_pans_in_text, mask_track2
from iso_switch.codec.subfields import (
    Balance,
    OriginalData,
    ReplacementAmounts,
    SubfieldError,
    build_de54,
    build_de90,
    build_de95,
    parse_de54,
    parse_de90,
    parse_de95,
)
from iso_switch.codec.tlv import Tlv, TlvError, build_de55, build_tlv, parse_de55, parse_tlv

__all__ = [
    "Balance",
    "Codec",
    "CodecError",
    "FieldSpec",
    "OriginalData",
    "ReplacementAmounts",
    "SpecError",
    "SubfieldError",
    "Tlv",
    "TlvError",
    "build_de54",
    "build_de55",
    "build_de90",
    "build_de95",
    "build_tlv",
    "list_specs",
    "load_spec",
    "mask_pan",
    "mask_pans_in_text",
    "mask_track2",
    "parse_de54",
    "parse_de55",
    "parse_de90",
    "parse_de95",
    "parse_tlv",
    "validate_spec",
]
