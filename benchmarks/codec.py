"""Codec benchmark: iso-switch's compiled codec against pyiso8583.

    python -m benchmarks.codec [--rounds N] [--json]

For each dialect and message it measures decode and encode ops/s of both
codecs in this one process, interleaved, best of N rounds, and prints the
ratio iso_switch / pyiso8583. Messages: a 0200 purchase with 24 fields
(DE35, DE43, DE102, DE103 among them), a minimal 0800 echo, and a 0100
with a 200-byte DE55.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

import iso8583

from benchmarks._timing import best_ops_per_s
from iso_switch.codec import Codec, load_spec

DIALECTS = ("ascii87-hex", "ascii87-bin", "bcd87")
PAN = "4761739001010010"


def messages(dialect: str) -> dict[str, dict[str, str]]:
    separator = "D" if dialect == "bcd87" else "="
    purchase = {
        "t": "0200", "2": PAN, "3": "000000", "4": "000000001234", "7": "1125123456",
        "11": "000001", "12": "123456", "13": "1125", "14": "2812", "18": "5411",
        "22": "051", "25": "00", "32": "12345678901", "35": PAN + separator + "28121011234567890",
        "37": "123456789012", "41": "TERM0001", "42": "MERCHANT0000001",
        "43": "ACME STORE               SHANGHAI     CN", "49": "156",
        "52": "0123456789ABCDEF", "62": "FFFF9876543210E00001", "102": "6222020000000015",
        "103": "6222020000000023", "128": "0123456789ABCDEF",
    }
    echo = {"t": "0800", "7": "1125123456", "11": "000001", "70": "301"}
    icc = "9F2608" + "AB" * 8 + "9F2701809F10120110A0000F040000000000000000000000FF"
    icc += "9F3704" + "12" * 4 + "9F3602001C" + "950500000000009A032511259C0100"
    icc += "9F02060000000012345F2A0201569F1A020156820239009F3303E0F0C8"
    icc = icc + "00" * ((400 - len(icc)) // 2)  # pad to exactly 200 bytes
    auth = {
        "t": "0100", "2": PAN, "3": "000000", "4": "000000005000", "7": "1125123456",
        "11": "000002", "12": "123456", "13": "1125", "22": "051", "41": "TERM0001",
        "42": "MERCHANT0000001", "49": "156", "55": icc, "62": "FFFF9876543210E00002",
    }
    return {
        "0200 purchase (24 fields)": purchase,
        "0800 echo": echo,
        "0100 with 200-byte DE55": auth,
    }


def _ops(codec: Codec, spec: dict[str, Any], raw: bytes, doc: dict[str, str]) -> list[
    Callable[[], object]
]:
    return [
        lambda: codec.decode(raw),
        lambda: iso8583.decode(raw, spec),
        lambda: codec.encode(doc),
        # pyiso8583 mutates its input, so it gets a copy (as callers must).
        lambda: iso8583.encode(dict(doc), spec),
    ]


def run(rounds: int) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for dialect in DIALECTS:
        spec = load_spec(dialect)
        codec = Codec(spec)
        for label, doc in messages(dialect).items():
            raw = bytes(iso8583.encode(dict(doc), spec)[0])
            assert len(doc.get("55", "")) in (0, 400)
            # Correctness first: the figures compare identical work.
            for _ in range(3):
                assert codec.decode(raw) == iso8583.decode(bytearray(raw), spec)[0]
                assert codec.encode(doc) == raw
            ours_dec, ref_dec, ours_enc, ref_enc = best_ops_per_s(
                _ops(codec, spec, raw, doc), rounds
            )
            for op, ours, ref in (("decode", ours_dec, ref_dec), ("encode", ours_enc, ref_enc)):
                rows.append({
                    "spec": dialect, "message": label, "op": op,
                    "iso_switch_ops_s": round(ours), "pyiso8583_ops_s": round(ref),
                    "ratio": round(ours / ref, 2),
                })
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.codec",
        description="Decode/encode ops/s of iso-switch's codec vs pyiso8583, same process.",
    )
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds, best counts")
    parser.add_argument("--json", action="store_true", help="print a JSON list of rows")
    args = parser.parse_args(argv)
    rows = run(args.rounds)
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        print()
        return 0
    header = ("spec", "message", "op", "iso_switch/s", "pyiso8583/s", "ratio")
    print(f"{header[0]:12} {header[1]:27} {header[2]:7} {header[3]:>13} {header[4]:>12} "
          f"{header[5]:>6}")
    for row in rows:
        print(f"{row['spec']:12} {row['message']:27} {row['op']:7} {row['iso_switch_ops_s']:>13,} "
              f"{row['pyiso8583_ops_s']:>12,} {row['ratio']:>6.1f}x")
    worst = min(float(str(row["ratio"])) for row in rows)
    print(f"lowest ratio: {worst:.1f}x (target >= 10x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
