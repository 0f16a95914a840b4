"""The issuer's card rules: PAN checks and hashing, expiry, card states,
PIN tries, limits and the risk rules.

Pure functions over plain values, so the decision chain
(:mod:`iso_switch.processor.chain`) can call them in the order of
docs/interface.md section 3 and tests can call them alone; the checks that
answer a response code are in :mod:`iso_switch.issuer.checks`. Cards at
rest are a keyed hash of the PAN (HMAC-SHA256 under the PAN hash key) plus
the masked PAN; the full PAN exists only in the request being decided.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta

from iso_switch.codes import ResponseCode

PAN_LENGTH_MIN = 13
PAN_LENGTH_MAX = 19
# Interface section 5: the third wrong PIN in a row blocks the PIN.
PIN_TRIES_MAX = 3

# Demo PAN hash key, public on purpose (README): production sets its own
# key in the configuration. Changing it orphans every stored card hash.
DEMO_PAN_HASH_KEY = b"iso-switch demo pan hash key!!!!"  # 32 bytes



class CardState(enum.StrEnum):
    """A card's state on file (the ledger keeps the value)."""

    ACTIVE = "active"
    LOST = "lost"
    STOLEN = "stolen"
    BLOCKED = "blocked"


CARD_STATES = tuple(CardState)
# Response code per card state other than active (interface section 5).
STATE_RESPONSE: dict[str, ResponseCode] = {
    CardState.LOST: ResponseCode.LOST_CARD,
    CardState.STOLEN: ResponseCode.STOLEN_CARD,
    CardState.BLOCKED: ResponseCode.NOT_PERMITTED_TO_CARDHOLDER,
}


def luhn_ok(pan: str) -> bool:
    """The ISO/IEC 7812 check digit of a string of digits."""
    total = 0
    for index, char in enumerate(reversed(pan)):
        digit = ord(char) - 48
        if index % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def pan_valid(pan: str) -> bool:
    """Length and Luhn (``14`` when false); the caller checked it is digits."""
    return PAN_LENGTH_MIN <= len(pan) <= PAN_LENGTH_MAX and luhn_ok(pan)


def pan_hash(key: bytes, pan: str) -> bytes:
    """The card lookup key at rest: HMAC-SHA256 of the PAN under ``key``."""
    return hmac_sha256(key, pan.encode("ascii"))


# Keys whose HMAC state is kept (the PAN hash key and the content key: one
# or two per process).
_HMAC_KEYS_MAX = 8


@functools.lru_cache(maxsize=_HMAC_KEYS_MAX)
def _keyed_sha256(key: bytes) -> hmac.HMAC:
    return hmac.new(key, digestmod=hashlib.sha256)


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256 of ``data`` under ``key``, the same bytes as
    ``hmac.digest``: the keyed state is built once per key and copied per
    call (about 0.5 us cheaper; the processor takes two per request)."""
    mac = _keyed_sha256(key).copy()
    mac.update(data)
    return mac.digest()


def card_expired(card_expiry: str, presented_expiry: str, local_now: datetime) -> bool:
    """True when the card on file has expired (valid through the end of its
    YYMM month, in the switch's time zone) or the presented expiry (DE14 or
    from DE35) is not the one on file."""
    if presented_expiry and presented_expiry != card_expiry:
        return True
    return card_expiry < f"{local_now.year % 100:02d}{local_now.month:02d}"


@dataclass(frozen=True, slots=True)
class PinOutcome:
    """What a PIN check answers and what it leaves on the card."""

    rc: ResponseCode | None  # None when the PIN step passed
    tries: int
    blocked: bool


def pin_step(tries: int, blocked: bool, required: bool, present: bool,
             verified: bool | None) -> PinOutcome:
    """Interface section 5, PIN tries: a blocked PIN answers 75 to every
    request that carries or requires a PIN; a missing required PIN is 55
    without counting; the third wrong PIN in a row is 55 and blocks; a right
    PIN resets the count. ``verified`` is None when no PIN was presented, or
    when the block did not decode as format 0: 55, not counted, since a
    forged block must not lock the real cardholder out. ``tries`` and
    ``blocked``: the card's wrong PINs in a row and whether its PIN is
    blocked, as on file."""
    if blocked and (required or present):
        return PinOutcome(ResponseCode.PIN_TRIES_EXCEEDED, tries, True)
    if not present:
        return PinOutcome(ResponseCode.INCORRECT_PIN if required else None, tries, blocked)
    if verified is None:
        return PinOutcome(ResponseCode.INCORRECT_PIN, tries, blocked)
    if verified:
        return PinOutcome(None, 0, False)
    tries += 1
    return PinOutcome(ResponseCode.INCORRECT_PIN, tries, tries >= PIN_TRIES_MAX)


#: Largest velocity count: the processor keeps this many request times per
#: card, so a larger count could never fire.
VELOCITY_COUNT_MAX = 64

#: What a risk rule does when it fires.
ACTION_ALERT = "alert"
ACTION_DECLINE = "decline"


@dataclass(frozen=True, slots=True)
class RiskRules:
    """The risk rules of the issuer and what each does when it fires:
    ``"alert"`` stores an alert only, ``"decline"`` also answers 05."""

    velocity_count: int = 10
    velocity_window: timedelta = timedelta(minutes=1)
    velocity_action: str = ACTION_ALERT
    amount_factor: int = 10
    amount_min_history: int = 3
    amount_action: str = ACTION_ALERT
    blacklist_action: str = ACTION_DECLINE


def velocity_fires(recent: list[datetime], now: datetime, rules: RiskRules) -> bool:
    """More than ``velocity_count`` requests on one card within the window
    (this one included)."""
    since = now - rules.velocity_window
    return sum(1 for moment in recent if moment > since) + 1 > rules.velocity_count


def amount_fires(amount_minor: int, usual_total_minor: int, usual_count: int,
                 rules: RiskRules) -> bool:
    """An amount far above the card's usual: more than ``amount_factor``
    times its average approved debit, once it has some history."""
    if usual_count < rules.amount_min_history or usual_total_minor <= 0:
        return False
    return amount_minor * usual_count > rules.amount_factor * usual_total_minor
