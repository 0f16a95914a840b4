"""Fixed-layout subfields: DE54 additional amounts, DE90 original data
elements, DE95 replacement amounts (layouts from the terminal interface,
section 3).

These fields are strings of digits whose meaning is in their positions; a
parser here is the one place that knows the positions, so the processor and
the printers never slice them by hand. Values are checked on the way in and
on the way out: ``parse_*(build_*(v)) == v``, and ``build_*(parse_*(x)) == x``
except that a zero DE54 balance is always written ``C``.
A ``SubfieldError`` names the field and character offset, never content.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# DE54: per balance, account type 2 + amount type 2 + currency 3 + C/D + amount 12.
BALANCE_CHARS = 20
# DE54 is LLLVAR up to 240 characters in our dialects: 12 balances.
MAX_BALANCES = 12
AMOUNT_DIGITS = 12
MAX_AMOUNT_MINOR = 10**AMOUNT_DIGITS - 1
AMOUNT_TYPE_LEDGER = "01"
AMOUNT_TYPE_AVAILABLE = "02"
AMOUNT_TYPE_NAMES = {AMOUNT_TYPE_LEDGER: "ledger", AMOUNT_TYPE_AVAILABLE: "available"}
CREDIT = "C"
DEBIT = "D"

# DE90: original MTI 4 + STAN 6 + DE7 10 + acquirer id 11 + forwarding id 11.
DE90_CHARS = 42
INSTITUTION_ID_DIGITS = 11
_DE90_LAYOUT = (("mti", 4), ("stan", 6), ("transmitted", 10),
                ("acquirer_id", INSTITUTION_ID_DIGITS), ("forwarding_id", INSTITUTION_ID_DIGITS))

# DE95: actual amount 12, then settlement amount 12 and fees 9 + 9 (carried as sent).
DE95_CHARS = 42
DE95_REST_CHARS = DE95_CHARS - AMOUNT_DIGITS


class SubfieldError(ValueError):
    """A subfield value is malformed (on parse: the peer's fault; on build:
    the caller's). ``field`` is the data element (``"54"``, ``"90"``,
    ``"95"``), ``position`` the character offset; the message never holds
    the value."""

    __slots__ = ("field", "position", "reason")

    def __init__(self, reason: str, field: str, position: int) -> None:
        super().__init__(f"DE{field}: {reason} at position {position}")
        self.reason = reason
        self.field = field
        self.position = position

    def __reduce__(self) -> tuple[type[SubfieldError], tuple[str, str, int]]:
        return (self.__class__, (self.reason, self.field, self.position))


def _require_digits(value: str, count: int, what: str, field: str, position: int) -> None:
    if len(value) != count or not (value.isascii() and value.isdigit()):
        raise SubfieldError(f"{what} must be {count} digits", field, position)


# ---------------------------------------------------------------- DE54


@dataclass(frozen=True, slots=True)
class Balance:
    """One DE54 balance. ``amount_minor`` is signed: a ``D`` (debit) balance
    is negative. A zero balance is always written ``C``."""

    account_type: str
    amount_type: str
    currency: str
    amount_minor: int

    def __post_init__(self) -> None:
        _require_digits(self.account_type, 2, "account type", "54", 0)
        _require_digits(self.amount_type, 2, "amount type", "54", 2)
        _require_digits(self.currency, 3, "currency", "54", 4)
        if isinstance(self.amount_minor, bool) or not isinstance(self.amount_minor, int):
            raise SubfieldError("amount must be an integer", "54", 8)
        if abs(self.amount_minor) > MAX_AMOUNT_MINOR:
            raise SubfieldError(f"amount does not fit {AMOUNT_DIGITS} digits", "54", 8)

    @property
    def amount_type_name(self) -> str:
        """``ledger``, ``available`` or the code itself."""
        return AMOUNT_TYPE_NAMES.get(self.amount_type, self.amount_type)

    def to_text(self) -> str:
        sign = DEBIT if self.amount_minor < 0 else CREDIT
        return (f"{self.account_type}{self.amount_type}{self.currency}{sign}"
                f"{abs(self.amount_minor):0{AMOUNT_DIGITS}d}")


def parse_de54(text: str) -> list[Balance]:
    """DE54 to its balances, in order. Raises ``SubfieldError``."""
    if len(text) % BALANCE_CHARS:
        raise SubfieldError(f"length is not a multiple of {BALANCE_CHARS}", "54", len(text))
    if len(text) // BALANCE_CHARS > MAX_BALANCES:
        raise SubfieldError(f"more than {MAX_BALANCES} balances", "54",
                            MAX_BALANCES * BALANCE_CHARS)
    return [_parse_balance(text, start) for start in range(0, len(text), BALANCE_CHARS)]


def _parse_balance(text: str, start: int) -> Balance:
    chunk = text[start:start + BALANCE_CHARS]
    sign = chunk[7]
    if sign not in (CREDIT, DEBIT):
        raise SubfieldError("sign must be C or D", "54", start + 7)
    amount = chunk[8:]
    _require_digits(amount, AMOUNT_DIGITS, "amount", "54", start + 8)
    try:
        return Balance(
            account_type=chunk[0:2], amount_type=chunk[2:4], currency=chunk[4:7],
            amount_minor=-int(amount) if sign == DEBIT else int(amount),
        )
    except SubfieldError as exc:
        raise SubfieldError(exc.reason, "54", start + exc.position) from None


def build_de54(balances: Iterable[Balance]) -> str:
    """Balances to DE54 text. Raises ``SubfieldError`` past ``MAX_BALANCES``."""
    items = list(balances)
    if len(items) > MAX_BALANCES:
        raise SubfieldError(f"more than {MAX_BALANCES} balances", "54",
                            MAX_BALANCES * BALANCE_CHARS)
    return "".join(balance.to_text() for balance in items)


# ---------------------------------------------------------------- DE90


def normalize_institution_id(value: str | None) -> str:
    """An institution id (DE32) as a key component: leading zeros dropped,
    so an absent DE32 and an all-zero one are both ``""``."""
    return (value or "").lstrip("0")


@dataclass(frozen=True, slots=True)
class OriginalData:
    """DE90 in parts, each exactly as on the wire (ids zero-filled to 11)."""

    mti: str
    stan: str
    transmitted: str
    acquirer_id: str
    forwarding_id: str

    def __post_init__(self) -> None:
        position = 0
        for name, count in _DE90_LAYOUT:
            _require_digits(getattr(self, name), count, name.replace("_", " "), "90", position)
            position += count

    @classmethod
    def from_parts(cls, mti: str, stan: str, transmitted: str,
                   acquirer_id: str | None = None,
                   forwarding_id: str | None = None) -> OriginalData:
        """From the original's DE0, DE11, DE7 and DE32 (absent is all
        zeros); ids are right-justified and zero-filled."""
        return cls(mti=mti, stan=stan, transmitted=transmitted,
                   acquirer_id=_zero_fill(acquirer_id, "acquirer id", 20),
                   forwarding_id=_zero_fill(forwarding_id, "forwarding id", 31))

    def original_key(self, terminal_id: str) -> tuple[str, str, str, str, str]:
        """The key of the original (interface section 3): its MTI without
        the last digit, the terminal (DE41 of this message), STAN, DE7 and
        the acquirer id, normalised so absent and all-zero are the same.
        ``"|".join(...)`` gives the processor's key form."""
        return (self.mti[:3], terminal_id, self.stan, self.transmitted,
                normalize_institution_id(self.acquirer_id))

    def to_text(self) -> str:
        return (self.mti + self.stan + self.transmitted + self.acquirer_id
                + self.forwarding_id)


