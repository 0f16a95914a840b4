"""The switch's vocabulary: response codes, transaction states and
transaction types, each as a ``StrEnum`` so that a value compares equal to
the string on the wire or in the ledger (``ResponseCode.APPROVED == "00"``)
while code that reads it says what it means.

Why a separate module: the approval ``"00"`` (DE39) and the purchase
``"00"`` (the first two digits of DE3) are different facts that share a
spelling; naming them apart is what keeps a check from confusing them. The
module imports nothing but the standard library, so every layer may use it.
"""

from __future__ import annotations

import enum


class ResponseCode(enum.StrEnum):
    """DE39 values the switch answers (the interface's response-code table)."""

    APPROVED = "00"
    REFER_TO_ISSUER = "01"
    INVALID_MERCHANT = "03"
    DO_NOT_HONOUR = "05"
    INVALID_TRANSACTION = "12"
    INVALID_AMOUNT = "13"
    INVALID_CARD_NUMBER = "14"
    NO_SUCH_ISSUER = "15"
    ORIGINAL_NOT_FOUND = "25"
    FORMAT_ERROR = "30"
    LOST_CARD = "41"
    STOLEN_CARD = "43"
    INSUFFICIENT_FUNDS = "51"
    EXPIRED_CARD = "54"
    INCORRECT_PIN = "55"
    NOT_PERMITTED_TO_CARDHOLDER = "57"
    NOT_PERMITTED_TO_TERMINAL = "58"
    EXCEEDS_AMOUNT_LIMIT = "61"
    SECURITY_VIOLATION = "63"
    EXCEEDS_FREQUENCY_LIMIT = "65"
    PIN_TRIES_EXCEEDED = "75"
    DESTINATION_ACCOUNT_INVALID = "76"
    ISSUER_INOPERATIVE = "91"
    DUPLICATE_TRANSMISSION = "94"
    SYSTEM_MALFUNCTION = "96"

    @property
    def approved(self) -> bool:
        return self is ResponseCode.APPROVED


class TxnState(enum.StrEnum):
    """What a stored decision (a ``txns`` row) came to, as the ledger keeps it."""

    DECLINED = "declined"
    INQUIRY = "inquiry"
    HELD = "held"
    REFERRED = "referred"
    POSTED = "posted"
    COMPLETED = "completed"
    COMPLETION = "completion"
    EXPIRED = "expired"
    REVERSED = "reversed"
    REVERSAL = "reversal"
    REVERSAL_REMEMBERED = "reversal-remembered"
    REVERSED_BEFORE_ARRIVAL = "reversed-before-arrival"
    REVIEW_DECLINED = "review-declined"


class TxnType(enum.StrEnum):
    """The first two digits of DE3 (processing code): what the cardholder asked for."""

    PURCHASE = "00"
    CASH_WITHDRAWAL = "01"
    REFUND = "20"
    BALANCE_INQUIRY = "30"
    BALANCE_INQUIRY_ALT = "31"
    FUNDS_TRANSFER = "40"


#: Every transaction type the switch knows; any other DE3 prefix is ``12``.
KNOWN_TXN_TYPES = frozenset(TxnType)
