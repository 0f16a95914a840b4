"""The wrapped key store: every key at rest is a TR-31 key block.

Layout of a key store directory (default ``keys/`` in the checkout)::

    keys/
      master.kcv            KCV of the master key the blocks are wrapped under
      <name>.tr31           one TR-31 key block per key, one line of ASCII
      retired/<name>.v<NN>.tr31   keys replaced by ``rotate``, with the time
                            they were replaced (only BDKs are loaded from here)

The master key never sits in that directory: it comes from the environment
variable :data:`MASTER_KEY_ENV` (hex) or from a file named in the
configuration. From it two key block protection keys are derived (NIST SP
800-108 counter mode with AES-CMAC): a TDES one for version B blocks (TDES
keys) and an AES-256 one for version D blocks (AES keys). ``master.kcv``
lets the store tell "wrong master key" apart from "corrupted block".

A key's name, creation time, KCV and (for a BDK) key set identifier live in
optional blocks of its header, so the block's MAC authenticates them: a
renamed or edited file fails to load instead of silently changing meaning.
Writes go to a temporary file and are renamed into place, so a failed
operation overwrites nothing.

A rotated BDK stays readable: deployed terminals still hold keys derived
from it and select it by its key set identifier, so the store serves it
(:meth:`KeyStore.retired_bdk`) and the HSM decides how long it may still be
used. Its retirement time is in an optional block of the retired key
block, authenticated like the rest of the header.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from iso_switch.security._ciphers import aes_cmac
from iso_switch.security.errors import KeyBlockError, KeyStoreError, KeyUsageError
from iso_switch.security.kcv import aes_kcv, kcv
from iso_switch.security.tr31 import (
    EXPORTABLE,
    USAGE_BDK,
    USAGE_MODES,
    KeyBlockHeader,
    parse_header,
    require_use,
    unwrap,
    wrap,
)

logger = logging.getLogger(__name__)

MASTER_KEY_ENV = "ISO_SWITCH_MASTER_KEY"
MASTER_KEY_BYTES = 32
MASTER_KCV_FILE = "master.kcv"
KEY_FILE_SUFFIX = ".tr31"
RETIRED_DIR = "retired"
KEY_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,47}$")
KEY_FILE_BYTES_MAX = 10_000
KEYS_MAX = 10_000
KEY_FILE_MODE = 0o600
KEY_DIR_MODE = 0o700
IMPORT_VERSIONS = ("B", "D")
#: Usages whose key material other data depends on: rotating them in place
#: would make every PIN verification value or card lookup hash on file fail.
NOT_ROTATABLE = {
    "V1": "an IBM 3624 PIN verification key",
    "V2": "a Visa PVV PIN verification key",
    "M7": "the PAN hash key",
}
# HMAC keys (algorithm "H"): at least the hash's output size, at most a block.
HMAC_KEY_BYTES_MIN = 32
HMAC_KEY_BYTES_MAX = 64
# Proprietary optional blocks (X9.143 reserves ids starting with a digit).
_OPT_NAME = "0N"
_OPT_CREATED = "0T"
_OPT_RETIRED = "0R"
# Standard optional blocks: BDK identifier ("00" + key set id for TDES) and KCV.
_OPT_BDK_ID = "BI"
_OPT_KCV = "KC"

DEMO_MASTER_KEY = bytes.fromhex(
    "1CB854FBA988144C9ACE15478D7158B014D078B0F082F21F62923E326BFE124D"
)
"""DEMO ONLY. The master key the shipped ``keys/`` directory is wrapped
under, published here so the demo runs with no setup. Anything wrapped
under it is as good as clear: never put a real key under it. The switch
logs a warning whenever a key store opens with it."""


class MasterKey:
    """The key that wraps the store. Its repr shows the KCV, never the key."""

    __slots__ = ("_key", "source")

    def __init__(self, key: bytes, source: str) -> None:
        if len(key) != MASTER_KEY_BYTES:
            raise KeyStoreError(f"the master key must be {MASTER_KEY_BYTES} bytes "
                                f"({2 * MASTER_KEY_BYTES} hex characters)")
        self._key = key
        self.source = source

    def __repr__(self) -> str:
        return f"MasterKey(kcv={self.kcv!r}, source={self.source!r}, demo={self.is_demo})"

    @classmethod
    def from_hex(cls, text: str, source: str) -> MasterKey:
        cleaned = text.strip()
        try:
            key = bytes.fromhex(cleaned)
        except ValueError:
            raise KeyStoreError(f"the master key from {source} is not hex") from None
        return cls(key, source)

    @classmethod
    def from_env(cls, var: str = MASTER_KEY_ENV,
                 environ: Mapping[str, str] | None = None) -> MasterKey | None:
        value = (os.environ if environ is None else environ).get(var)
        return None if not value else cls.from_hex(value, f"environment variable {var}")

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> MasterKey:
        try:
            mode = os.stat(path).st_mode
            if mode & 0o077:
                raise KeyStoreError(
                    f"the master key file {path} is readable by others (mode "
                    f"{mode & 0o777:04o}): chmod 600 it")
            text = Path(path).read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyStoreError(f"cannot read the master key file {path}: "
                                f"{type(exc).__name__}") from None
        return cls.from_hex(text, f"file {path}")

    @classmethod
    def demo(cls) -> MasterKey:
        return cls(DEMO_MASTER_KEY, "the built-in DEMO master key")

    @property
    def is_demo(self) -> bool:
        return secrets.compare_digest(self._key, DEMO_MASTER_KEY)

    @property
    def kcv(self) -> str:
        return aes_kcv(self._key)

    def _derive(self, label: bytes, length: int) -> bytes:
        """NIST SP 800-108 KDF in counter mode with AES-CMAC as the PRF."""
        out = b""
        counter = 1
        while len(out) < length:
            data = bytes((counter,)) + label + b"\x00" + (length * 8).to_bytes(2, "big")
            out += aes_cmac(self._key, data)
            counter += 1
        return out[:length]

    def kbpk_for(self, version: str) -> bytes:
        """Key block protection key for version B (TDES) or D (AES)."""
        if version == "B":
            return self._derive(b"iso-switch TR-31 B KBPK", 24)
        if version == "D":
            return self._derive(b"iso-switch TR-31 D KBPK", 32)
        raise KeyStoreError("the key store writes version B and D key blocks only")


def resolve_master_key(
    master_key_file: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    allow_demo: bool = False,
) -> MasterKey:
    """The master key from, in order: :data:`MASTER_KEY_ENV`, the file named
    in the configuration, or (only if ``allow_demo``) the demo master key."""
    from_env = MasterKey.from_env(environ=environ)
    if from_env is not None:
        return from_env
    if master_key_file is not None:
        return MasterKey.from_file(master_key_file)
    if allow_demo:
        return MasterKey.demo()
    raise KeyStoreError(
        f"no master key: set {MASTER_KEY_ENV} (hex) or name a master key file in the "
        "configuration"
    )


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What may be shown about a stored key: never the key itself."""

    name: str
    usage: str
    algorithm: str
    mode_of_use: str
    kcv: str
    created: str
    key_set_id: str | None = None
    key_version: str = "00"
    exportable: bool = False


