"""Load-test cards: many cardholders that sustained load cannot exhaust.

The demo cards of docs/interface.md section 6 allow 20 approved debits and
20000.00 per business day and hold small balances, so a minute of load turns
into ``65``/``61``/``51`` declines. :func:`provision_cards` adds cards that a
benchmark can hammer: valid Luhn PANs under the on-us BIN 476173, PIN
:data:`LOAD_PIN` (stored only as PIN verification data from the switch's own
HSM), each with its own account holding :data:`LOAD_OPENING_MINOR` and with
per-card limits raised (limits live on each card row, so no switch
configuration changes). It writes nothing itself: the cards go through the
switch's admin API (:mod:`iso_switch.admin`), audited like any operator's
import. The PANs are a pure function of an index
(:func:`load_card_pan`), so the load generator knows them without reading
anything.

Load PANs start ``4761738`` and accounts ``62220288``: neither collides
with the demo data (``4761739...``, ``62220200...``). Public test data,
never real cards.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Final

from iso_switch.admin import CardImport, ImportReport, import_cards, seed_demo_data
from iso_switch.bootstrap import build_hsm
from iso_switch.config import load_config

LOAD_PAN_PREFIX: Final = "4761738"  # BIN 476173 + 8
LOAD_ACCOUNT_PREFIX: Final = "62220288"
LOAD_PIN: Final = "1234"
LOAD_EXPIRY: Final = "3012"
LOAD_CARDS_MAX: Final = 10**8  # 8 digits of index in the PAN
#: 1,000,000,000.00: far more than any run spends, and it still fits
#: DE54's 12 digits.
LOAD_OPENING_MINOR: Final = 100_000_000_000
LOAD_LIMIT_TXN_MINOR: Final = 500_000  # 5000.00, the demo per-transaction limit
LOAD_LIMIT_DAY_MINOR: Final = 10**14
LOAD_LIMIT_DAY_COUNT: Final = 10**9


def luhn_check_digit(digits: str) -> str:
    """The digit that makes ``digits`` + it pass the Luhn check."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 0:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return str(-total % 10)


def load_card_pan(index: int) -> str:
    """The 16-digit PAN of load card ``index`` (0-based)."""
    if not 0 <= index < LOAD_CARDS_MAX:
        raise ValueError(f"a load card index is 0..{LOAD_CARDS_MAX - 1}")
    body = f"{LOAD_PAN_PREFIX}{index:08d}"
    return body + luhn_check_digit(body)


def load_account_number(index: int) -> str:
    return f"{LOAD_ACCOUNT_PREFIX}{index:08d}"


def load_cards(first: int, count: int) -> Iterator[CardImport]:
    """Load cards ``first .. first+count-1`` as card import records."""
    for index in range(first, first + count):
        yield CardImport(pan=load_card_pan(index), expiry=LOAD_EXPIRY,
                         account=load_account_number(index),
                         opening_minor=LOAD_OPENING_MINOR,
                         limit_txn_minor=LOAD_LIMIT_TXN_MINOR,
                         limit_day_minor=LOAD_LIMIT_DAY_MINOR,
                         limit_day_count=LOAD_LIMIT_DAY_COUNT)


def provision_cards(data_dir: Path, count: int, *, first: int = 0,
                    config_path: Path | None = None) -> ImportReport:
    """Create load cards ``first .. first+count-1`` in the ledger under
    ``data_dir`` through the switch's admin API (:func:`iso_switch.admin.import_cards`:
    one audited transaction, PIN verification data from the key store the
    switch uses with this configuration), seeding the demo data first when
    the configuration is the demo, as the switch itself would at start.
    Idempotent: a card already on file is counted as existing. Safe while
    the switch serves (it reloads reference data when another process
    commits)."""
    if count < 0 or first < 0 or first + count > LOAD_CARDS_MAX:
        raise ValueError(f"load cards are numbered 0..{LOAD_CARDS_MAX - 1}")
    config = load_config(config_path, {"data_dir": str(data_dir)})
    hsm = build_hsm(config, warn=False)
    key_name = config.keys.pan_hash_key
    if config.demo:
        seed_demo_data(config.data_path, hsm, pan_hash_key_name=key_name)
    return import_cards(config.data_path, hsm, load_cards(first, count), pin=LOAD_PIN,
                        pan_hash_key_name=key_name)
