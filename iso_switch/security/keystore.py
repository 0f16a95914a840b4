"""Wrapped key store (filled in by the next commit)."""

from __future__ import annotations

from dataclasses import dataclass


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