@dataclass(frozen=True, slots=True)
class _Entry:
    info: KeyInfo
    header: KeyBlockHeader
    key: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class RetiredBdk:
    """A BDK replaced by ``rotate``: what the HSM needs to let its devices
    finish their grace period. ``retired_at``: when it was replaced (UTC)."""

    name: str
    key_set_id: str
    key_version: str
    kcv: str
    retired_at: _dt.datetime
    key: bytes = field(repr=False)


def _retired_bdk(entry: _Entry) -> RetiredBdk:
    info = entry.info
    assert info.key_set_id is not None  # only BDKs are retired into the map
    return RetiredBdk(
        name=info.name, key_set_id=info.key_set_id, key_version=info.key_version,
        kcv=info.kcv, retired_at=_parse_utc(entry.header.optional(_OPT_RETIRED) or ""),
        key=entry.key)


def _write_durably(path: Path, text: str) -> None:
    """Write ``path`` 0600 and fsync it, so a key survives a power cut the
    moment the command that made it returns."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, KEY_FILE_MODE)
    try:
        os.write(fd, text.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(directory: Path) -> None:
    """fsync a directory, so the renames into it are durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _now_utc() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_key_name(name: str) -> None:
    if not isinstance(name, str) or not KEY_NAME_PATTERN.match(name):
        raise KeyStoreError("key names are 1-48 characters: lower-case letters, digits, . _ -")


