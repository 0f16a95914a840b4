"""Compile one message layout into straight-line Python.

A *layout* is what a bitmap (on decode) or a set of field keys (on encode)
fixes: which fields follow, in which order, with which encodings. For a
layout seen often enough the codec generates one function with every field
inlined: constant offsets between variable-length fields, length prefixes
read through lookup tables, one ``bytes.decode`` for the whole message when
every part is ASCII, one ``str.join`` + ``encode`` when building. That is
where the speed over a field-by-field loop comes from.

Compiled functions never decide errors. Anything unexpected (a short slice,
a non-canonical length such as ``" 5"``, a non-ASCII byte, a value of the
wrong type) raises, and the caller reruns the message through the generic
path, which follows pyiso8583 step for step and raises the exact
``CodecError``. So a compiled function only has to be right on the inputs
it accepts: every length it reads is canonical and in ``0..max_len``, so
offsets never decrease, and the final ``end == len(message)`` check proves
that no slice ran past the end.
"""

from __future__ import annotations

import binascii
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from iso_switch.codec._spec import BCD, BINARY, FieldSpec

ASCII = "ascii"
LATIN1 = "iso8859-1"
DecodeFn = Callable[[bytes], dict[str, str]]
EncodeFn = Callable[[Mapping[str, Any]], bytes]

_TABLES: dict[tuple[str, int, int], Any] = {}


class Bail(Exception):
    """A compiled path met something it does not decide; use the generic path."""


def _max_for(fs: FieldSpec) -> int:
    """Largest length the prefix can express that the field allows."""
    if fs.len_enc == BINARY:
        limit = (1 << (8 * fs.len_type)) - 1
    elif fs.len_enc == BCD:
        limit = int("9" * (fs.len_type * 2))
    else:
        limit = int("9" * fs.len_type)
    return min(fs.max_len, limit)


def length_table_decode(fs: FieldSpec, text_keys: bool = False) -> dict[Any, int]:
    """Canonical prefix -> length, for lengths 0..max. A prefix missing from
    the table is either invalid or non-canonical: the generic path decides.
    Keys are bytes, or str for ASCII prefixes sliced from decoded text."""
    text_keys = text_keys and fs.len_enc == ASCII
    key = ("dec-" + fs.len_enc + ("-str" if text_keys else "-bytes"), fs.len_type, _max_for(fs))
    table = _TABLES.get(key)
    if table is None:
        table = {}
        for n in range(key[2] + 1):
            if fs.len_enc == BINARY:
                table[n.to_bytes(fs.len_type, "big")] = n
            elif fs.len_enc == BCD:
                table[binascii.a2b_hex(f"{n:0{fs.len_type * 2}d}")] = n
            elif text_keys:
                table[f"{n:0{fs.len_type}d}"] = n
            else:
                table[f"{n:0{fs.len_type}d}".encode(fs.len_enc)] = n
        _TABLES[key] = table
    return table


def length_table_encode(fs: FieldSpec, as_text: bool) -> tuple[Any, ...]:
    """Length -> prefix (str when it joins a text segment, else bytes)."""
    key = ("enc-" + fs.len_enc + ("-str" if as_text else "-bytes"), fs.len_type, _max_for(fs))
    table = _TABLES.get(key)
    if table is None:
        items: list[Any] = []
        for n in range(key[2] + 1):
            if fs.len_enc == BINARY:
                items.append(n.to_bytes(fs.len_type, "big"))
            elif fs.len_enc == BCD:
                items.append(binascii.a2b_hex(f"{n:0{fs.len_type * 2}d}"))
            elif as_text:
                items.append(f"{n:0{fs.len_type}d}")
            else:
                items.append(f"{n:0{fs.len_type}d}".encode(fs.len_enc))
        table = tuple(items)
        _TABLES[key] = table
    return table


def _is_ascii_text(fs: FieldSpec) -> bool:
    return fs.data_enc == ASCII and not fs.nibbles


