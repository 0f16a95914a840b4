"""``iso-switch keys``: generate, import, list and rotate wrapped keys.

Keys never appear on the command line or in output: ``list`` shows names,
usages and KCVs; a clear key to import is read from an environment variable
(argv is visible to every user through ``ps``); key blocks are TR-31.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeAlias

from iso_switch.security import tr31
from iso_switch.security.errors import SecurityError
from iso_switch.security.keystore import (
    MASTER_KCV_FILE,
    MASTER_KEY_ENV,
    KeyInfo,
    KeyStore,
    MasterKey,
    resolve_master_key,
)

KEYS_DIR_ENV = "ISO_SWITCH_KEYS_DIR"
DEFAULT_KEYS_DIR = "keys"
_USAGES_HELP = (
    "B0 base derivation key (DUKPT BDK), P0 PIN encryption, M3 retail MAC (ISO 9797-1 alg 3), "
    "M6 AES-CMAC, M7 HMAC (the PAN hash key), V1 IBM 3624 PVK, V2 Visa PVV PVK, "
    "K0 key encryption key, D0 data"
)

# What argparse.add_subparsers returns (not subscriptable at run time).
_Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def register(subparsers: _Subparsers) -> None:
    """``keys`` and its actions, each declared by a function of its own."""
    keys = subparsers.add_parser(
        "keys",
        help="manage the wrapped key store (TR-31 key blocks under a master key)",
        description="Manage the key store: every key at rest is a TR-31 key block wrapped "
        f"under a master key taken from ${MASTER_KEY_ENV} (hex) or --master-key-file. "
        "Output shows names, usages and KCVs, never key material.",
    )
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    for register_action in (_register_list, _register_generate, _register_import,
                            _register_rotate):
        register_action(keys_sub)


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    """The key store's location and master key, taken by every action."""
    parser.add_argument(
        "--keys-dir", default=os.environ.get(KEYS_DIR_ENV, DEFAULT_KEYS_DIR),
        help=f"key store directory (default ${KEYS_DIR_ENV} or ./{DEFAULT_KEYS_DIR})",
    )
    parser.add_argument(
        "--master-key-file",
        help=f"file holding the master key in hex (used when ${MASTER_KEY_ENV} is unset)",
    )
    parser.add_argument(
        "--demo", action="store_true",
        help="allow the built-in DEMO master key (also chosen automatically when the "
        "store records the demo key's KCV); never for real keys",
    )


def _register_list(sub: _Subparsers) -> None:
    listing = sub.add_parser("list", help="show names, usages, KCVs and dates",
                             description="List stored keys: no key material is shown.")
    _common_arguments(listing)
    listing.set_defaults(func=_list)


def _register_generate(sub: _Subparsers) -> None:
    generate = sub.add_parser(
        "generate", help="create a random key",
        description="Create a random key and store it wrapped. " + _USAGES_HELP + ".",
    )
    _common_arguments(generate)
    generate.add_argument("name", help="key name: lower-case letters, digits, . _ -")
    _key_kind_arguments(generate)
    generate.add_argument("--length", type=int, default=16,
                          help="key length in bytes (TDES 16/24, AES 16/24/32, HMAC 32-64; "
                          "default 16)")
    generate.set_defaults(func=_generate)


def _register_import(sub: _Subparsers) -> None:
    importer = sub.add_parser(
        "import", help="import a TR-31 key block, or a clear key from an environment variable",
        description="Import a key. With --block/--block-file: a TR-31 key block wrapped under "
        "the stored key encryption key --kek (usage, mode and key set travel in the block). "
        "With --clear-from-env VAR: a clear key in hex from environment variable VAR, with "
        "--usage etc. (key ceremony use only; never pass a key as an argument).",
    )
    _common_arguments(importer)
    importer.add_argument("name", help="name to store the key under")
    source = importer.add_mutually_exclusive_group(required=True)
    source.add_argument("--block", help="the TR-31 key block text")
    source.add_argument("--block-file", help="file holding the TR-31 key block")
    source.add_argument("--clear-from-env", metavar="VAR",
                        help="environment variable holding the clear key in hex")
    importer.add_argument("--kek", help="stored key encryption key (K0) the block is wrapped under")
    _key_kind_arguments(importer, required=False)
    importer.set_defaults(func=_import)


def _register_rotate(sub: _Subparsers) -> None:
    rotate = sub.add_parser(
        "rotate", help="replace a key with a fresh one, or re-wrap all under a new master key",
        description="Rotate NAME: a fresh random key of the same usage, key version + 1, the old "
        "block moved to retired/. A BDK needs --key-set-id (terminals select BDKs by it). "
        "Or rotate the master key with --new-master-key-env VAR / --new-master-key-file F: "
        "every block is re-wrapped and checked before any file is replaced.",
    )
    _common_arguments(rotate)
    rotate.add_argument("name", nargs="?", help="key to rotate (omit with --new-master-key-*)")
    rotate.add_argument("--key-set-id", help="new key set identifier (10 hex) for a BDK")
    rotate.add_argument("--new-master-key-env", metavar="VAR",
                        help="re-wrap every key under the master key in environment variable VAR")
    rotate.add_argument("--new-master-key-file", metavar="FILE",
                        help="re-wrap every key under the master key held in FILE")
    rotate.set_defaults(func=_rotate)