def _parse_utc(text: str) -> _dt.datetime:
    return _dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.UTC)


def _build_block(
    master: MasterKey, name: str, key: bytes, usage: str, algorithm: str, mode_of_use: str,
    exportable: bool, key_set_id: str | None, key_version: str, created: str,
    retired: str | None = None,
) -> str:
    """The TR-31 block a stored key is kept as, metadata in optional blocks
    (``retired``: when ``rotate`` replaced it, for a block in ``retired/``)."""
    optional: list[tuple[str, str]] = [(_OPT_NAME, name), (_OPT_CREATED, created)]
    if retired is not None:
        optional.append((_OPT_RETIRED, retired))
    if key_set_id is not None:
        optional.append((_OPT_BDK_ID, "00" + key_set_id.upper()))
    optional.append((_OPT_KCV, ("00" if algorithm == "T" else "01") + kcv(key, algorithm)))
    version = _version_for(algorithm)
    header = KeyBlockHeader(
        version=version, key_usage=usage, algorithm=algorithm, mode_of_use=mode_of_use,
        key_version=key_version, exportability=EXPORTABLE if exportable else "N",
        optional_blocks=tuple(optional),
    )
    return wrap(master.kbpk_for(version), header, key)


def _version_for(algorithm: str) -> str:
    """Version D (AES key block protection) for AES and HMAC keys, B for TDES."""
    if algorithm in ("A", "H"):
        return "D"
    if algorithm == "T":
        return "B"
    raise KeyStoreError("the key store holds TDES ('T'), AES ('A') and HMAC ('H') keys")


