"""Per-connection bookkeeping, sans-I/O: sign-on state, requests in flight,
and the answer to network management (0800 -> 0810).

Interface section 3: sign-on is optional; sign-on and sign-off are
acknowledged, kept per connection, and block nothing. So the state kept here
is informational (logs, metrics, the operator's view), never a gate.

Many requests may be in flight on one connection (interface section 1); the
bound on how many is what gives the server backpressure: when
:attr:`Session.can_accept` is false the connection task stops reading from
that socket until a response goes out, so one fast client cannot queue
unbounded work.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final

from iso_switch.codes import ResponseCode
from iso_switch.protocol.errors import LocalProtocolError

__all__ = [
    "MAX_IN_FLIGHT_PER_CONNECTION",
    "NETWORK_MANAGEMENT_MANDATORY",
    "InFlightLimitExceeded",
    "NetworkCode",
    "Session",
    "SignOnState",
    "answer_network_management",
    "valid_de7",
]

#: Default bound on requests read from one connection and not yet answered.
MAX_IN_FLIGHT_PER_CONNECTION: Final = 64

#: Fields an 0800 must carry (interface section 3, "Mandatory fields").
NETWORK_MANAGEMENT_MANDATORY: Final = ("7", "11", "70")

# Fields echoed from the 0800 into its 0810 when present (interface section
# 3, "Responses": DE7, DE11, DE41, DE70 are the ones an 0800 may carry).
_ECHOED_FIELDS: Final = ("7", "11", "41", "70")

RC_APPROVED: Final = ResponseCode.APPROVED.value
RC_INVALID_TRANSACTION: Final = ResponseCode.INVALID_TRANSACTION.value
RC_FORMAT_ERROR: Final = ResponseCode.FORMAT_ERROR.value


class NetworkCode(enum.StrEnum):
    """DE70 network management information codes the switch answers."""

    SIGN_ON = "001"
    SIGN_OFF = "002"
    ECHO = "301"


class SignOnState(enum.StrEnum):
    """What the terminal on this connection last said about itself."""

    NOT_SIGNED_ON = "not_signed_on"
    SIGNED_ON = "signed_on"
    SIGNED_OFF = "signed_off"


class InFlightLimitExceeded(LocalProtocolError):
    """:meth:`Session.begin_request` was called with the bound already reached.

    A local error: the server must check :attr:`Session.can_accept` and stop
    reading before it gets here.
    """

    def __init__(self, max_in_flight: int) -> None:
        super().__init__(f"already {max_in_flight} requests in flight on this connection")
        self.max_in_flight = max_in_flight


def answer_network_management(fields: Mapping[str, str]) -> dict[str, str]:
    """The 0810 for an 0800, as a field dict (pyiso8583 keys: ``"t"`` is
    the MTI, ``"39"`` the response code).

    Echoes DE7, DE11, DE41 and DE70 when present. DE39 is ``30`` when DE7,
    DE11 or DE70 is missing or empty, or DE7 is not a valid MMDDhhmmss, or
    DE11 is not 6 digits, ``12`` for a DE70 other than
    ``001``/``002``/``301``, else ``00``. Pure: no state changes here (see
    :meth:`Session.network_management`).
    """
    response = {"t": "0810"}
    for name in _ECHOED_FIELDS:
        value = fields.get(name)
        if value is not None:
            response[name] = value
    if not all(fields.get(name) for name in NETWORK_MANAGEMENT_MANDATORY) or not (
        valid_de7(fields["7"]) and _is_digits(fields["11"], STAN_DIGITS)
    ):
        response["39"] = RC_FORMAT_ERROR
    elif fields["70"] not in _NETWORK_CODES:
        response["39"] = RC_INVALID_TRANSACTION
    else:
        response["39"] = RC_APPROVED
    return response


_NETWORK_CODES: Final = frozenset(code.value for code in NetworkCode)

#: DE11 (system trace audit number) is exactly this many digits.
STAN_DIGITS: Final = 6
#: DE7 is MMDDhhmmss (interface section 3); no year, so 29 February is valid.
_DE7_DIGITS: Final = 10
_DAYS_IN_MONTH: Final = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _is_digits(value: str, count: int) -> bool:
    return len(value) == count and value.isascii() and value.isdigit()


def valid_de7(value: str) -> bool:
    """Whether ``value`` is a real MMDDhhmmss moment: interface section 3
    says DE7 is MMDDhhmmss in UTC, and an undecodable field is a format
    error (30) on every request, 0800 or financial. 10 digits, a month, a
    day of that month (0230 and 0431 are not), an hour, minute and second."""
    if not _is_digits(value, _DE7_DIGITS):
        return False
    month, day = int(value[0:2]), int(value[2:4])
    hour, minute, second = int(value[4:6]), int(value[6:8]), int(value[8:10])
    return (1 <= month <= 12 and 1 <= day <= _DAYS_IN_MONTH[month - 1] and hour < 24
            and minute < 60 and second < 60)


class Session:
    """The state of one terminal connection that outlives a single message."""

    __slots__ = (
        "_in_flight",
        "_max_in_flight",
        "requests_total",
        "sign_on_state",
        "terminal_id",
    )

    def __init__(self, max_in_flight: int = MAX_IN_FLIGHT_PER_CONNECTION) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        #: Requests begun on this connection so far (for the closing log line).
        self.requests_total = 0
        self.sign_on_state = SignOnState.NOT_SIGNED_ON
        #: DE41 of the last approved sign-on or sign-off, if any.
        self.terminal_id: str | None = None

    @property
    def max_in_flight(self) -> int:
        return self._max_in_flight

    @property
    def in_flight(self) -> int:
        """Requests begun and not yet ended."""
        return self._in_flight

    @property
    def can_accept(self) -> bool:
        """Whether another request may be read now (else: stop reading)."""
        return self._in_flight < self._max_in_flight

    def begin_request(self) -> None:
        """Count a request read from the connection as in flight."""
        if self._in_flight >= self._max_in_flight:
            raise InFlightLimitExceeded(self._max_in_flight)
        self._in_flight += 1
        self.requests_total += 1

    def end_request(self) -> None:
        """Its response was sent (or dropped because the connection failed)."""
        if self._in_flight <= 0:
            raise LocalProtocolError("end_request() without a request in flight")
        self._in_flight -= 1

    def network_management(self, fields: Mapping[str, str]) -> dict[str, str]:
        """Answer an 0800 and remember an approved sign-on or sign-off."""
        response = answer_network_management(fields)
        if response["39"] == RC_APPROVED:
            code = fields["70"]
            if code == NetworkCode.SIGN_ON:
                self.sign_on_state = SignOnState.SIGNED_ON
            elif code == NetworkCode.SIGN_OFF:
                self.sign_on_state = SignOnState.SIGNED_OFF
            if code != NetworkCode.ECHO and fields.get("41"):
                self.terminal_id = fields["41"]
        return response

    def __repr__(self) -> str:
        return (
            f"Session({self.sign_on_state.value}, terminal={self.terminal_id!r}, "
            f"in_flight={self._in_flight}/{self._max_in_flight})"
        )
