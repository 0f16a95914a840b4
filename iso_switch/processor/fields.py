"""From the decoded wire dict to a checked request (or a format error, 30).

Interface section 3, "Mandatory fields": a missing mandatory field, an
undecodable field, or DE2 and DE35 naming different cards is a format
error. Fields a message does not list are ignored. The transaction key and
content for idempotency are computed here, once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from iso_switch.acquirer.mac import MAC_FIELDS
from iso_switch.codec.subfields import (
    DE90_CHARS,
    SubfieldError,
    de95_actual_amount,
    normalize_institution_id,
    parse_de90,
)
from iso_switch.codes import TxnType
from iso_switch.issuer import hmac_sha256
from iso_switch.protocol.session import valid_de7

CLASS_OF_MTI = {
    "0100": "010", "0101": "010", "0200": "020", "0201": "020", "0220": "022", "0221": "022",
    "0400": "040", "0401": "040", "0420": "042", "0421": "042",
}
RESPONSE_MTI = {"010": "0110", "020": "0210", "022": "0230", "040": "0410", "042": "0430"}
ORIGINAL_CLASSES = frozenset({"010", "020", "022"})
REVERSAL_CLASSES = frozenset({"040", "042"})

_FINANCIAL_MANDATORY = ("3", "4", "7", "11", "12", "13", "22", "41", "42", "49")
MANDATORY = {
    "010": _FINANCIAL_MANDATORY,
    "020": _FINANCIAL_MANDATORY,
    "022": ("3", "4", "7", "11", "41", "42", "49", "90"),
    "040": ("7", "11", "41", "42", "90"),
    "042": ("7", "11", "41", "42", "90"),
}
LISTED_OPTIONAL = {
    "010": ("2", "35", "14", "32", "52", "62", "102", "103"),
    "020": ("2", "35", "14", "32", "52", "62", "102", "103"),
    "022": ("2", "35", "12", "13", "32", "62"),
    "040": ("2", "3", "4", "49", "32", "95", "62"),
    "042": ("2", "3", "4", "49", "32", "95", "62"),
}
ECHO_FIELDS = ("2", "3", "4", "7", "11", "12", "13", "32", "41", "42", "49", "70", "90", "102",
               "103")
_HEX = frozenset("0123456789abcdefABCDEF")
PAN_DIGITS_MAX = 19
AMOUNT_DIGITS_MAX = 12
ACCOUNT_CHARS_MAX = 28
KSN_HEX_CHARS = 20
PIN_BLOCK_HEX_CHARS = 16
DE90_DIGITS = DE90_CHARS
DE32_DIGITS_MAX = 11


class FormatError(ValueError):
    """The request is malformed (30). Names the field, never its content."""


@dataclass(frozen=True, slots=True)
class Original:
    """DE90: which earlier request a completion or reversal refers to."""

    mti: str
    stan: str
    transmitted: str  # its DE7
    acquirer: str  # its DE32, leading zeros stripped ('' when absent or zero)


@dataclass(frozen=True, slots=True)
class Parsed:
    mti: str
    cls: str
    pan: str
    expiry: str  # presented expiry YYMM (DE14, else from DE35), '' when none
    code: str  # DE3, '' when absent
    amount_minor: int | None
    currency: int | None
    terminal_id: str  # DE41 as sent (part of the key)
    terminal: str  # DE41 without padding, for lookups
    merchant: str
    stan: str
    transmitted: str
    acquirer: str
    original: Original | None
    actual_minor: int | None  # DE95 actual amount
    pin_block: bytes | None
    ksn: str | None
    source_account: str
    dest_account: str
    key: str
    content: bytes

    @property
    def code2(self) -> str:
        return self.code[:2]


def make_key(cls: str, terminal_id: str, stan: str, transmitted: str, acquirer: str) -> str:
    """Interface section 3: MTI without its last digit + DE41 + DE11 + DE7
    (+ DE32; absent and all-zero are the same)."""
    return f"{cls}|{terminal_id}|{stan}|{transmitted}|{acquirer}"


def _digits(value: str, field: str, *, exact: int = 0, most: int = 0) -> str:
    if not (value.isascii() and value.isdigit()):
        raise FormatError(f"DE{field} is not numeric")
    if (exact and len(value) != exact) or (most and len(value) > most):
        raise FormatError(f"DE{field} has the wrong length")
    return value


def _hex(value: str, field: str, length: int) -> str:
    if len(value) != length or not _HEX.issuperset(value):
        raise FormatError(f"DE{field} is not {length} hex characters")
    return value.upper()


def _check_de7(value: str) -> str:
    _digits(value, "7", exact=10)
    if not valid_de7(value):
        raise FormatError("DE7 is not a valid MMDDhhmmss")
    return value


def _track2(value: str) -> tuple[str, str]:
    for separator in ("=", "D", "d"):
        index = value.find(separator)
        if index >= 0:
            pan, rest = value[:index], value[index + 1:]
            expiry = rest[:4]
            if expiry and not (len(expiry) == 4 and expiry.isdigit()):
                raise FormatError("DE35 expiry is not numeric")
            return _digits(pan, "35", most=PAN_DIGITS_MAX), expiry
    raise FormatError("DE35 has no separator")


# Mandatory then listed optional fields per class: what a request may carry.
_LISTED = {cls: MANDATORY[cls] + LISTED_OPTIONAL[cls] for cls in MANDATORY}


def _is_digits(value: str, length: int) -> bool:
    """The fast check before :func:`_digits`: ``length`` ASCII digits."""
    return len(value) == length and value.isdigit() and value.isascii()


def parse_request(fields: Mapping[str, str], content_key: bytes) -> Parsed:
    """Check a 01xx/02xx/04xx request and compute its key and content.

    Raises :class:`FormatError` (answer 30) for anything malformed.

    Hot path (every request): each check first tries the cheap test of a
    well-formed value and only calls :func:`_digits` (or the like) to raise
    the precise error; the checks and their order are those of the plain
    version, so the same requests pass and fail."""
    mti = fields.get("t", "")
    cls = CLASS_OF_MTI.get(mti)
    if cls is None:
        raise FormatError("MTI not accepted")
    f = {k: fields[k] for k in _LISTED[cls] if k in fields}
    for name in MANDATORY[cls]:
        if not f.get(name, "").strip():
            raise FormatError(f"DE{name} is missing")
    pan, expiry = _card_fields(f, cls)
    code, amount, currency = _amount_fields(f)
    transmitted, stan, acquirer = _trace_fields(f)
    original, actual = _reference_fields(f)
    pin_block, ksn = _security_fields(f, fields)
    source, dest = _account_fields(f, cls, code)
    terminal_id = f["41"]
    key = f"{cls}|{terminal_id}|{stan}|{transmitted}|{acquirer}"  # make_key, inlined
    content_text = "|".join((pan, code, f.get("4", ""), f.get("49", ""), source, dest))
    content = hmac_sha256(content_key, content_text.encode())
    return Parsed(
        mti=mti, cls=cls, pan=pan, expiry=expiry, code=code, amount_minor=amount,
        currency=currency, terminal_id=terminal_id, terminal=terminal_id.strip(),
        merchant=f["42"].strip(), stan=stan, transmitted=transmitted, acquirer=acquirer,
        original=original, actual_minor=actual, pin_block=pin_block, ksn=ksn,
        source_account=source, dest_account=dest, key=key, content=content,
    )


def _card_fields(f: Mapping[str, str], cls: str) -> tuple[str, str]:
    """The PAN (DE2, or from DE35: they must agree) and presented expiry."""
    pan = expiry = ""
    if "2" in f:
        pan = f["2"]
        if not (len(pan) <= PAN_DIGITS_MAX and pan.isdigit() and pan.isascii()):
            _digits(pan, "2", most=PAN_DIGITS_MAX)
    if "35" in f:
        track_pan, expiry = _track2(f["35"])
        if pan and track_pan != pan:
            raise FormatError("DE2 and DE35 name different cards")
        pan = track_pan
    if cls in ORIGINAL_CLASSES and not pan:
        raise FormatError("DE2 or DE35 is missing")
    if "14" in f:
        expiry = f["14"]
        if not _is_digits(expiry, 4):
            _digits(expiry, "14", exact=4)
    return pan, expiry


def _amount_fields(f: Mapping[str, str]) -> tuple[str, int | None, int | None]:
    """DE3 (processing code), DE4 (amount, minor units), DE49 (currency)."""
    code = ""
    if "3" in f:
        code = f["3"]
        if not _is_digits(code, 6):
            _digits(code, "3", exact=6)
    amount = None
    if "4" in f:
        text = f["4"]
        if not (len(text) <= AMOUNT_DIGITS_MAX and text.isdigit() and text.isascii()):
            _digits(text, "4", most=AMOUNT_DIGITS_MAX)
        amount = int(text)
    currency = None
    if "49" in f:
        text = f["49"]
        if not _is_digits(text, 3):
            _digits(text, "49", exact=3)
        currency = int(text)
    return code, amount, currency


def _trace_fields(f: Mapping[str, str]) -> tuple[str, str, str]:
    """DE7, DE11 and DE32 (the key's parts; DE32 normalised), after
    checking DE12, DE13 and DE22 when present."""
    transmitted = f["7"]
    if not (_is_digits(transmitted, 10) and valid_de7(transmitted)):
        _check_de7(transmitted)
    stan = f["11"]
    if not _is_digits(stan, 6):
        _digits(stan, "11", exact=6)
    for name, length in (("12", 6), ("13", 4), ("22", 3)):
        if name in f and not _is_digits(f[name], length):
            _digits(f[name], name, exact=length)
    acquirer = ""
    if "32" in f:
        acquirer = normalize_institution_id(_digits(f["32"], "32", most=DE32_DIGITS_MAX))
    return transmitted, stan, acquirer


def _reference_fields(f: Mapping[str, str]) -> tuple[Original | None, int | None]:
    """DE90 (the original a completion or reversal names) and DE95's
    actual amount, through :mod:`iso_switch.codec.subfields`."""
    original = actual = None
    try:
        if "90" in f:
            data = parse_de90(f["90"])
            original = Original(data.mti, data.stan, data.transmitted,
                                normalize_institution_id(data.acquirer_id))
        if "95" in f:
            actual = de95_actual_amount(f["95"])
    except SubfieldError as exc:
        raise FormatError(str(exc)) from None
    return original, actual


def _security_fields(f: Mapping[str, str],
                     fields: Mapping[str, str]) -> tuple[bytes | None, str | None]:
    """DE52 (PIN block) and DE62 (KSN), which a PIN block or a MAC needs."""
    pin_block = bytes.fromhex(_hex(f["52"], "52", PIN_BLOCK_HEX_CHARS)) if "52" in f else None
    ksn = _hex(f["62"], "62", KSN_HEX_CHARS) if "62" in f else None
    if ksn is None and (pin_block is not None or any(name in fields for name in MAC_FIELDS)):
        raise FormatError("DE62 (KSN) is missing")
    return pin_block, ksn


def _account_fields(f: Mapping[str, str], cls: str, code: str) -> tuple[str, str]:
    """DE102 and DE103 (a transfer's source and destination accounts)."""
    source = f.get("102", "").strip()
    dest = f.get("103", "").strip()
    if len(source) > ACCOUNT_CHARS_MAX or len(dest) > ACCOUNT_CHARS_MAX:
        raise FormatError("DE102/DE103 too long")
    # DE103 is mandatory for 40 in the 0100/0200 row (section 3): a format
    # error (30) comes before "40 is not allowed on 0100" (12).
    if cls in ("010", "020") and code[:2] == TxnType.FUNDS_TRANSFER and not dest:
        raise FormatError("DE103 is missing for a transfer")
    return source, dest


def response_mti(mti: str) -> str:
    """0100/0101 -> 0110 and so on; for anything else, the request class + 10."""
    cls = CLASS_OF_MTI.get(mti)
    if cls is not None:
        return RESPONSE_MTI[cls]
    if len(mti) == 4 and mti.isdigit() and int(mti[2]) % 2 == 0:
        return mti[:2] + str(int(mti[2]) + 1) + "0"
    return "0810" if mti.startswith("08") else mti


def echo(fields: Mapping[str, str]) -> dict[str, str]:
    return {k: fields[k] for k in ECHO_FIELDS if k in fields}


#: Request classes whose responses always carry a DE37 (01xx, 02xx, 04xx).
RRN_CLASSES = ("01", "02", "04")


def plain_response(fields: Mapping[str, str], rc: str, rrn: Callable[[], str]) -> dict[str, str]:
    """The answer to a request decided without a stored decision (30, 63,
    91, 94, 96): the echoed fields, a DE37 where every response of the
    class carries one (``rrn`` is called only then), and DE39."""
    mti = fields.get("t", "")
    response = {"t": response_mti(mti), **echo(fields)}
    if mti[:2] in RRN_CLASSES:
        response["37"] = rrn()
    response["39"] = rc
    return response
