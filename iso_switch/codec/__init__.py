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

__all__ = [
    "Codec",
    "CodecError",
    "FieldSpec",
    "SpecError",
    "list_specs",
    "load_spec",
    "mask_pan",
    "mask_pans_in_text",
    "mask_track2",
    "validate_spec",
]