class KeyStore:
    """Named keys, wrapped at rest, served only for their TR-31 usage.

    ``directory=None`` gives an in-memory store (tests, :meth:`SoftwareHsm
    .from_bdks`). Not thread-safe for writes; reads are.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None,
        master_key: MasterKey,
        *,
        create: bool = False,
    ) -> None:
        """Open the store in ``directory`` (``create``: a missing directory
        is a new, empty store, made on the first write)."""
        self._directory = None if directory is None else Path(directory)
        self._master = master_key
        self._entries: dict[str, _Entry] = {}
        self._retired_bdks: dict[str, _Entry] = {}
        # Key set ids of every BDK in retired/, usable or not: never reused.
        self._retired_key_sets: set[str] = set()
        if master_key.is_demo:
            logger.warning(
                "key store %s is wrapped under the DEMO master key: demo keys only, "
                "never use it with real cards", self._directory or "(memory)",
            )
        if self._directory is not None and not (create and not self._directory.exists()):
            self._load()

    def __repr__(self) -> str:
        return (f"KeyStore(directory={str(self._directory)!r}, keys={len(self._entries)}, "
                f"master_kcv={self._master.kcv!r})")

    # --- loading ---------------------------------------------------------

    def _load(self) -> None:
        directory = self._directory
        assert directory is not None
        if not directory.is_dir():
            raise KeyStoreError(f"key store directory {directory} does not exist")
        kcv_path = directory / MASTER_KCV_FILE
        if kcv_path.exists():
            recorded = kcv_path.read_text(encoding="ascii").split()[-1]
            if recorded != self._master.kcv:
                raise KeyStoreError(
                    f"wrong master key for {directory}: its KCV {self._master.kcv} differs from "
                    f"{recorded} recorded in {MASTER_KCV_FILE}"
                )
        files = sorted(directory.glob("*" + KEY_FILE_SUFFIX))
        if len(files) > KEYS_MAX:
            raise KeyStoreError(f"key store holds more than {KEYS_MAX} keys")
        for path in files:
            entry = self._read_block(path)
            self._entries[entry.info.name] = entry
        self._load_retired_bdks(directory / RETIRED_DIR)

    def _load_retired_bdks(self, retired: Path) -> None:
        """Every rotated BDK whose block records its retirement time (blocks
        of other usages, and older ones without that time, are history
        only). Their key set identifiers are remembered for good, so a new
        BDK never takes one: its devices would inherit the old replay state."""
        files = sorted(retired.glob("*" + KEY_FILE_SUFFIX)) if retired.is_dir() else []
        if len(files) > KEYS_MAX:
            raise KeyStoreError(f"{RETIRED_DIR}/ holds more than {KEYS_MAX} keys")
        for path in files:
            if path.stat().st_size > KEY_FILE_BYTES_MAX:
                raise KeyStoreError(f"key file {RETIRED_DIR}/{path.name} is too large")
            text = path.read_text(encoding="ascii", errors="replace").strip()
            try:
                header, _ = parse_header(text)
            except KeyBlockError:
                continue  # not ours to judge: history, never loaded
            bdk_id = header.optional(_OPT_BDK_ID)
            if header.key_usage != USAGE_BDK or not bdk_id:
                continue
            self._retired_key_sets.add(bdk_id[2:].upper())
            if header.optional(_OPT_RETIRED) is None:
                continue
            try:
                entry = self._open_block(text)
                _retired_bdk(entry)  # its time must parse
            except (KeyBlockError, ValueError) as exc:
                raise KeyStoreError(f"key file {RETIRED_DIR}/{path.name}: {exc}") from None
            self._retired_bdks[bdk_id[2:].upper()] = entry

    def _read_block(self, path: Path) -> _Entry:
        if path.stat().st_size > KEY_FILE_BYTES_MAX:
            raise KeyStoreError(f"key file {path.name} is too large")
        text = path.read_text(encoding="ascii", errors="replace").strip()
        try:
            entry = self._open_block(text)
        except KeyBlockError as exc:
            raise KeyStoreError(f"key file {path.name}: {exc}") from None
        if entry.info.name + KEY_FILE_SUFFIX != path.name:
            raise KeyStoreError(f"key file {path.name} holds a key named {entry.info.name!r}")
        return entry

    def _open_block(self, text: str) -> _Entry:
        header, _ = parse_header(text)
        if header.version not in ("B", "D"):
            raise KeyBlockError("stored key blocks must be version B or D")
        header, key = unwrap(self._master.kbpk_for(header.version), text)
        name = header.optional(_OPT_NAME)
        if name is None:
            raise KeyBlockError("stored key block has no name")
        check_value = kcv(key, header.algorithm)
        recorded = header.optional(_OPT_KCV)
        if recorded is not None and recorded[2:] != check_value:
            raise KeyBlockError("stored key block KCV does not match its key")
        bdk_id = header.optional(_OPT_BDK_ID)
        info = KeyInfo(
            name=name,
            usage=header.key_usage,
            algorithm=header.algorithm,
            mode_of_use=header.mode_of_use,
            kcv=check_value,
            created=header.optional(_OPT_CREATED) or "",
            key_set_id=bdk_id[2:] if bdk_id else None,
            key_version=header.key_version,
            exportable=header.exportability == EXPORTABLE,
        )
        return _Entry(info=info, header=header, key=key)

    # --- reading ---------------------------------------------------------

    @property
    def directory(self) -> Path | None:
        return self._directory

    @property
    def master_kcv(self) -> str:
        return self._master.kcv

    @property
    def uses_demo_master_key(self) -> bool:
        return self._master.is_demo

    def list_keys(self) -> list[KeyInfo]:
        return [self._entries[name].info for name in sorted(self._entries)]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def info(self, name: str) -> KeyInfo:
        return self._entry(name).info

    def header(self, name: str) -> KeyBlockHeader:
        return self._entry(name).header

    def _entry(self, name: str) -> _Entry:
        entry = self._entries.get(name)
        if entry is None:
            raise KeyStoreError(f"no key named {name!r} in the key store")
        return entry

    def key_for(self, name: str, usages: tuple[str, ...], operation: str) -> bytes:
        """The clear key ``name`` for an operation its usage and mode of use
        allow; :class:`KeyUsageError` otherwise (a PIN key cannot MAC)."""
        entry = self._entry(name)
        require_use(entry.header, usages, operation)
        return entry.key

    def bdk_for_key_set(self, key_set_id: str) -> bytes | None:
        """The TDES BDK whose key set identifier is ``key_set_id``, or None."""
        wanted = key_set_id.upper()
        for entry in self._entries.values():
            if entry.info.key_set_id == wanted and entry.header.key_usage == USAGE_BDK:
                require_use(entry.header, (USAGE_BDK,), "X")
                return entry.key
        return None

    def retired_bdk(self, key_set_id: str) -> RetiredBdk | None:
        """The rotated BDK of key set ``key_set_id``, or None. Whether it may
        still be used (its grace period) is the HSM's decision."""
        entry = self._retired_bdks.get(key_set_id.upper())
        return None if entry is None else _retired_bdk(entry)

    def retired_bdks(self) -> list[RetiredBdk]:
        return [_retired_bdk(self._retired_bdks[k]) for k in sorted(self._retired_bdks)]

    def key_set_ids(self) -> list[str]:
        return sorted(e.info.key_set_id for e in self._entries.values()
                      if e.info.key_set_id and e.header.key_usage == USAGE_BDK)

    def names_with_usage(self, usage: str) -> list[str]:
        return sorted(n for n, e in self._entries.items() if e.header.key_usage == usage)

    # --- writing ---------------------------------------------------------

    def add(
        self,
        name: str,
        key: bytes,
        usage: str,
        algorithm: str = "T",
        mode_of_use: str | None = None,
        *,
        exportable: bool = False,
        key_set_id: str | None = None,
        key_version: str = "00",
        created: str | None = None,
    ) -> KeyInfo:
        """Store a clear key under a new name (refuses an existing name)."""
        check_key_name(name)
        if name in self._entries:
            raise KeyStoreError(f"a key named {name!r} already exists (use rotate)")
        entry = self._make_entry(name, key, usage, algorithm, mode_of_use, exportable,
                                 key_set_id, key_version, created)
        self._commit({name: entry})
        return entry.info

    def _make_entry(
        self, name: str, key: bytes, usage: str, algorithm: str, mode_of_use: str | None,
        exportable: bool, key_set_id: str | None, key_version: str, created: str | None,
    ) -> _BlockEntry:
        if usage not in USAGE_MODES:
            raise KeyUsageError(f"key usage {usage!r} is not one the switch knows")
        mode = mode_of_use or sorted(USAGE_MODES[usage])[0]
        if usage == USAGE_BDK:
            if key_set_id is None or not re.fullmatch(r"[0-9A-Fa-f]{10}", key_set_id):
                raise KeyStoreError("a BDK needs a key set identifier of 10 hex characters")
            if any(e.info.key_set_id == key_set_id.upper() and e.info.name != name
                   for e in self._entries.values()):
                raise KeyStoreError("another BDK already has this key set identifier")
            if key_set_id.upper() in self._retired_key_sets:
                raise KeyStoreError("a rotated BDK had this key set identifier: give the new "
                                    "key set another one")
        block = _build_block(self._master, name, key, usage, algorithm, mode, exportable,
                             key_set_id, key_version, created or _now_utc())
        return _BlockEntry.make(self._open_block(block), block)

    def _commit(self, entries: Mapping[str, _BlockEntry],
                retire: Mapping[str, _BlockEntry] | None = None) -> None:
        """Write every entry to a temporary file, then rename them all into
        place; on any failure nothing already stored is overwritten."""
        directory = self._directory
        if directory is not None:
            directory.mkdir(mode=KEY_DIR_MODE, parents=True, exist_ok=True)
            self._write_master_kcv(directory)
            temporary: list[tuple[Path, Path]] = []
            try:
                for name, entry in entries.items():
                    target = directory / (name + KEY_FILE_SUFFIX)
                    tmp = directory / (name + KEY_FILE_SUFFIX + ".tmp")
                    temporary.append((tmp, target))
                    _write_durably(tmp, entry.block + "\n")
                for name, retired in (retire or {}).items():
                    self._retire(directory, name, retired)
                for tmp, target in temporary:
                    os.replace(tmp, target)
                _fsync_directory(directory)
            finally:
                for tmp, _ in temporary:
                    tmp.unlink(missing_ok=True)
        self._entries.update(entries)

    def _write_master_kcv(self, directory: Path) -> None:
        path = directory / MASTER_KCV_FILE
        if not path.exists():
            _write_durably(path, f"AES-CMAC KCV of the master key: {self._master.kcv}\n")

    def _retired_entry(self, name: str, retired_at: str) -> _BlockEntry:
        """The block ``name`` is kept as in ``retired/`` once replaced: the
        same key and header, with the time it was replaced."""
        old = self._entries[name]
        info = old.info
        block = _build_block(self._master, name, old.key, old.header.key_usage, info.algorithm,
                             old.header.mode_of_use, info.exportable, info.key_set_id,
                             info.key_version, info.created, retired_at)
        return _BlockEntry.make(self._open_block(block), block)

    @staticmethod
    def _retire(directory: Path, name: str, retired: _BlockEntry) -> None:
        """Write ``retired`` into ``retired/`` (the live file is overwritten
        by the caller)."""
        folder = directory / RETIRED_DIR
        folder.mkdir(mode=KEY_DIR_MODE, exist_ok=True)
        target = folder / f"{name}.v{retired.info.key_version}{KEY_FILE_SUFFIX}"
        tmp = folder / (target.name + ".tmp")
        try:
            _write_durably(tmp, retired.block + "\n")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_directory(folder)

    def generate(
        self, name: str, usage: str, algorithm: str = "T", length: int = 16,
        mode_of_use: str | None = None, *, exportable: bool = False,
        key_set_id: str | None = None,
    ) -> KeyInfo:
        """A fresh random key (``secrets``), stored under ``name``."""
        if (algorithm == "T" and length not in (16, 24)) or (
            algorithm == "A" and length not in (16, 24, 32)
        ) or (algorithm == "H" and not HMAC_KEY_BYTES_MIN <= length <= HMAC_KEY_BYTES_MAX):
            raise KeyStoreError("key length does not fit the algorithm")
        return self.add(name, secrets.token_bytes(length), usage, algorithm, mode_of_use,
                        exportable=exportable, key_set_id=key_set_id)

    def import_block(self, name: str, key_block: str, kbpk: bytes) -> KeyInfo:
        """Unwrap a TR-31 block made under ``kbpk`` (checking its MAC) and
        store its key under ``name`` with the block's usage and mode. Only
        versions B and D: A and C bind the key by variants and carry a
        4-byte MAC, which X9.143 deprecates."""
        check_key_name(name)
        version = parse_header(key_block)[0].version
        if version not in IMPORT_VERSIONS:
            raise KeyBlockError(f"key block version {version} is refused: import version B "
                                "(TDES) or D (AES) blocks only")
        if name in self._entries:
            raise KeyStoreError(f"a key named {name!r} already exists")
        header, key = unwrap(kbpk, key_block)
        bdk_id = header.optional(_OPT_BDK_ID)
        return self.add(name, key, header.key_usage, header.algorithm, header.mode_of_use,
                        exportable=header.exportability == EXPORTABLE,
                        key_set_id=bdk_id[2:] if bdk_id else None,
                        key_version=header.key_version)

    def export_block(self, name: str, kbpk: bytes, version: str | None = None) -> str:
        """The key as a TR-31 block under ``kbpk`` (only exportable keys)."""
        entry = self._entry(name)
        if entry.header.exportability != EXPORTABLE:
            raise KeyUsageError(f"key {name!r} is not exportable")
        version = version or ("D" if len(kbpk) == 32 or entry.info.algorithm == "A" else "B")
        optional = tuple(b for b in entry.header.optional_blocks if b[0] in (_OPT_BDK_ID, _OPT_KCV))
        header = KeyBlockHeader(version, entry.header.key_usage, entry.header.algorithm,
                                entry.header.mode_of_use, entry.header.key_version,
                                entry.header.exportability, optional)
        return wrap(kbpk, header, entry.key)

    def rotate(self, name: str, key_set_id: str | None = None) -> KeyInfo:
        """Replace ``name`` with a fresh key of the same kind; the key
        version goes up by one and the old key is kept in ``retired/`` with
        the time it was replaced. A BDK needs a new key set identifier
        (terminals select the BDK by it): the old one keeps selecting the
        rotated BDK, which :meth:`retired_bdk` serves for its grace period."""
        old = self._entry(name)
        if old.header.key_usage in NOT_ROTATABLE:
            raise KeyStoreError(
                f"key {name!r} ({NOT_ROTATABLE[old.header.key_usage]}) cannot be rotated in "
                "place: data on file depends on it and would stop verifying. Generate or "
                "import a new key under a new name and migrate to it (re-issue PINs, or "
                "re-hash cards), then remove the old one")
        if old.header.key_usage == USAGE_BDK:
            if key_set_id is None or key_set_id.upper() == old.info.key_set_id:
                raise KeyStoreError("rotating a BDK needs a new key set identifier")
        else:
            key_set_id = None
        version = f"{(int(old.info.key_version) + 1) % 100:02d}" if old.info.key_version.isdigit() \
            else "01"
        entry = self._make_entry(
            name, secrets.token_bytes(len(old.key)), old.header.key_usage, old.info.algorithm,
            old.header.mode_of_use, old.info.exportable, key_set_id, version, None,
        )
        retired = self._retired_entry(name, _now_utc())
        self._commit({name: entry}, retire={name: retired})
        if retired.info.key_set_id is not None:
            self._retired_bdks[retired.info.key_set_id] = retired
            self._retired_key_sets.add(retired.info.key_set_id)
        return entry.info

    def rewrap(self, new_master: MasterKey) -> None:
        """Re-wrap every key under a new master key (master key rotation),
        the rotated BDKs in ``retired/`` too (they may be in their grace
        period). All new blocks are made and checked before any file is
        replaced."""
        blocks = {name + KEY_FILE_SUFFIX: _rebuild(new_master, entry)
                  for name, entry in self._entries.items()}
        retired = {f"{RETIRED_DIR}/{e.info.name}.v{e.info.key_version}{KEY_FILE_SUFFIX}":
                   (key_set_id, _rebuild(new_master, e))
                   for key_set_id, e in self._retired_bdks.items()}
        directory = self._directory
        if directory is not None:
            files = {**blocks, **{path: block for path, (_, block) in retired.items()},
                     MASTER_KCV_FILE: f"AES-CMAC KCV of the master key: {new_master.kcv}"}
            written: list[tuple[Path, Path]] = []
            try:
                for relative, text in files.items():
                    target = directory / relative
                    tmp = target.with_name(target.name + ".tmp")
                    _write_durably(tmp, text + "\n")
                    written.append((tmp, target))
                for tmp, target in written:
                    os.replace(tmp, target)
                _fsync_directory(directory)
                if retired:
                    _fsync_directory(directory / RETIRED_DIR)
            finally:
                for tmp, _ in written:
                    tmp.unlink(missing_ok=True)
        self._master = new_master
        self._entries = {path.removesuffix(KEY_FILE_SUFFIX): self._open_block(block)
                         for path, block in blocks.items()}
        self._retired_bdks = {key_set_id: self._open_block(block)
                              for key_set_id, block in retired.values()}


def _rebuild(master: MasterKey, entry: _Entry) -> str:
    """``entry``'s block made again under ``master``, every field kept."""
    info = entry.info
    return _build_block(master, info.name, entry.key, entry.header.key_usage, info.algorithm,
                        entry.header.mode_of_use, info.exportable, info.key_set_id,
                        info.key_version, info.created, entry.header.optional(_OPT_RETIRED))


@dataclass(frozen=True, slots=True)
class _BlockEntry(_Entry):
    """An entry together with the key block text that will be written."""

    block: str = ""

    @classmethod
    def make(cls, entry: _Entry, block: str) -> _BlockEntry:
        return cls(info=entry.info, header=entry.header, key=entry.key, block=block)