def _text_len(fs: FieldSpec) -> bool:
    return fs.len_type == 0 or fs.len_enc == ASCII


class _Source:
    """Accumulates generated lines with a symbolic offset ``i + off``."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.off = 0
        self.dynamic = False
        self.tmp = 0

    def pos(self, extra: int = 0) -> str:
        return self.at(self.off + extra)

    def at(self, total: int) -> str:
        """Expression for the absolute symbolic offset ``i + total``."""
        if not self.dynamic:
            return str(total)
        return f"i+{total}" if total else "i"

    def name(self, prefix: str) -> str:
        self.tmp += 1
        return f"{prefix}{self.tmp}"

    def emit(self, line: str) -> None:
        self.lines.append("    " + line)

    def advance_to(self, expr: str) -> None:
        self.emit(f"i = {expr}")
        self.dynamic = True
        self.off = 0


def _layout_specs(
    fields: Mapping[str, FieldSpec], numbers: Sequence[int]
) -> list[FieldSpec] | None:
    """The specs of a layout's fields, or None when one is not in the spec
    (the generic path then reports it)."""
    specs = [fields.get(str(n)) for n in numbers]
    if any(fs is None for fs in specs):
        return None
    return [fs for fs in specs if fs is not None]


def _advance_table(fs: FieldSpec, text_keys: bool) -> dict[Any, int]:
    """Canonical prefix -> prefix width + length: the offset after the field."""
    base = length_table_decode(fs, text_keys)
    return {prefix: n + fs.len_type for prefix, n in base.items()}


def compile_decoder(
    fields: Mapping[str, FieldSpec],
    head_len: int,
    head_values: Mapping[str, str],
    numbers: Sequence[int],
) -> DecodeFn | None:
    """Straight-line decoder for messages whose header, MTI and bitmaps take
    ``head_len`` bytes and whose bitmaps name ``numbers``.

    ``head_values`` are the constant decoded bitmap texts (``p``, ``1``).
    The result dict starts as a copy of a template holding every key in
    pyiso8583's order (a C-level copy, cheaper than building a dict), and
    each field is stored into it as it is sliced. Returns None when the
    layout uses something not worth specialising.
    """
    header = fields["h"]
    mti = fields["t"]
    field_specs = _layout_specs(fields, numbers)
    if field_specs is None:
        return None
    parts = [mti, fields["p"], *field_specs]
    if header.max_len > 0:
        if header.len_type:
            return None
        parts.append(header)
    if "1" in head_values:
        parts.append(fields["1"])
    all_ascii = all(
        fs.data_enc == ASCII and not fs.nibbles and _text_len(fs) for fs in parts
    )
    template: dict[str, str] = {}
    if header.max_len > 0:
        template["h"] = ""
    template["t"] = ""
    template.update(head_values)
    for fs in field_specs:
        template[fs.key] = ""
    builder = _DecoderBuilder(template, all_ascii)
    if not builder.head(header, mti, head_len):
        return None
    for fs in field_specs:
        if not builder.field(fs):
            return None
    return builder.finish()


class _DecoderBuilder:
    """One decoder being generated: its source, its namespace of constants,
    and the run of fixed-length fields read but not yet emitted. Each
    ``head`` / ``field`` call returns False when the layout is not worth
    specialising (the generic path then decodes it)."""

    def __init__(self, template: dict[str, str], all_ascii: bool) -> None:
        self.src = _Source()
        self.ns: dict[str, Any] = {"Bail": Bail, "T": template}
        self.all_ascii = all_ascii
        # Consecutive fixed-length fields of one kind form a run: one slice
        # of the message (hexed once for binary runs) split by a C-level
        # itemgetter. Items are (start, end, spec) relative to run_start.
        self.run_kind: str | None = None
        self.run_start = 0
        self.run_items: list[tuple[int, int, FieldSpec]] = []
        self.src.emit("D = T.copy()")
        # All-ASCII layouts decode the message once and slice text; others
        # slice bytes and decode each text piece (which also proves it ASCII).
        if all_ascii:
            self.src.emit("t = s.decode('ascii')")

    def text_slice(self, start: str, end: str) -> str:
        if self.all_ascii:
            return f"t[{start}:{end}]"
        return f"s[{start}:{end}].decode('ascii')"

    def prefix_slice(self, start: str, end: str) -> str:
        return f"t[{start}:{end}]" if self.all_ascii else f"s[{start}:{end}]"

    def head(self, header: FieldSpec, mti: FieldSpec, head_len: int) -> bool:
        """Header and MTI; the bitmaps are constants of the layout (in the
        template), so the fields start at ``head_len``."""
        src = self.src
        if header.max_len > 0:
            if _is_ascii_text(header):
                src.emit(f"D['h'] = {self.text_slice('0', str(header.max_len))}")
            elif header.binary and not header.nibbles:
                src.emit(f"D['h'] = s[0:{header.max_len}].hex().upper()")
            else:
                return False
            src.off = header.max_len
        if mti.binary:
            src.emit(f"D['t'] = s[{src.pos()}:{src.pos(2)}].hex().upper()")
            src.off += 2
        elif mti.data_enc == ASCII:
            src.emit(f"D['t'] = {self.text_slice(src.pos(), src.pos(4))}")
            src.off += 4
        else:
            src.emit(f"D['t'] = s[{src.pos()}:{src.pos(4)}].decode({mti.data_enc!r})")
            src.off += 4
        src.off = head_len
        return True

    def field(self, fs: FieldSpec) -> bool:
        kind = "hex" if fs.binary else ("text" if _is_ascii_text(fs) else None)
        if fs.len_type == 0 and kind is not None:
            if fs.nibbles and fs.max_len & 1 and not fs.pad:
                return False  # pyiso8583 always rejects such a field
            self._join_run(fs, kind)
            return True
        self.flush_run()
        if fs.len_type == 0:
            return self._fixed_other(fs)
        return self._variable(fs)

    def _join_run(self, fs: FieldSpec, kind: str) -> None:
        src = self.src
        if kind != self.run_kind:
            self.flush_run()
            self.run_kind = kind
            self.run_start = src.off
        width = (fs.max_len + 1) // 2 if fs.nibbles else fs.max_len
        offset = src.off - self.run_start
        self.run_items.append((offset, offset + width, fs))
        src.off += width

    def _fixed_other(self, fs: FieldSpec) -> bool:
        """A fixed-length field in a codec other than ASCII text or hex."""
        if fs.nibbles:
            return False
        src = self.src
        src.emit(f"D[{fs.key!r}] = s[{src.pos()}:{src.pos(fs.max_len)}]"
                 f".decode({fs.data_enc!r})")
        src.off += fs.max_len
        return True

    def _variable(self, fs: FieldSpec) -> bool:
        """A length-prefixed field: its prefix, looked up in a table, gives
        the offset after it (``i``, from here on dynamic)."""
        src = self.src
        start = src.pos()
        end = src.pos(fs.len_type)
        if fs.len_enc == ASCII:
            prefix = self.prefix_slice(start, end)
        else:
            prefix = f"s[{start}:{end}]"
        target = f"D[{fs.key!r}]"
        if fs.binary and fs.nibbles:
            self._variable_nibbles(fs, start, end, prefix, target)
        elif fs.nibbles:
            return False
        else:
            table = src.name("A")
            self.ns[table] = _advance_table(fs, text_keys=self.all_ascii)
            walrus = f"(i := {start}+{table}[{prefix}])"
            if fs.binary:
                src.emit(f"{target} = s[{end}:{walrus}].hex().upper()")
            elif fs.data_enc == ASCII:
                src.emit(f"{target} = {self.text_slice(end, walrus)}")
            else:
                src.emit(f"{target} = s[{end}:{walrus}].decode({fs.data_enc!r})")
        src.dynamic = True
        src.off = 0
        return True

    def _variable_nibbles(
        self, fs: FieldSpec, start: str, end: str, prefix: str, target: str
    ) -> None:
        """Tables from the prefix to the offset after the field and to
        whether the nibble count is odd (then a pad nibble is stripped)."""
        src = self.src
        k_var = src.name("k")
        x_var = src.name("x")
        advance = src.name("A")
        odd = src.name("O")
        lengths = length_table_decode(fs, text_keys=self.all_ascii)
        self.ns[advance] = {k: fs.len_type + (n + 1) // 2 for k, n in lengths.items()}
        self.ns[odd] = {k: bool(n & 1) for k, n in lengths.items()}
        src.emit(f"{k_var} = {prefix}")
        src.emit(f"{x_var} = s[{end}:(i := {start}+{advance}[{k_var}])].hex().upper()")
        src.emit(f"if {odd}[{k_var}]:")
        _emit_strip(src, fs, target, x_var, indent=1)
        src.emit("else:")
        src.emit(f"    {target} = {x_var}")

    def flush_run(self) -> None:
        """Emit the pending run of fixed-length fields, if any."""
        if not self.run_items:
            self.run_kind = None
            return
        src = self.src
        base = self.run_start
        total = src.off - base
        if self.run_kind == "text":
            whole = self.text_slice(src.at(base), src.at(base + total))
            scale = 1
        else:
            whole = f"s[{src.at(base)}:{src.at(base + total)}].hex().upper()"
            scale = 2
        run_var = src.name("x")
        slices, targets, pad_checks, strips = self._run_parts(run_var, scale)
        if len(slices) == 1 and not pad_checks and not strips:
            src.emit(f"{targets[0]} = {whole}")
        else:
            src.emit(f"{run_var} = {whole}")
            if pad_checks:
                src.emit(f"if {' or '.join(pad_checks)}: raise Bail")
            if len(slices) == 1:
                only = slices[0]
                src.emit(f"{targets[0]} = {run_var}[{only.start}:{only.stop}]")
            else:
                getter = src.name("G")
                self.ns[getter] = operator.itemgetter(*slices)
                src.emit(f"{', '.join(targets)} = {getter}({run_var})")
            for fs, name in strips:
                _emit_strip(src, fs, f"D[{fs.key!r}]", name)
        self.run_items.clear()
        self.run_kind = None

    def _run_parts(
        self, run_var: str, scale: int
    ) -> tuple[list[slice], list[str], list[str], list[tuple[FieldSpec, str]]]:
        """Each run field's slice of the run and where it goes, the pad
        checks, and the fields whose pad nibble is stripped after. Odd
        nibble fields carry a pad nibble: with one pad configured the slice
        skips it and one check proves every pad."""
        slices: list[slice] = []
        targets: list[str] = []
        pad_checks: list[str] = []
        strips: list[tuple[FieldSpec, str]] = []
        for a, b, fs in self.run_items:
            lo, hi = a * scale, b * scale
            target = f"D[{fs.key!r}]"
            if fs.nibbles and fs.max_len & 1:
                if fs.left_pad and not fs.right_pad:
                    pad_checks.append(f"{run_var}[{lo}] != {fs.left_pad!r}")
                    lo += 1
                elif fs.right_pad and not fs.left_pad:
                    pad_checks.append(f"{run_var}[{hi - 1}] != {fs.right_pad!r}")
                    hi -= 1
                else:
                    name = self.src.name("x")
                    strips.append((fs, name))
                    target = name
            slices.append(slice(lo, hi))
            targets.append(target)
        return slices, targets, pad_checks, strips

    def finish(self) -> DecodeFn:
        """Close the last run, prove the message ended where the layout
        does, and compile."""
        self.flush_run()
        src = self.src
        src.emit(f"if {src.pos()} != len(s): raise Bail")
        src.emit("return D")
        code = "def decode_layout(s):\n" + "\n".join(src.lines) + "\n"
        exec(compile(code, "<iso_switch.codec layout>", "exec"), self.ns)
        fn: DecodeFn = self.ns["decode_layout"]
        return fn


def _emit_strip(src: _Source, fs: FieldSpec, target: str, value: str, indent: int = 0) -> None:
    """pyiso8583's pad removal for an odd nibble count: left pad first, then
    right pad, else an error (here: bail). ``value`` must be a plain name."""
    pad = "    " * indent
    keyword = "if"
    if fs.left_pad:
        src.emit(f"{pad}if {value}[:1] == {fs.left_pad!r}: {target} = {value}[1:]")
        keyword = "elif"
    if fs.right_pad:
        src.emit(f"{pad}{keyword} {value}[-1:] == {fs.right_pad!r}: {target} = {value}[:-1]")
        keyword = "elif"
    if keyword == "if":
        src.emit(f"{pad}raise Bail")
    else:
        src.emit(f"{pad}else: raise Bail")


def compile_encoder(
    fields: Mapping[str, FieldSpec],
    keys: Sequence[str],
    bitmaps: Sequence[tuple[FieldSpec, bytes]],
    numbers: Sequence[int],
) -> EncodeFn | None:
    """Straight-line encoder for dicts with exactly ``keys`` (in that order),
    whose bitmaps are the constant ``bitmaps`` and whose fields are
    ``numbers`` (ascending)."""
    field_specs = _layout_specs(fields, numbers)
    if field_specs is None:
        return None
    builder = _EncoderBuilder()
    if not builder.head(fields["h"], fields["t"], keys):
        return None
    builder.bitmaps(bitmaps)
    for fs in field_specs:
        if not builder.field(fs):
            return None
    return builder.finish()


class _EncoderBuilder:
    """One encoder being generated: the lines reading the dict, the checks
    that send a value back to the generic path, and the output items.
    Items are ("text", expr), joined into str segments encoded as ASCII,
    or ("bytes", expr), added as they are. ``head`` and ``field`` return
    False when the layout is not worth specialising."""

    def __init__(self) -> None:
        self.ns: dict[str, Any] = {"Bail": Bail, "a2b": binascii.a2b_hex}
        self.lines: list[str] = []
        self.checks: list[str] = []
        self.items: list[tuple[str, str]] = []
        self.tmp = 0

    def new(self, prefix: str) -> str:
        self.tmp += 1
        return f"{prefix}{self.tmp}"

    def head(self, header: FieldSpec, mti: FieldSpec, keys: Sequence[str]) -> bool:
        lines, checks, items = self.lines, self.checks, self.items
        if header.max_len > 0:
            if "h" not in keys or header.len_type or not _is_ascii_text(header):
                return False
            lines.append("vh = d['h']")
            checks.append(f"len(vh) != {header.max_len}")
            items.append(("text", "vh"))
        lines.append("vt = d['t']")
        if mti.binary:
            lines.append("bt = a2b(vt)")
            checks.append("len(bt) != 2")
            items.append(("bytes", "bt"))
        elif mti.data_enc == ASCII:
            checks.append("len(vt) != 4")
            items.append(("text", "vt"))
        else:
            lines.append(f"bt = vt.encode({mti.data_enc!r})")
            checks.append("len(bt) != 4")
            items.append(("bytes", "bt"))
        return True

    def bitmaps(self, bitmaps: Sequence[tuple[FieldSpec, bytes]]) -> None:
        """The layout's bitmaps, constants in the encoding of their spec."""
        for index, (fs, bitmap) in enumerate(bitmaps):
            name = f"B{index}"
            if fs.binary:
                self.ns[name] = bitmap
                self.items.append(("bytes", name))
            elif fs.data_enc == ASCII:
                self.ns[name] = bitmap.hex().upper()
                self.items.append(("text", name))
            else:
                self.ns[name] = bitmap.hex().upper().encode(fs.data_enc)
                self.items.append(("bytes", name))

    def field(self, fs: FieldSpec) -> bool:
        v = "v" + fs.key
        self.lines.append(f"{v} = d[{fs.key!r}]")
        if fs.binary:
            # binascii also takes bytes; the API (and the generic path) only str.
            self.checks.append(f"{v}.__class__ is not str")
            if fs.nibbles:
                return self._nibbles(fs, v)
            self._binary(fs, v)
        elif fs.nibbles:
            return False
        elif fs.data_enc == ASCII:
            self._text(fs, v)
        else:
            self._other(fs, v)
        return True

    def _length_prefix(self, fs: FieldSpec, as_text: bool = False) -> str:
        """The name of the field's table from length to prefix."""
        table = "E" + fs.key
        self.ns[table] = length_table_encode(fs, as_text=as_text)
        return table

    def _nibbles(self, fs: FieldSpec, v: str) -> bool:
        """Hex digits packed two per byte; an odd count gets a pad nibble."""
        odd_pad = fs.max_len & 1
        if fs.len_type == 0:
            if odd_pad and not fs.pad:
                return False
            self.checks.append(f"len({v}) != {fs.max_len}")
            data = f"a2b({fs.left_pad!r} + {v})" if odd_pad and fs.left_pad else (
                f"a2b({v} + {fs.right_pad!r})" if odd_pad else f"a2b({v})"
            )
            self.items.append(("bytes", data))
            return True
        if not fs.pad:
            return False
        n = self.new("n")
        table = self._length_prefix(fs)
        self.lines.append(f"{n} = len({v})")
        padded = f"({fs.left_pad!r} + {v})" if fs.left_pad else f"({v} + {fs.right_pad!r})"
        self.items.append(("bytes", f"{table}[{n}]"))
        self.items.append(("bytes", f"a2b({padded} if {n} & 1 else {v})"))
        return True

    def _binary(self, fs: FieldSpec, v: str) -> None:
        self._measured_bytes(fs, f"a2b({v})")

    def _measured_bytes(self, fs: FieldSpec, expr: str) -> None:
        """A field whose bytes ``expr`` gives, measured after conversion."""
        b = self.new("b")
        self.lines.append(f"{b} = {expr}")
        if fs.len_type == 0:
            self.checks.append(f"len({b}) != {fs.max_len}")
        else:
            self.items.append(("bytes", f"{self._length_prefix(fs)}[len({b})]"))
        self.items.append(("bytes", b))

    def _text(self, fs: FieldSpec, v: str) -> None:
        if fs.len_type == 0:
            self.checks.append(f"len({v}) != {fs.max_len}")
        else:
            as_text = fs.len_enc == ASCII
            table = self._length_prefix(fs, as_text=as_text)
            self.items.append(("text" if as_text else "bytes", f"{table}[len({v})]"))
        self.items.append(("text", v))

    def _other(self, fs: FieldSpec, v: str) -> None:
        """Text in another codec: encoded, then measured in bytes."""
        self._measured_bytes(fs, f"{v}.encode({fs.data_enc!r})")

    def finish(self) -> EncodeFn:
        """Group consecutive text items into one join + encode each, check
        every value at once, and compile."""
        pieces: list[str] = []
        segment: list[str] = []
        for kind, expr in self.items:
            if kind == "text":
                segment.append(expr)
                continue
            if segment:
                pieces.append(_join_text(segment))
                segment = []
            pieces.append(expr)
        if segment:
            pieces.append(_join_text(segment))
        body = ["    " + line for line in self.lines]
        if self.checks:
            body.append("    if " + " or ".join(self.checks) + ": raise Bail")
        if len(pieces) == 1:
            body.append(f"    return {pieces[0]}")
        else:
            body.append("    return b''.join((" + ", ".join(pieces) + "))")
        code = "def encode_layout(d):\n" + "\n".join(body) + "\n"
        exec(compile(code, "<iso_switch.codec layout>", "exec"), self.ns)
        fn: EncodeFn = self.ns["encode_layout"]
        return fn


def _join_text(segment: list[str]) -> str:
    if len(segment) == 1:
        return f"{segment[0]}.encode('ascii')"
    return "''.join((" + ", ".join(segment) + ")).encode('ascii')"
