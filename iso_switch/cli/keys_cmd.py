"""``iso-switch keys``: generate, import, list and rotate wrapped keys.

Keys never appear on the command line or in output: ``list`` shows names,
usages and KCVs; a clear key or key component to import is read from an
environment variable, a private file or a prompt that does not echo (argv
is visible to every user through ``ps``); key blocks are TR-31. Every
change is recorded in the ledger's audit log (who, which key, KCVs).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sqlite3
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from iso_switch.security import tr31
from iso_switch.security.components import (
    COMPONENTS_MAX,
    COMPONENTS_MIN,
    check_component,
    combine_components,
)
from iso_switch.security.errors import SecurityError
from iso_switch.security.keystore import (
    MASTER_KCV_FILE,
    MASTER_KEY_ENV,
    KeyInfo,
    KeyStore,
    MasterKey,
    resolve_master_key,
)

if TYPE_CHECKING:
    from iso_switch.ledger.sqlite import SqliteLedgerStore

KEYS_DIR_ENV = "ISO_SWITCH_KEYS_DIR"
DEFAULT_KEYS_DIR = "keys"
DATA_DIR_ENV = "ISO_SWITCH_DATA_DIR"
LEDGER_FILE = "ledger.sqlite3"
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
    parser.add_argument(
        "--data-dir",
        help=f"the switch's data directory whose ledger's audit log records a change (default "
        f"${DATA_DIR_ENV}, else the key store's parent directory when it holds {LEDGER_FILE})",
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
        "import", help="import a TR-31 key block, a clear key, or a key in components",
        description="Import a key. With --block/--block-file: a TR-31 key block wrapped under "
        "the stored key encryption key --kek (usage, mode and key set travel in the block). "
        "With --clear-from-env VAR: a clear key in hex from environment variable VAR, with "
        "--usage etc. (key ceremony use only; never pass a key as an argument). With "
        f"--components N ({COMPONENTS_MIN} or {COMPONENTS_MAX}): N clear components in hex, "
        "XORed into the key (TDES or AES), each with its KCV, from --component-env variables, "
        "--component-file files (readable by their owner only) or, by default, prompts that "
        "do not echo; each component is checked against its KCV (--component-kcv, or "
        "prompted) before the next is asked for, and components that are alike or cancel "
        "out are refused. Components are never stored, printed or logged; the combined key's "
        "KCV is printed and recorded.",
    )
    _common_arguments(importer)
    importer.add_argument("name", help="name to store the key under")
    source = importer.add_mutually_exclusive_group(required=True)
    source.add_argument("--block", help="the TR-31 key block text")
    source.add_argument("--block-file", help="file holding the TR-31 key block")
    source.add_argument("--clear-from-env", metavar="VAR",
                        help="environment variable holding the clear key in hex")
    source.add_argument("--components", type=int, choices=(COMPONENTS_MIN, COMPONENTS_MAX),
                        metavar="N", help="import the key as N clear components (2 or 3)")
    importer.add_argument("--component-env", metavar="VAR", action="append",
                          help="environment variable holding one component in hex (give it "
                          "once per component, in order)")
    importer.add_argument("--component-file", metavar="FILE", action="append",
                          help="file holding one component in hex (once per component)")
    importer.add_argument("--component-kcv", metavar="KCV", action="append",
                          help="a component's KCV (once per component, in order; default: "
                          "prompted after each component)")
    importer.add_argument("--kek", help="stored key encryption key (K0) the block is wrapped under")
    _key_kind_arguments(importer, required=False)
    importer.set_defaults(func=_import)


def _register_rotate(sub: _Subparsers) -> None:
    rotate = sub.add_parser(
        "rotate", help="replace a key with a fresh one, or re-wrap all under a new master key",
        description="Rotate NAME: a fresh random key of the same usage, key version + 1, the old "
        "block kept in retired/ with the time it was replaced. A BDK needs a new --key-set-id "
        "(terminals select BDKs by it); the old BDK keeps serving its old key set for "
        "keys.bdk_rotation_grace_h hours. PIN verification keys and the PAN hash key are "
        "refused (data on file depends on them). "
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


@dataclass(frozen=True, slots=True)
class _Change:
    """What one ``keys`` action changed, as the audit log records it: key
    names, usages, versions and KCVs, never key material."""

    target: str
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None
    infos: list[KeyInfo] = field(default_factory=list)


def _describe(info: KeyInfo, **extra: object) -> dict[str, object]:
    return {"usage": info.usage, "algorithm": info.algorithm, "version": info.key_version,
            "kcv": info.kcv, "key_set_id": info.key_set_id, **extra}


def _ledger_dir(args: argparse.Namespace) -> Path | None:
    """Where the audit log is: ``--data-dir``, ``$ISO_SWITCH_DATA_DIR``, or
    the key store's parent when a ledger is there (``<data_dir>/keys``)."""
    named = args.data_dir or os.environ.get(DATA_DIR_ENV)
    if named:
        return Path(named)
    parent = Path(args.keys_dir).resolve().parent
    return parent if (parent / LEDGER_FILE).exists() else None


