"""The ``iso-switch`` command.

Each subcommand group lives in its own module under ``iso_switch.cli`` and
exposes ``register(subparsers)``; the module adds its parsers and sets
``func`` on each. Modules are imported lazily by name so that, say,
``iso-switch decode`` never imports trio or the ledger.

Exit codes: 0 success, 1 the operation failed (bad input, check failed),
2 usage error (argparse).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Add a module here to add its subcommands. Order is the order in --help.
COMMAND_MODULES: tuple[str, ...] = (
    "iso_switch.cli.serve_cmd",
    "iso_switch.cli.codec_cmd",
    "iso_switch.cli.keys_cmd",
    "iso_switch.cli.config_cmd",
    "iso_switch.cli.ledger_cmd",
    "iso_switch.cli.admin_cmd",
    "iso_switch.cli.saf_cmd",
    "iso_switch.cli.audit_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iso-switch",
        description="An ISO 8583 payment switch: serve terminals, inspect messages, "
        "manage keys, accounts and the ledger.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
