"""The acquirer's side: terminals, their profiles, and merchants.

A terminal belongs to a merchant; the merchant is bound to a settlement
account (purchases and completions credit it, refunds debit it) and an
acquirer cash clearing account (withdrawals credit it). A terminal profile
says whether MACs are required and which processing codes it may use.
"""

from __future__ import annotations

from iso_switch.acquirer.mac import mac_required
from iso_switch.ledger.records import MerchantRow, TerminalRow

# Every processing code (first two digits of DE3) the switch knows.
KNOWN_CODES = frozenset({"00", "01", "20", "30", "31", "40"})
# Interface section 3: allowed codes per MTI class (else 12).
CODES_BY_CLASS = {
    "010": frozenset({"00", "01", "30", "31"}),
    "020": frozenset({"00", "01", "20", "30", "31", "40"}),
    "022": frozenset({"00", "01"}),
}


def terminal_allows(terminal: TerminalRow, code: str) -> bool:
    """58 when a known processing code is not in the terminal's profile.

    Unknown codes pass here and are refused with 12 by the MTI check, so
    that 58 only ever means "this terminal may not do that"."""
    return code not in KNOWN_CODES or code in terminal.allowed_codes


__all__ = ["CODES_BY_CLASS", "KNOWN_CODES", "MerchantRow", "TerminalRow", "mac_required",
           "terminal_allows"]