def _open_ledger(args: argparse.Namespace) -> SqliteLedgerStore | None:
    """The ledger whose audit log records the change, opened before the
    change is made, so a ledger that cannot be written stops it."""
    directory = _ledger_dir(args)
    if directory is None:
        return None
    from iso_switch.processor import open_store

    try:
        return open_store(directory)
    except (sqlite3.Error, OSError) as exc:
        raise SecurityError(f"cannot open the ledger under {directory} for the audit log: "
                            f"{type(exc).__name__}") from None


def _record(ledger: SqliteLedgerStore | None, action: str, change: _Change) -> None:
    if ledger is None:
        print(f"note: not recorded in an audit log: no ledger found; name it with --data-dir "
              f"or ${DATA_DIR_ENV}", file=sys.stderr)
        return
    from iso_switch.ledger.audit import os_user

    with ledger.write():
        ledger.append_audit(os_user(), f"key.{action}", change.target, change.before,
                            change.after, datetime.now(UTC))


def _guarded(
    action: str,
    args: argparse.Namespace,
    func: Callable[[KeyStore], _Change],
    create: bool = False,
) -> int:
    """Run one action: errors print as one line (nothing changed), a change
    is recorded in the audit log, and the keys it touched are listed."""
    ledger = None
    try:
        store = _open_store(args, create)
        ledger = _open_ledger(args)
        change = func(store)
    except SecurityError as exc:
        print(f"error: keys {action}: {exc} (nothing was changed)", file=sys.stderr)
        if ledger is not None:
            ledger.close()
        return 1
    try:
        _record(ledger, action, change)
    except sqlite3.Error as exc:
        print(f"error: keys {action}: the change was made, but its audit log entry could not "
              f"be written ({type(exc).__name__}): record it by hand", file=sys.stderr)
        return 1
    finally:
        if ledger is not None:
            ledger.close()
    _print_infos(change.infos)
    return 0


def _list(args: argparse.Namespace) -> int:
    try:
        store = _open_store(args)
    except SecurityError as exc:
        print(f"error: keys list: {exc} (nothing was changed)", file=sys.stderr)
        return 1
    _print_infos(store.list_keys())
    retired = store.retired_bdks()
    if retired:
        print("\nrotated BDKs (their key sets are served during the grace period, "
              "keys.bdk_rotation_grace_h):")
        for bdk in retired:
            print(f"  {bdk.name} version {bdk.key_version}  KCV {bdk.kcv}  key set "
                  f"{bdk.key_set_id}  rotated {bdk.retired_at:%Y-%m-%dT%H:%M:%SZ}")
    return 0


def _generate(args: argparse.Namespace) -> int:
    def run(store: KeyStore) -> _Change:
        info = store.generate(args.name, args.usage, args.algorithm, args.length, args.mode,
                              exportable=args.exportable, key_set_id=args.key_set_id)
        return _Change(info.name, None, _describe(info, source="generated"), [info])

    return _guarded("generate", args, run, create=True)


def _import(args: argparse.Namespace) -> int:
    def run(store: KeyStore) -> _Change:
        if args.components:
            return _import_components(store, args)
        if args.clear_from_env:
            value = os.environ.get(args.clear_from_env)
            if not value or args.usage is None:
                raise SecurityError("--clear-from-env needs the variable set and --usage")
            try:
                key = bytes.fromhex(value.strip())
            except ValueError:
                raise SecurityError("the clear key is not hex") from None
            info = store.add(args.name, key, args.usage, args.algorithm, args.mode,
                             exportable=args.exportable, key_set_id=args.key_set_id)
            return _Change(info.name, None, _describe(info, source="clear key"), [info])
        if not args.kek:
            raise SecurityError("importing a key block needs --kek")
        block = args.block
        if args.block_file:
            try:
                block = Path(args.block_file).read_text(encoding="ascii")
            except (OSError, UnicodeDecodeError):
                raise SecurityError("cannot read the key block file") from None
        kek = store.key_for(args.kek, (tr31.USAGE_KEK, tr31.USAGE_KBPK), tr31.MODE_DECRYPT)
        info = store.import_block(args.name, block.strip(), kek)
        return _Change(info.name, None, _describe(info, source=f"key block under {args.kek}"),
                       [info])

    return _guarded("import", args, run, create=True)


