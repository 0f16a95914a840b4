"""The trace package's one error."""

from __future__ import annotations


class TraceError(Exception):
    """A trace cannot be written or read: a missing or wrong trace key, a
    malformed line (named by number, never by content), a field that fails
    its authentication."""


__all__ = ["TraceError"]
