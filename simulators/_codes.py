"""Response codes (DE39) and what they mean to a person at the counter
(docs/interface.md section 5)."""

from __future__ import annotations

from typing import Final

RESPONSE_CODES: Final[dict[str, str]] = {
    "00": "approved",
    "01": "refer to issuer (held for review)",
    "03": "unknown terminal or merchant",
    "05": "do not honour",
    "12": "invalid transaction",
    "13": "invalid amount",
    "14": "invalid card number",
    "15": "no such issuer",
    "25": "original not found",
    "30": "format error",
    "41": "lost card",
    "43": "stolen card",
    "51": "insufficient funds",
    "54": "expired card",
    "55": "incorrect or missing PIN",
    "57": "transaction not permitted to cardholder",
    "58": "transaction not permitted to terminal",
    "61": "exceeds amount limit",
    "63": "security violation",
    "65": "exceeds frequency limit",
    "75": "PIN tries exceeded",
    "76": "destination account not found or closed",
    "91": "issuer or switch inoperative",
    "94": "duplicate transmission",
    "96": "system malfunction",
}


def describe_response_code(code: str | None) -> str:
    """``"51 insufficient funds"``; ``"-- no response code"`` when absent."""
    if code is None:
        return "-- no response code"
    return f"{code} {RESPONSE_CODES.get(code, 'unknown response code')}"