def _import_components(store: KeyStore, args: argparse.Namespace) -> _Change:
    """Read, check and combine the components, then store the key. The
    ledger is not locked meanwhile: prompts may take a custodian minutes."""
    if args.usage is None:
        raise SecurityError("--components needs --usage")
    if args.name in store:
        raise SecurityError(f"a key named {args.name!r} already exists")
    components, kcvs = _read_components(args)
    key = combine_components(components, kcvs, args.algorithm)
    info = store.add(args.name, key, args.usage, args.algorithm, args.mode,
                     exportable=args.exportable, key_set_id=args.key_set_id)
    print(f"{len(components)} components match their KCVs; the combined key's KCV is "
          f"{info.kcv}")
    return _Change(info.name, None, _describe(
        info, source=f"{len(components)} components",
        component_kcvs=[k.strip().upper() for k in kcvs]), [info])


def _read_components(args: argparse.Namespace) -> tuple[list[bytes], list[str]]:
    """Each component and its KCV, checked one by one (a wrong entry stops
    the ceremony there, naming the component by number)."""
    count: int = args.components
    envs: list[str] = args.component_env or []
    files: list[str] = args.component_file or []
    kcvs: list[str] = args.component_kcv or []
    if envs and files:
        raise SecurityError("take the components from variables or from files, not both")
    for given, what in ((envs or files, "component sources"), (kcvs, "--component-kcv values")):
        if given and len(given) != count:
            raise SecurityError(f"{count} components need {count} {what}, not {len(given)}")
    components: list[bytes] = []
    checked: list[str] = []
    for number in range(1, count + 1):
        if envs:
            text = _component_from_env(number, envs[number - 1])
        elif files:
            text = _component_from_file(number, files[number - 1])
        else:
            text = _read_secret(f"component {number} of {count} (hex, not shown): ")
        component = _component_bytes(number, text)
        expected = kcvs[number - 1] if kcvs else _read_kcv(number)
        check_component(number, component, expected, args.algorithm)
        components.append(component)
        checked.append(expected)
    return components, checked


def _read_secret(prompt: str) -> str:
    """A prompt that does not echo; refused without a terminal (getpass
    would fall back to an echoing read)."""
    if not sys.stdin.isatty():
        raise SecurityError("no terminal to prompt on: give --component-env or "
                            "--component-file")
    try:
        return getpass.getpass(prompt)
    except EOFError:
        raise SecurityError("no component was entered") from None


def _read_kcv(number: int) -> str:
    """A component's KCV, echoed (it is public: custodians read it out)."""
    try:
        return input(f"KCV of component {number}: ")
    except EOFError:
        raise SecurityError(f"no KCV was entered for component {number}") from None


def _component_from_env(number: int, var: str) -> str:
    value = os.environ.get(var)
    if not value:
        raise SecurityError(f"component {number}: environment variable {var} is unset")
    return value


def _component_from_file(number: int, path: str) -> str:
    try:
        mode = os.stat(path).st_mode
        if mode & 0o077:
            raise SecurityError(f"component {number}: its file is readable by others (mode "
                                f"{mode & 0o777:04o}): chmod 600 it")
        return Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise SecurityError(f"component {number}: cannot read its file "
                            f"({type(exc).__name__})") from None


def _component_bytes(number: int, text: str) -> bytes:
    """Hex, spaces allowed (ceremony forms group the digits); the message
    names the component, never what was entered."""
    try:
        return bytes.fromhex("".join(text.split()))
    except ValueError:
        raise SecurityError(f"component {number} is not hex") from None


def _rotate(args: argparse.Namespace) -> int:
    def run(store: KeyStore) -> _Change:
        if args.new_master_key_env or args.new_master_key_file:
            if args.new_master_key_env:
                new_master = MasterKey.from_env(args.new_master_key_env)
                if new_master is None:
                    raise SecurityError(f"environment variable {args.new_master_key_env} is unset")
            else:
                new_master = MasterKey.from_file(args.new_master_key_file)
            before = {"master_kcv": store.master_kcv}
            store.rewrap(new_master)
            return _Change("master key", before, {"master_kcv": new_master.kcv},
                           store.list_keys())
        if not args.name:
            raise SecurityError("name a key to rotate, or give --new-master-key-env/-file")
        old = store.info(args.name)
        info = store.rotate(args.name, args.key_set_id)
        return _Change(info.name, _describe(old), _describe(info), [info])

    return _guarded("rotate", args, run)
