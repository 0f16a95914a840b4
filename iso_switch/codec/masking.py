"""Masking of cardholder data for anything a person or a log may see.

PCI DSS allows at most the first six and last four digits of a PAN to be
displayed; track data and PIN blocks are never displayed at all. Every
printer and log processor in the project goes through these functions so the
rule lives in one place.
"""

from __future__ import annotations

import re

MASK_CHAR = "*"
# 13 digits or more: a PAN may sit inside a longer run (track data without
# its separator, concatenated fields), so longer runs are masked too.
_PAN_IN_TEXT = re.compile(r"(?<![0-9])([0-9]{6})([0-9]{3,})([0-9]{4})(?![0-9])")
_TRACK2_SEPARATORS = ("=", "D", "d")


def mask_pan(pan: str) -> str:
    """First 6 + last 4 digits, the rest as ``*``.

    Short values (under 13 characters, not a real PAN) keep at most the last
    four so that a truncated or garbage PAN cannot leak more than a real one.
    """
    if len(pan) >= 13:
        return pan[:6] + MASK_CHAR * (len(pan) - 10) + pan[-4:]
    if len(pan) > 4:
        return MASK_CHAR * (len(pan) - 4) + pan[-4:]
    return MASK_CHAR * len(pan)


def mask_track2(track2: str) -> str:
    """Track 2 reduced to its masked PAN; everything after the separator
    (expiry, service code, discretionary data) is hidden."""
    for separator in _TRACK2_SEPARATORS:
        index = track2.find(separator)
        if index >= 0:
            return mask_pan(track2[:index]) + separator + MASK_CHAR * (len(track2) - index - 1)
    return mask_pan(track2)


def mask_pans_in_text(text: str) -> str:
    """Mask every run of 13 or more digits in free text (log lines, error
    text): first 6 and last 4 of the run stay, as for a PAN. All-zero runs
    (zero-filled amounts and ids) are left as they are."""
    return _PAN_IN_TEXT.sub(_mask_run, text)


def _mask_run(match: re.Match[str]) -> str:
    run = match.group(0)
    if not run.strip("0"):
        return run  # zero-filled amounts and ids carry no card data
    return match.group(1) + MASK_CHAR * len(match.group(2)) + match.group(3)
