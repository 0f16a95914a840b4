"""Matching a completion or a reversal to its original, in one place.

Interface section 3: a completion (0220) or reversal (0400/0420) names its
original in DE90 (original MTI, STAN, DE7 and acquirer id), and the
original's key is that MTI's class + this message's DE41 + those parts, so
the key is computed here from the parsed request. The checks that compare
the message with what it names are pure functions over the stored original
(a :class:`~iso_switch.ledger.TxnRow`) answering a response code or None;
the processor does the lookups and moves the money.
"""

from __future__ import annotations

from datetime import datetime

from iso_switch.codec.masking import mask_pan
from iso_switch.codes import ResponseCode, TxnState
from iso_switch.ledger import HoldState, TxnRow
from iso_switch.processor.fields import (
    CLASS_OF_MTI,
    ORIGINAL_CLASSES,
    Original,
    Parsed,
    make_key,
)

#: An authorization's class: the only original a completion may name.
AUTHORIZATION_CLASS = "010"
#: States of an original whose money a reversal gives back.
REVERSIBLE_STATES = frozenset({TxnState.HELD, TxnState.REFERRED, TxnState.POSTED,
                               TxnState.COMPLETED})
#: Of those, the ones still a hold (voided or shrunk, not transferred back).
HOLD_STATES = frozenset({TxnState.HELD, TxnState.REFERRED})


def _named(p: Parsed) -> Original:
    original = p.original
    assert original is not None  # DE90 is mandatory on 022/040/042
    return original


def original_key(p: Parsed) -> str | None:
    """The key of the original a reversal names, or None when DE90's MTI
    is not an original's (0100, 0200, 0220 and their repeats)."""
    original = _named(p)
    cls = CLASS_OF_MTI.get(original.mti)
    if cls not in ORIGINAL_CLASSES:
        return None
    return make_key(cls, p.terminal_id, original.stan, original.transmitted, original.acquirer)


def authorization_key(p: Parsed) -> tuple[str, bool]:
    """The key of the authorization a completion completes, and whether
    DE90 names an authorization at all (0100/0101; else nothing matches)."""
    original = _named(p)
    key = make_key(AUTHORIZATION_CLASS, p.terminal_id, original.stan, original.transmitted,
                   original.acquirer)
    return key, CLASS_OF_MTI.get(original.mti) == AUTHORIZATION_CLASS


def check_authorization_open(auth: TxnRow | None, hold_state: HoldState | None,
                             hold_expires_at: datetime | None,
                             now: datetime) -> ResponseCode | None:
    """``25`` unless the completion's authorization is on file and its hold
    still pending and not expired."""
    if (auth is None or auth.state != TxnState.HELD or hold_state != HoldState.PENDING
            or hold_expires_at is None or hold_expires_at <= now):
        return ResponseCode.ORIGINAL_NOT_FOUND
    return None


def check_completion_matches(p: Parsed, auth: TxnRow, card_id: int | None,
                             held_minor: int) -> ResponseCode | None:
    """``12`` for another card, transaction type or currency than the
    authorization's; ``13`` for an amount of zero or above the hold."""
    if (card_id is None or card_id != auth.card_id or p.code2 != auth.code[:2]
            or p.currency != auth.currency):
        return ResponseCode.INVALID_TRANSACTION
    amount = p.amount_minor or 0
    if amount <= 0 or amount > held_minor:
        return ResponseCode.INVALID_AMOUNT
    return None


def check_reversal_matches(p: Parsed, orig: TxnRow, card_id: int | None) -> ResponseCode | None:
    """``12`` when DE2, DE3, DE4 or DE49, present, differ from the
    original's; ``13`` for a DE95 actual amount above the original's.
    ``card_id``: the card DE2 names (when sent). Two PANs not on file both
    have no card id: the masked PAN still tells them apart."""
    if p.pan and (card_id != orig.card_id or mask_pan(p.pan) != orig.pan_masked):
        return ResponseCode.INVALID_TRANSACTION
    if ((p.code and p.code != orig.code)
            or (p.amount_minor is not None and p.amount_minor != orig.amount_minor)
            or (p.currency is not None and p.currency != orig.currency)):
        return ResponseCode.INVALID_TRANSACTION
    if (p.actual_minor or 0) > orig.amount_minor:
        return ResponseCode.INVALID_AMOUNT
    return None
