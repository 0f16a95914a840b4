"""Card import: many cards created in one audited transaction, from a JSON
Lines file (``iso-switch cards import FILE``) or in process (the load
generator's provisioning).

**The format.** UTF-8 text, one JSON object per line (blank lines are
skipped), one card per object::

    {"pan": "4761738000000006", "expiry": "3012", "account": "6222028800000000",
     "state": "active", "opening_minor": 100000000000,
     "limit_txn_minor": 500000, "limit_day_minor": 100000000000000,
     "limit_day_count": 1000000000}

- ``pan`` (required): 12 to 19 digits passing the Luhn check. The switch
  keeps only its keyed hash, its masked form and its last 4 digits.
- ``expiry`` (required): ``YYMM``.
- ``account`` (required): the card's account number (1 to 28 letters,
  digits or ``-``). Created as a cardholder account in the switch's currency
  when absent; used as it is when present.
- ``state``: ``active`` (the default), ``lost``, ``stolen`` or ``blocked``.
- ``opening_minor``: opening balance in minor units, moved from the
  operator's equity account, only when the import creates the account
  (default 0).
- ``limit_txn_minor``, ``limit_day_minor``, ``limit_day_count``: the card's
  limits per transaction, per business day and approved debits per business
  day (default: the switch's defaults, 5000.00, 20000.00 and 20).

Any other key is refused, ``pin`` above all: **a card file carries no
PIN.** Every card of one import gets the same initial PIN, handed to
:func:`import_cards` (the CLI reads it from ``$ISO_SWITCH_CARD_PIN`` or
prompts without echo), which the switch's HSM turns into PIN verification
data at once; the clear PIN is stored nowhere. A file of clear PINs would be
the most valuable file on the machine, and the cards imported in bulk are
test and load cards whose PIN is public anyway; a card with a PIN of its own
is created with ``iso-switch cards create``.

The file still holds full PANs: keep it readable by its owner only and
delete it after the import.

**The import.** One transaction: a bad line (named by its number and field,
never by its value) or any failure leaves the ledger unchanged. A card
whose PAN is on file already is left as it is and counted as existing, so
importing the same file twice changes nothing. Every card created appends a
``card.import`` entry to the audit log (target: the masked PAN).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Final

from iso_switch.codec.masking import mask_pan
from iso_switch.issuer import pan_hash, pan_valid
from iso_switch.ledger import AccountKind, AdminLedgerStore
from iso_switch.processor import PinHsm, ProcessorConfig
from iso_switch.processor.seed import add_card

#: Longer lines are not card records (a record is about 250 characters).
CARD_IMPORT_LINE_CHARS_MAX: Final = 4_096
#: Cards in one import (one transaction).
CARD_IMPORT_CARDS_MAX: Final = 100_000_000
ACCOUNT_NUMBER_CHARS_MAX: Final = 28  # DE102 / DE103
#: Amounts and counts are SQLite integers.
INT64_MAX: Final = 2**63 - 1
PIN_DIGITS_MIN: Final = 4
PIN_DIGITS_MAX: Final = 12
CARD_STATES: Final = ("active", "lost", "stolen", "blocked")
AUDIT_ACTION: Final = "card.import"

_REQUIRED: Final = ("pan", "expiry", "account")
_STRINGS: Final = ("pan", "expiry", "account", "state")
_INTEGERS: Final = ("opening_minor", "limit_txn_minor", "limit_day_minor", "limit_day_count")
_ACCOUNT_CHARS: Final = frozenset("0123456789-ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


class CardImportError(ValueError):
    """A card import refused before anything was written. The message names
    the line and the field, never a value (a PAN could be in it)."""


@dataclass(frozen=True, slots=True)
class CardImport:
    """One card to import; checked when made. ``None`` limits take the
    switch's defaults. The PAN never shows in a repr."""

    pan: str = field(repr=False)
    expiry: str
    account: str
    state: str = "active"
    opening_minor: int = 0
    limit_txn_minor: int | None = None
    limit_day_minor: int | None = None
    limit_day_count: int | None = None

    def __post_init__(self) -> None:
        if not (self.pan.isascii() and self.pan.isdigit() and pan_valid(self.pan)):
            raise CardImportError("pan: not 12 to 19 digits passing the Luhn check")
        if not (len(self.expiry) == 4 and self.expiry.isascii() and self.expiry.isdigit()
                and 1 <= int(self.expiry[2:]) <= 12):
            raise CardImportError("expiry: not YYMM")
        if not (1 <= len(self.account) <= ACCOUNT_NUMBER_CHARS_MAX
                and set(self.account) <= _ACCOUNT_CHARS):
            raise CardImportError(f"account: not 1 to {ACCOUNT_NUMBER_CHARS_MAX} letters, "
                                  "digits or '-'")
        if self.state not in CARD_STATES:
            raise CardImportError(f"state: not one of {', '.join(CARD_STATES)}")
        for name in _INTEGERS:
            value = getattr(self, name)
            if value is not None and not 0 <= value <= INT64_MAX:
                raise CardImportError(f"{name}: not 0 to {INT64_MAX}")


@dataclass(frozen=True, slots=True)
class ImportReport:
    created: int
    existing: int


