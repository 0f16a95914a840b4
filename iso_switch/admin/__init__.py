"""Administrative actions on the switch's ledger, as functions.

The ``iso-switch`` CLI calls them, and so do tools (the load generator's
provisioning), so no tool writes into the ledger's file on its own: every
change made here goes through the same checks (the PAN hash key must be the
one the ledger's cards are hashed under) and is recorded in the audit log.
Each function opens the ledger under ``data_dir``, does its work in one
transaction, and closes it; it may run while the switch serves (SQLite
serialises writers and the switch notices the change).

- :func:`import_cards`: cards (and their accounts) from the card import
  format of :mod:`iso_switch.admin.cards`, with one initial PIN turned into
  PIN verification data by the switch's HSM.
- :func:`seed_demo_data`: the demo data a demo-mode switch seeds at start.
"""

from __future__ import annotations

from iso_switch.admin._actions import import_cards, seed_demo_data
from iso_switch.admin.cards import (
    CARD_IMPORT_CARDS_MAX,
    CARD_IMPORT_LINE_CHARS_MAX,
    CARD_STATES,
    CardImport,
    CardImportError,
    ImportReport,
    parse_card_lines,
)

__all__ = [
    "CARD_IMPORT_CARDS_MAX",
    "CARD_IMPORT_LINE_CHARS_MAX",
    "CARD_STATES",
    "CardImport",
    "CardImportError",
    "ImportReport",
    "import_cards",
    "parse_card_lines",
    "seed_demo_data",
]
