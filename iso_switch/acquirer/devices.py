"""Which DUKPT device may speak for which terminal.

A KSN names its device (key set identifier + device identifier), and DE41
names the terminal. Without a binding, any device injected under a base
derivation key may send for any terminal ID: a stolen or cloned PIN pad
then works at every merchant of the acquirer. A binding is switched on per
key set (one base derivation key: one fleet of devices, one injection
facility), so a fleet that cannot be enrolled yet keeps working while
another is bound. The demo binds nothing (interface section 4).

The binding file of a key set holds one ``device_id,terminal_id`` line per
device (``#`` starts a comment); ``device_id`` is the 6 hex characters of
the KSN's device identifier with the counter bits clear, as
:class:`~iso_switch.security.ksn.Ksn` spells it (``3210E0``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from iso_switch.security.ksn import Ksn

_KEY_SET_ID = re.compile(r"[0-9A-F]{10}")
_DEVICE_ID = re.compile(r"[0-9A-F]{6}")
_TERMINAL_ID = re.compile(r"[ -~]{1,8}")
# The low 5 bits of the device identifier's last byte belong to the counter.
_COUNTER_BITS_IN_DEVICE_ID = 0x1F
# A binding file larger than this is refused rather than read into memory.
BINDING_FILE_BYTES_MAX = 64 * 1024 * 1024


class BindingFileError(ValueError):
    """A binding file that does not load: the operator's to fix. The message
    names the file and line, never more of the line than its number."""


@dataclass(frozen=True, slots=True)
class DeviceBindings:
    """Bound key sets and, for their devices, the one terminal each serves."""

    bound_key_sets: frozenset[str] = frozenset()
    #: ``Ksn.device_key`` (key set + device id) -> terminal ID (DE41).
    terminal_of: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def allows(self, ksn: Ksn, terminal_id: str) -> bool:
        """True for every device of an unbound key set; for a bound one,
        only the enrolled device on its own terminal."""
        if ksn.key_set_id not in self.bound_key_sets:
            return True
        return self.terminal_of.get(ksn.device_key) == terminal_id


NO_BINDINGS = DeviceBindings()


def load_bindings(files: Iterable[tuple[str, Path]]) -> DeviceBindings:
    """Bindings from ``(key set id, file)`` pairs. Raises
    :class:`BindingFileError` for a malformed or unreadable file, a device
    listed twice, or a key set given twice."""
    key_sets: set[str] = set()
    terminal_of: dict[str, str] = {}
    for key_set_id, path in files:
        key_set = key_set_id.upper()
        if not _KEY_SET_ID.fullmatch(key_set):
            raise BindingFileError(f"{path}: key set id must be 10 hex characters")
        if key_set in key_sets:
            raise BindingFileError(f"{path}: key set {key_set} is bound twice")
        key_sets.add(key_set)
        for number, device_id, terminal_id in _lines(path):
            device_key = key_set + device_id
            if device_key in terminal_of:
                raise BindingFileError(f"{path}:{number}: device {device_id} is listed twice")
            terminal_of[device_key] = terminal_id
    return DeviceBindings(frozenset(key_sets), MappingProxyType(terminal_of))


def _lines(path: Path) -> Iterable[tuple[int, str, str]]:
    try:
        if path.stat().st_size > BINDING_FILE_BYTES_MAX:
            raise BindingFileError(f"{path}: larger than {BINDING_FILE_BYTES_MAX} bytes")
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise BindingFileError(f"{path}: cannot be read ({type(exc).__name__})") from None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        device_id, comma, terminal_id = line.partition(",")
        device_id, terminal_id = device_id.strip().upper(), terminal_id.strip()
        if not comma or not _DEVICE_ID.fullmatch(device_id) or not _TERMINAL_ID.fullmatch(
            terminal_id
        ):
            raise BindingFileError(
                f"{path}:{number}: expected device_id (6 hex),terminal_id (1-8 characters)")
        if int(device_id, 16) & _COUNTER_BITS_IN_DEVICE_ID:
            raise BindingFileError(
                f"{path}:{number}: device id has counter bits set (the low 5 bits)")
        yield number, device_id, terminal_id


__all__ = ["BINDING_FILE_BYTES_MAX", "NO_BINDINGS", "BindingFileError", "DeviceBindings",
           "load_bindings"]