def _zero_fill(value: str | None, what: str, position: int) -> str:
    text = value or ""
    digits_only = text.isascii() and (text.isdigit() or not text)
    if len(text) > INSTITUTION_ID_DIGITS or not digits_only:
        raise SubfieldError(f"{what} must be at most {INSTITUTION_ID_DIGITS} digits", "90",
                            position)
    return text.zfill(INSTITUTION_ID_DIGITS)


def parse_de90(text: str) -> OriginalData:
    """DE90 to its parts. Raises ``SubfieldError``."""
    if len(text) != DE90_CHARS:
        raise SubfieldError(f"length must be {DE90_CHARS}", "90", min(len(text), DE90_CHARS))
    parts: dict[str, str] = {}
    position = 0
    for name, count in _DE90_LAYOUT:
        parts[name] = text[position:position + count]
        position += count
    return OriginalData(**parts)


def build_de90(original: OriginalData) -> str:
    return original.to_text()


# ---------------------------------------------------------------- DE95


@dataclass(frozen=True, slots=True)
class ReplacementAmounts:
    """DE95: ``actual_amount_minor`` (the first 12 digits) is what a partial
    reversal reverses down to; the rest (settlement amount, fees) is carried
    as sent, not interpreted: terminals fill it in different ways."""

    actual_amount_minor: int
    rest: str = "0" * DE95_REST_CHARS

    def __post_init__(self) -> None:
        amount = self.actual_amount_minor
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise SubfieldError("actual amount must be an integer", "95", 0)
        if not 0 <= amount <= MAX_AMOUNT_MINOR:
            raise SubfieldError(f"actual amount must fit {AMOUNT_DIGITS} digits", "95", 0)
        if len(self.rest) != DE95_REST_CHARS or not (self.rest.isascii()
                                                     and self.rest.isprintable()):
            raise SubfieldError(f"the rest must be {DE95_REST_CHARS} printable characters",
                                "95", AMOUNT_DIGITS)

    def to_text(self) -> str:
        return f"{self.actual_amount_minor:0{AMOUNT_DIGITS}d}{self.rest}"


def parse_de95(text: str) -> ReplacementAmounts:
    """DE95 to its actual amount and the rest. Raises ``SubfieldError``."""
    if len(text) != DE95_CHARS:
        raise SubfieldError(f"length must be {DE95_CHARS}", "95", min(len(text), DE95_CHARS))
    return ReplacementAmounts(actual_amount_minor=de95_actual_amount(text),
                              rest=text[AMOUNT_DIGITS:])


def de95_actual_amount(text: str) -> int:
    """The actual amount of a DE95 (its first 12 digits) whatever follows:
    a reversal needs only this part, and terminals fill the rest in
    different ways. Raises ``SubfieldError``."""
    head = text[:AMOUNT_DIGITS]
    _require_digits(head, AMOUNT_DIGITS, "actual amount", "95", 0)
    return int(head)


def build_de95(amounts: ReplacementAmounts) -> str:
    return amounts.to_text()
