"""The public ``Codec``: compiled fast paths with the generic path behind.

Per message the work is: one slice and one dict lookup to find the compiled
function for this bitmap (decode) or this key tuple (encode), then that
function. A layout is compiled the second time it is seen, so random
bitmaps from a hostile peer cost a generic decode each and never a
compilation; the number of compiled layouts is capped, so memory stays
bounded whatever arrives.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from iso_switch.codec._compile import (
    DecodeFn,
    EncodeFn,
    compile_decoder,
    compile_encoder,
)
from iso_switch.codec._generic import (
    GenericCodec,
    bitmap_bytes,
    bitmap_width,
)
from iso_switch.codec._spec import FieldSpec, validate_spec
from iso_switch.codec.errors import CodecError

# A layout is compiled once it has been seen this many times.
COMPILE_AFTER_SIGHTINGS = 2
# Compiled layouts kept per direction; past this, new layouts stay generic.
MAX_COMPILED_LAYOUTS = 512
# Sighting counters kept before they are forgotten (bounds memory under
# a stream of distinct bitmaps).
MAX_SIGHTINGS_TRACKED = 4096
# Messages larger than this are refused before any parsing.
MAX_MESSAGE_BYTES = 65536


class Codec:
    """Encode and decode ISO 8583 messages for one pyiso8583 spec.

    ``decode(raw)`` returns exactly what ``iso8583.decode(raw, spec)[0]``
    returns; ``encode(fields)`` exactly the bytes of
    ``iso8583.encode(fields, spec)[0]``. Every rejection is a ``CodecError``.
    Field values are ``str``; the caller's mapping is never modified.
    """

    __slots__ = (
        "_compile_after",
        "_dec_fast",
        "_dec_fast2",
        "_dec_seen",
        "_enc_fast",
        "_enc_seen",
        "_generic",
        "_max_layouts",
        "_p_end",
        "_p_start",
        "_s_end",
        "decode",
        "encode",
        "fields",
        "spec",
    )

    def __init__(
        self,
        spec: Mapping[str, Any],
        *,
        compile_after: int = COMPILE_AFTER_SIGHTINGS,
        max_layouts: int = MAX_COMPILED_LAYOUTS,
    ) -> None:
        self.spec = spec
        self.fields: dict[str, FieldSpec] = validate_spec(spec)
        self._generic = GenericCodec(self.fields)
        self._compile_after = compile_after
        self._max_layouts = max_layouts
        # primary bitmap -> layout (no secondary); primary + secondary -> layout
        self._dec_fast: dict[bytes, DecodeFn] = {}
        self._dec_fast2: dict[bytes, DecodeFn] = {}
        self._dec_seen: dict[bytes, int] = {}
        self._enc_fast: dict[tuple[str, ...], EncodeFn] = {}
        self._enc_seen: dict[tuple[str, ...], int] = {}
        header = self.fields["h"]
        mti_width = 2 if self.fields["t"].binary else 4
        if header.max_len > 0 and header.len_type:
            # A variable header moves the bitmap: no fast decode path.
            self._p_start = -1
        else:
            self._p_start = (header.max_len if header.max_len > 0 else 0) + mti_width
        self._p_end = self._p_start + bitmap_width(self.fields["p"])
        secondary = self.fields.get("1")
        self._s_end = self._p_end + (bitmap_width(secondary) if secondary else 0)
        # Per-message entry points (see _make_decode / _make_encode).
        self.decode = self._make_decode()
        self.encode = self._make_encode()

    # -- decode ---------------------------------------------------------

    def _make_decode(self) -> Callable[[bytes | bytearray | memoryview], dict[str, str]]:
        """The per-message entry point as a closure with every offset and
        table bound as a constant: no attribute lookups per message."""
        primary_only = self._dec_fast
        with_secondary = self._dec_fast2
        slow = self._decode_slow
        p_start, p_end, s_end = self._p_start, self._p_end, self._s_end

        def decode(raw: bytes | bytearray | memoryview) -> dict[str, str]:
            """Decode one message (no length header): field key -> str value."""
            s = raw if raw.__class__ is bytes else bytes(raw)
            entry = primary_only.get(s[p_start:p_end])
            if entry is None:
                entry = with_secondary.get(s[p_start:s_end])
                if entry is None:
                    return slow(s)
            try:
                result: dict[str, str] = entry(s)
                return result
            except Exception:  # a compiled layout never decides errors
                return slow(s)

        return decode

    def _decode_slow(self, s: bytes) -> dict[str, str]:
        if len(s) > MAX_MESSAGE_BYTES:
            raise CodecError("message larger than the codec accepts", "t", 0)
        try:
            out = self._generic.decode(s)
        except CodecError:
            raise
        except Exception:
            # Belt and braces: nothing but CodecError may leave decode.
            raise CodecError("undecodable message", "t", 0) from None
        if self._p_start >= 0 and self.compiled_layouts()[0] < self._max_layouts:
            self._learn_decode(s, out)
        return out

    def _learn_decode(self, s: bytes, out: dict[str, str]) -> None:
        has_secondary = "1" in out
        if has_secondary and len(out["1"]) > len(out["p"]):
            return  # tertiary bitmap: rare, stays generic
        key = s[self._p_start : self._s_end if has_secondary else self._p_end]
        seen = self._dec_seen.get(key, 0) + 1
        if seen < self._compile_after:
            if len(self._dec_seen) >= MAX_SIGHTINGS_TRACKED:
                self._dec_seen.clear()
            self._dec_seen[key] = seen
            return
        self._dec_seen.pop(key, None)
        numbers = [int(k) for k in out if k.isdigit() and k != "1"]
        head_values = {"p": out["p"]}
        head_len = self._p_end
        if has_secondary:
            head_values["1"] = out["1"]
            head_len = self._s_end
        fn = compile_decoder(self.fields, head_len, head_values, numbers)
        if fn is None:
            return
        # A primary bitmap either announces a secondary one or not, so a key
        # lives in exactly one of the two tables.
        if has_secondary:
            self._dec_fast2[key] = fn
        else:
            self._dec_fast[key] = fn

    def compiled_layouts(self) -> tuple[int, int]:
        """(decode layouts, encode layouts) compiled so far: bounded by
        ``max_layouts`` each."""
        return len(self._dec_fast) + len(self._dec_fast2), len(self._enc_fast)

    # -- encode ---------------------------------------------------------

    def _make_encode(self) -> Callable[[Mapping[str, str]], bytes]:
        fast = self._enc_fast
        slow = self._encode_slow

        def encode(fields: Mapping[str, str]) -> bytes:
            """Build one message (no length header) from field key -> str.

            Bitmaps are computed from the fields present; ``"p"``, ``"1"``
            and ``"65"`` in ``fields`` are ignored, as in pyiso8583.
            """
            try:
                fn = fast.get(tuple(fields))
            except TypeError:
                fn = None
            if fn is not None:
                try:
                    return fn(fields)
                except Exception:  # noqa: S110 - the generic path decides
                    pass
            return slow(fields)

        return encode

    def _encode_slow(self, fields: Mapping[str, Any]) -> bytes:
        try:
            data = self._generic.encode(fields)
        except CodecError:
            raise
        except Exception:
            raise CodecError("unencodable message", "t", 0) from None
        if len(self._enc_fast) < self._max_layouts:
            self._learn_encode(fields)
        return data

    def _learn_encode(self, fields: Mapping[str, Any]) -> None:
        keys = tuple(fields)
        seen = self._enc_seen.get(keys, 0) + 1
        if seen < self._compile_after:
            if len(self._enc_seen) >= MAX_SIGHTINGS_TRACKED:
                self._enc_seen.clear()
            self._enc_seen[keys] = seen
            return
        self._enc_seen.pop(keys, None)
        numbers: list[int] = []
        for key in keys:
            if key in ("h", "t", "p", "1", "65"):
                continue
            if key.isnumeric():
                if not key.isdigit() or str(int(key)) != key:
                    return  # pyiso8583's reading of odd numeric keys: generic only
                numbers.append(int(key))
        numbers.sort()
        tertiary = [n for n in numbers if n > 128]
        secondary = [n for n in numbers if 64 < n <= 128]
        if tertiary:
            return
        primary = [n for n in numbers if n <= 64]
        bitmaps = []
        if secondary:
            primary.insert(0, 1)
        bitmaps.append((self.fields["p"], bitmap_bytes(primary, 0)))
        if secondary:
            bitmaps.append((self.fields["1"], bitmap_bytes(secondary, 64)))
        fn = compile_encoder(self.fields, keys, bitmaps, numbers)
        if fn is not None:
            self._enc_fast[keys] = fn
