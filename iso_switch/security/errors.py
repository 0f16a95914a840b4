"""Errors of the security package.

Every error says whose fault it was and never carries key material, a PIN,
a PIN block or a full PAN: messages name the *kind* of problem and, at
most, a key's name or a masked value. Callers map them to response codes
(``63`` security violation, ``55`` incorrect PIN) without reading the text.
"""

from __future__ import annotations


class SecurityError(ValueError):
    """Base of all security errors: bad input, never a programmer error."""


class KsnError(SecurityError):
    """A KSN the switch cannot use: malformed, an unknown key set, a counter
    with too many one-bits (the device's key space is exhausted or the KSN is
    forged), or a device not bound to the terminal that sent it. The remote
    side's fault; answer ``63``."""


class PinBlockError(SecurityError):
    """A PIN block that does not decode: wrong format nibble, bad PIN length,
    bad fill, or a refused translation. Most often a wrong key or PAN."""


class MacError(SecurityError):
    """A MAC request the library cannot serve (wrong length, bad padding
    method). A MAC that simply does not match is ``False``, never this."""


class KeyBlockError(SecurityError):
    """A TR-31 key block that is malformed or fails its MAC (wrong key block
    protection key, or a corrupted / tampered block)."""


class KeyUsageError(SecurityError):
    """A key asked to do something its TR-31 usage or mode of use forbids
    (a PIN key asked to MAC, a verify-only key asked to generate)."""


class KeyStoreError(SecurityError):
    """The key store cannot serve a request: unknown key name, a duplicate
    name, an unreadable directory, or a missing / wrong master key."""
