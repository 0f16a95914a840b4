"""Issuer PIN verification: Visa PVV, IBM 3624 offset, and PIN-try rules.

Both methods store a value derived from the PIN under a PIN verification
key (PVK) so the issuer never stores the PIN: a PVV (4 digits) or an
offset from the "natural PIN" the PVK gives the card.

Visa PVV covers only the first four PIN digits (that is the scheme); use
IBM 3624 where longer PINs must count in full.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from iso_switch.security._ciphers import tdes_ecb_encrypt
from iso_switch.security.errors import PinBlockError
from iso_switch.security.pinblock import check_pan, check_pin

PVV_DIGITS = 4
PVKI_MAX = 9
# IBM 3624: the table that maps each hex digit of the encrypted validation
# data to a decimal digit. This default is the common one; an issuer
# migrating cards brings its own.
DEFAULT_DECIMALIZATION_TABLE = "0123456789012345"
VALIDATION_DATA_HEX_CHARS = 16
PIN_TRIES_MAX = 3


_DROP_LETTERS = str.maketrans("", "", "ABCDEF")
_DROP_DIGITS = str.maketrans("ABCDEF", "012345", "0123456789")


def _decimalize_pvv(cipher_hex: str) -> str:
    """Visa's rule: decimal digits left to right, then A-F as 0-5."""
    digits = cipher_hex.translate(_DROP_LETTERS)
    if len(digits) < PVV_DIGITS:
        digits += cipher_hex.translate(_DROP_DIGITS)
    return digits[:PVV_DIGITS]


def visa_pvv(pvk: bytes, pan: str, pvki: int, pin: str) -> str:
    """PVV: TDES under the PVK of (11 rightmost PAN digits excluding the
    check digit, PVKI, first 4 PIN digits), decimalized to 4 digits."""
    check_pan(pan)
    check_pin(pin)
    if not 0 <= pvki <= PVKI_MAX:
        raise PinBlockError("PVKI must be a single digit")
    tsp = pan[:-1][-11:].rjust(11, "0") + str(pvki) + pin[:PVV_DIGITS]
    return _decimalize_pvv(tdes_ecb_encrypt(pvk, bytes.fromhex(tsp)).hex().upper())


def verify_visa_pvv(pvk: bytes, pan: str, pvki: int, pin: str, pvv: str) -> bool:
    return hmac.compare_digest(visa_pvv(pvk, pan, pvki, pin), pvv)


def validation_data_from_pan(pan: str) -> str:
    """IBM 3624 validation data: the first 16 PAN digits, F-padded right."""
    check_pan(pan)
    return pan[:VALIDATION_DATA_HEX_CHARS].ljust(VALIDATION_DATA_HEX_CHARS, "F")


def ibm3624_natural_pin(
    pvk: bytes,
    validation_data: str,
    pin_length: int,
    decimalization_table: str = DEFAULT_DECIMALIZATION_TABLE,
) -> str:
    """The card's natural PIN: the first ``pin_length`` digits of the
    decimalized TDES encryption of the validation data."""
    if len(decimalization_table) != 16 or not decimalization_table.isdigit():
        raise PinBlockError("decimalization table must be 16 decimal digits")
    if len(validation_data) != VALIDATION_DATA_HEX_CHARS:
        raise PinBlockError("validation data must be 16 hex characters")
    cipher_hex = tdes_ecb_encrypt(pvk, bytes.fromhex(validation_data)).hex()
    return "".join(decimalization_table[int(ch, 16)] for ch in cipher_hex[:pin_length])


def ibm3624_offset(
    pvk: bytes,
    validation_data: str,
    pin: str,
    decimalization_table: str = DEFAULT_DECIMALIZATION_TABLE,
) -> str:
    """Offset = customer PIN - natural PIN, digit by digit modulo 10."""
    check_pin(pin)
    natural = ibm3624_natural_pin(pvk, validation_data, len(pin), decimalization_table)
    return "".join(str((int(p) - int(n)) % 10) for p, n in zip(pin, natural, strict=True))


def verify_ibm3624_offset(
    pvk: bytes,
    validation_data: str,
    pin: str,
    offset: str,
    decimalization_table: str = DEFAULT_DECIMALIZATION_TABLE,
) -> bool:
    if len(pin) != len(offset):
        return False
    expected = ibm3624_offset(pvk, validation_data, pin, decimalization_table)
    return hmac.compare_digest(expected, offset)


@dataclass(frozen=True, slots=True)
class PinTryDecision:
    """What the issuer answers and stores after a PIN check.

    ``response_code``: ``"00"`` (PIN good, go on), ``"55"`` (wrong) or
    ``"75"`` (tries exceeded). ``wrong_tries``: the count to store.
    ``blocked``: the PIN is blocked from now on (until an operator reset).
    """

    response_code: str
    wrong_tries: int
    blocked: bool


def decide_pin_try(wrong_tries: int, pin_correct: bool) -> PinTryDecision:
    """docs/interface.md section 5: the third wrong PIN in a row answers ``55``
    and blocks; a blocked PIN answers ``75`` even when right; a correct PIN
    resets the count. A *missing* PIN is not a try: do not call this."""
    if wrong_tries >= PIN_TRIES_MAX:
        return PinTryDecision("75", wrong_tries, True)
    if pin_correct:
        return PinTryDecision("00", 0, False)
    tries = wrong_tries + 1
    return PinTryDecision("55", tries, tries >= PIN_TRIES_MAX)


def reset_pin_tries() -> int:
    """The count an operator's reset stores."""
    return 0
