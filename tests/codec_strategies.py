"""Hypothesis strategies for valid field dicts of any pyiso8583 spec."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from iso_switch.codec import validate_spec
from iso_switch.codec._spec import FieldSpec

PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
# Long fields are capped so examples stay small; max lengths still appear.
VAR_CAP = 40


def _length(fs: FieldSpec) -> st.SearchStrategy[int]:
    if fs.len_type == 0:
        return st.just(fs.max_len)
    cap = min(fs.max_len, VAR_CAP)
    return st.one_of(st.integers(0, cap), st.just(fs.max_len)) if fs.max_len <= 255 else (
        st.integers(0, cap)
    )


def field_value(fs: FieldSpec) -> st.SearchStrategy[str]:
    if fs.binary:
        if fs.nibbles:
            alphabet = "0123456789D" if fs.key == "35" else "0123456789"
            return _length(fs).flatmap(
                lambda n: st.text(alphabet=alphabet, min_size=n, max_size=n)
            )
        return _length(fs).flatmap(lambda n: st.binary(min_size=n, max_size=n)).map(
            lambda b: b.hex().upper()
        )
    return _length(fs).flatmap(lambda n: st.text(alphabet=PRINTABLE, min_size=n, max_size=n))


def field_dicts(spec: dict[str, Any], numbers: list[int] | None = None) -> st.SearchStrategy[
    dict[str, str]
]:
    """Valid field dicts for ``spec``: an MTI plus a random subset of fields."""
    fields = validate_spec(spec)
    usable = sorted(
        int(k) for k in fields if k.isdigit() and k not in ("1", "65")
    ) if numbers is None else numbers
    mti = fields["t"]
    mti_value = st.text(alphabet="0123456789", min_size=4, max_size=4)
    if not mti.binary:
        mti_value = st.sampled_from(["0100", "0110", "0200", "0210", "0800", "0810", "0420"])

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, str]:
        chosen = draw(st.lists(st.sampled_from(usable), unique=True, max_size=30))
        doc = {"t": draw(mti_value)}
        for number in sorted(chosen):
            doc[str(number)] = draw(field_value(fields[str(number)]))
        return doc

    return build()