def parse_card_lines(lines: Iterable[str]) -> Iterator[CardImport]:
    """The cards of a card file's lines (see the module's docstring), lazily:
    a bad line raises :class:`CardImportError` when it is reached."""
    for number, text in enumerate(lines, start=1):
        if len(text) > CARD_IMPORT_LINE_CHARS_MAX:
            raise CardImportError(f"line {number}: longer than {CARD_IMPORT_LINE_CHARS_MAX} "
                                  "characters")
        if not text.strip():
            continue
        try:
            data = json.loads(text)
        except ValueError:
            raise CardImportError(f"line {number}: not a JSON object") from None
        try:
            yield _card_from(data)
        except CardImportError as exc:
            raise CardImportError(f"line {number}: {exc}") from None


def _card_from(data: Any) -> CardImport:
    if not isinstance(data, dict):
        raise CardImportError("not a JSON object")
    if "pin" in data:
        raise CardImportError("a card file carries no PIN: the import's one initial PIN is "
                              "given to the command, never written in the file")
    known = set(_STRINGS) | set(_INTEGERS)
    unknown = [key for key in data if key not in known]
    if unknown:
        # Key names only when they look like names (a stray PAN is digits).
        named = sorted(k for k in unknown if k.isidentifier())
        raise CardImportError("unknown key(s)" + (f": {', '.join(named)}" if named else ""))
    missing = [key for key in _REQUIRED if key not in data]
    if missing:
        raise CardImportError(f"missing key(s): {', '.join(missing)}")
    for key in _STRINGS:
        if key in data and not isinstance(data[key], str):
            raise CardImportError(f"{key}: not a string")
    for key in _INTEGERS:
        value = data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise CardImportError(f"{key}: not an integer")
    return CardImport(**data)


def check_pin(pin: str) -> None:
    """An initial PIN is 4 to 12 digits (ISO 9564)."""
    if not (pin.isascii() and pin.isdigit() and PIN_DIGITS_MIN <= len(pin) <= PIN_DIGITS_MAX):
        raise CardImportError(f"the PIN is not {PIN_DIGITS_MIN} to {PIN_DIGITS_MAX} digits")


def import_into(store: AdminLedgerStore, hsm: PinHsm, defaults: ProcessorConfig,
                cards: Iterable[CardImport], *, pin: str, actor: str,
                now: datetime) -> ImportReport:
    """Create ``cards`` in the caller's write transaction (see the module's
    docstring); ``defaults`` gives the PAN hash key, the currency and the
    default limits."""
    check_pin(pin)
    created = existing = 0
    for card in cards:
        if created + existing >= CARD_IMPORT_CARDS_MAX:
            raise CardImportError(f"more than {CARD_IMPORT_CARDS_MAX} cards in one import")
        if _import_one(store, hsm, defaults, card, pin, actor, now):
            created += 1
        else:
            existing += 1
    return ImportReport(created, existing)


def _import_one(store: AdminLedgerStore, hsm: PinHsm, defaults: ProcessorConfig,
                card: CardImport, pin: str, actor: str, now: datetime) -> bool:
    """Create one card (and its account when absent); False when its PAN is
    on file already."""
    if store.card_by_hash(pan_hash(defaults.pan_hash_key, card.pan)) is not None:
        return False
    currency = defaults.currency
    account = store.account_by_number(card.account)
    if account is None:
        account_id = store.create_account(card.account, currency, AccountKind.CARDHOLDER, now)
        if card.opening_minor:
            store.transfer(_equity_account(store, currency, now), account_id,
                           card.opening_minor, currency, "opening balance", now)
    else:
        account_id = account.id
    limits = replace(
        defaults,
        limit_txn_minor=_or(card.limit_txn_minor, defaults.limit_txn_minor),
        limit_day_minor=_or(card.limit_day_minor, defaults.limit_day_minor),
        limit_day_count=_or(card.limit_day_count, defaults.limit_day_count),
    )
    card_id = add_card(store, hsm, limits, pan=card.pan, pin=pin, expiry=card.expiry,
                       state=card.state, account_id=account_id, now=now)
    store.append_audit(actor, AUDIT_ACTION, mask_pan(card.pan), None, {
        "card_id": card_id, "account": card.account, "account_created": account is None,
        "opening_minor": card.opening_minor if account is None else 0,
        "expiry": card.expiry, "state": card.state, "limit_txn_minor": limits.limit_txn_minor,
        "limit_day_minor": limits.limit_day_minor, "limit_day_count": limits.limit_day_count,
    }, now)
    return True


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


def _equity_account(store: AdminLedgerStore, currency: int, now: datetime) -> int:
    """The operator's funding account for opening balances in ``currency``
    (``EQUITY-156``), created when absent."""
    number = f"EQUITY-{currency}"
    equity = store.account_by_number(number)
    if equity is not None:
        return equity.id
    return store.create_account(number, currency, AccountKind.EQUITY, now)


__all__ = [
    "CARD_IMPORT_CARDS_MAX",
    "CARD_IMPORT_LINE_CHARS_MAX",
    "CARD_STATES",
    "CardImport",
    "CardImportError",
    "ImportReport",
    "check_pin",
    "import_into",
    "parse_card_lines",
]
