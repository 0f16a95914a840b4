"""Codec errors.

A ``CodecError`` is the peer's fault (bad bytes on decode) or the caller's
(bad field values on encode); either way it names the field and byte offset
and never carries field content: the bytes could hold a PAN, track data or a
PIN block, and error messages end up in logs.
"""

from __future__ import annotations


class CodecError(ValueError):
    """A message could not be decoded or encoded.

    ``field`` is the field key (``"t"``, ``"p"``, ``"2"``, ...), ``position``
    the byte offset in the message (on encode: the offset the field would
    have been written at). ``reason`` is a fixed description that never
    includes field content.
    """

    __slots__ = ("field", "position", "reason")

    def __init__(self, reason: str, field: str, position: int) -> None:
        super().__init__(f"{reason}: field {field} pos {position}")
        self.reason = reason
        self.field = field
        self.position = position

    def __reduce__(self) -> tuple[type[CodecError], tuple[str, str, int]]:
        return (self.__class__, (self.reason, self.field, self.position))


class SpecError(ValueError):
    """A spec dict is malformed; the message names the field and property."""

    def __init__(self, field: str, prop: str, problem: str) -> None:
        super().__init__(f"spec field {field!r}, property {prop!r}: {problem}")
        self.field = field
        self.prop = prop
