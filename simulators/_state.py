"""A small JSON file remembering each simulated device's DUKPT counter and
STAN between runs, and the originals a later completion or reversal needs.

Why: the switch refuses a KSN counter it has already accepted from a device
(``63``), so two one-shot runs of ``iso-switch-sim`` must not both start at
counter 1. The counter is saved *before* the request is sent: a run that
dies after sending still never reuses it.

What is stored never includes a PAN, PIN, PIN block or key: originals keep
the fields DE90 and a reversal need (MTI, DE7, DE11, DE3, DE4, DE49, DE32,
DE41, DE42) and the masked PAN, to check that ``complete --pan`` names the
same card.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from iso_switch.codec.masking import mask_pan
from simulators._device import pan_of

STATE_VERSION: Final = 1
#: Originals remembered per device (for ``complete`` and ``reverse``).
ORIGINALS_MAX: Final = 100
#: A state file larger than this is refused (it holds a few KiB per device).
STATE_FILE_BYTES_MAX: Final = 16 * 1024 * 1024
_ORIGINAL_FIELDS: Final = ("t", "3", "4", "7", "11", "12", "13", "32", "41", "42", "49")


class StateError(ValueError):
    """The state file is unreadable or not ours."""


class DeviceState:
    """One device's saved counter, last STAN and recent originals."""

    def __init__(self, raw: Mapping[str, Any] | None = None) -> None:
        raw = raw or {}
        self.counter = int(raw.get("counter", 0))
        self.stan = raw.get("stan")
        self.originals: list[dict[str, str]] = [dict(o) for o in raw.get("originals", [])]

    def to_json(self) -> dict[str, Any]:
        return {"counter": self.counter, "stan": self.stan, "originals": self.originals}

    def remember(self, fields: Mapping[str, str]) -> None:
        """Keep what a later completion or reversal of ``fields`` needs."""
        kept = {k: fields[k] for k in _ORIGINAL_FIELDS if k in fields}
        pan = pan_of(fields)
        if pan is not None:
            kept["pan_masked"] = mask_pan(pan)
        self.originals = [o for o in self.originals if o.get("11") != kept.get("11")]
        self.originals.append(kept)
        del self.originals[:-ORIGINALS_MAX]

    def original(self, stan: str) -> dict[str, str] | None:
        """The latest remembered request with this DE11."""
        for item in reversed(self.originals):
            if item.get("11") == stan:
                return item
        return None


class SimState:
    """The state file: device initial KSN -> :class:`DeviceState`."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.devices: dict[str, DeviceState] = {}
        if path is not None and path.exists():
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            if path.stat().st_size > STATE_FILE_BYTES_MAX:
                raise StateError(f"state file {path} is larger than {STATE_FILE_BYTES_MAX} bytes")
            document = json.loads(path.read_text("utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StateError(f"cannot read state file {path}: {type(exc).__name__}") from None
        if not isinstance(document, dict) or document.get("version") != STATE_VERSION:
            raise StateError(f"{path} is not a simulator state file (version {STATE_VERSION})")
        for ksn, raw in document.get("devices", {}).items():
            self.devices[ksn] = DeviceState(raw)

    def device(self, initial_ksn: str) -> DeviceState:
        return self.devices.setdefault(initial_ksn, DeviceState())

    def save(self) -> None:
        """Write atomically (temporary file + rename): a crash never leaves
        half a file, so a counter is never lost."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        document = {"version": STATE_VERSION,
                    "devices": {k: v.to_json() for k, v in sorted(self.devices.items())}}
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".sim-state-")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                json.dump(document, stream, indent=1)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