def _key_kind_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--usage", required=required, choices=sorted(tr31.USAGE_MODES),
                        help="TR-31 key usage: " + _USAGES_HELP)
    parser.add_argument("--algorithm", default="T", choices=("T", "A", "H"),
                        help="T = TDES (stored as a version B block), A = AES (version D), "
                        "H = HMAC (version D; 32-64 bytes)")
    parser.add_argument("--mode", help="TR-31 mode of use (default: the usual one for the usage)")
    parser.add_argument("--key-set-id", help="key set identifier (10 hex) for a BDK (B0)")
    parser.add_argument("--exportable", action="store_true",
                        help="allow export under a key encryption key")


def _open_store(args: argparse.Namespace, create: bool = False) -> KeyStore:
    directory = Path(args.keys_dir)
    allow_demo = bool(args.demo) or _records_demo_kcv(directory)
    master = resolve_master_key(args.master_key_file, allow_demo=allow_demo)
    if master.is_demo:
        print("warning: using the DEMO master key: demo keys only", file=sys.stderr)
    return KeyStore(directory, master, create=create)


def _records_demo_kcv(directory: Path) -> bool:
    path = directory / MASTER_KCV_FILE
    try:
        return path.read_text(encoding="ascii").split()[-1] == MasterKey.demo().kcv
    except (OSError, IndexError, UnicodeDecodeError):
        return False


def _print_infos(infos: list[KeyInfo]) -> None:
    header = ("NAME", "USAGE", "ALG", "MODE", "VER", "EXP", "KCV", "KEY SET", "CREATED")
    rows = [header] + [
        (i.name, i.usage, i.algorithm, i.mode_of_use, i.key_version,
         "yes" if i.exportable else "no", i.kcv, i.key_set_id or "-", i.created)
        for i in infos
    ]
    widths = [max(len(row[col]) for row in rows) for col in range(len(header))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())


def _guarded(
    action: str,
    args: argparse.Namespace,
    func: Callable[[KeyStore], list[KeyInfo]],
    create: bool = False,
) -> int:
    try:
        infos = func(_open_store(args, create))
    except SecurityError as exc:
        print(f"error: keys {action}: {exc} (nothing was changed)", file=sys.stderr)
        return 1
    _print_infos(infos)
    return 0


def _list(args: argparse.Namespace) -> int:
    return _guarded("list", args, lambda store: store.list_keys())


def _generate(args: argparse.Namespace) -> int:
    return _guarded("generate", args, lambda store: [store.generate(
        args.name, args.usage, args.algorithm, args.length, args.mode,
        exportable=args.exportable, key_set_id=args.key_set_id,
    )], create=True)


def _import(args: argparse.Namespace) -> int:
    def run(store: KeyStore) -> list[KeyInfo]:
        if args.clear_from_env:
            value = os.environ.get(args.clear_from_env)
            if not value or args.usage is None:
                raise SecurityError("--clear-from-env needs the variable set and --usage")
            try:
                key = bytes.fromhex(value.strip())
            except ValueError:
                raise SecurityError("the clear key is not hex") from None
            return [store.add(args.name, key, args.usage, args.algorithm, args.mode,
                              exportable=args.exportable, key_set_id=args.key_set_id)]
        if not args.kek:
            raise SecurityError("importing a key block needs --kek")
        block = args.block
        if args.block_file:
            try:
                block = Path(args.block_file).read_text(encoding="ascii")
            except (OSError, UnicodeDecodeError):
                raise SecurityError("cannot read the key block file") from None
        kek = store.key_for(args.kek, (tr31.USAGE_KEK, tr31.USAGE_KBPK), tr31.MODE_DECRYPT)
        return [store.import_block(args.name, block.strip(), kek)]

    return _guarded("import", args, run, create=True)


def _rotate(args: argparse.Namespace) -> int:
    def run(store: KeyStore) -> list[KeyInfo]:
        if args.new_master_key_env or args.new_master_key_file:
            if args.new_master_key_env:
                new_master = MasterKey.from_env(args.new_master_key_env)
                if new_master is None:
                    raise SecurityError(f"environment variable {args.new_master_key_env} is unset")
            else:
                new_master = MasterKey.from_file(args.new_master_key_file)
            store.rewrap(new_master)
            return store.list_keys()
        if not args.name:
            raise SecurityError("name a key to rotate, or give --new-master-key-env/-file")
        return [store.rotate(args.name, args.key_set_id)]

    return _guarded("rotate", args, run)
