"""The link machine's vocabulary: connection states, reasons, and the small
frozen values it hands to its shell.

Why values and not callbacks: the machine decides, the shell does. Every
method of :class:`~iso_switch.links.machine.IssuerLink` returns a list of
these; the shell opens sockets for :class:`Connect`, writes :class:`Send`,
closes for :class:`Close`, and passes :class:`Answered` and
:class:`StandIn` to whoever waits for the request. Tests read the same list.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NewType

__all__ = [
    "Answered",
    "Close",
    "CloseReason",
    "ConnId",
    "ConnState",
    "Connect",
    "IssuerDown",
    "IssuerUp",
    "Output",
    "RequestHandle",
    "Send",
    "StandIn",
    "StandInReason",
    "Unmatched",
    "UnmatchedWhy",
]

#: One TCP connection attempt; a reconnect to the same endpoint gets a new one,
#: so anything the shell reports about an old socket is recognised and ignored.
ConnId = NewType("ConnId", int)
#: One submitted request, from :meth:`IssuerLink.submit` to its single ending.
RequestHandle = NewType("RequestHandle", int)


class ConnState(enum.StrEnum):
    """Where one endpoint's connection is."""

    #: Not connected; waiting for its reconnect time.
    DISCONNECTED = "disconnected"
    #: :class:`Connect` issued; waiting for the shell to report the outcome.
    CONNECTING = "connecting"
    #: Sign-on (0800 DE70 001) sent; waiting for its 0810 DE39 00.
    SIGNING_ON = "signing-on"
    #: Signed on: carries requests.
    READY = "ready"
    #: Takes no new requests; closes once its outstanding ones have ended.
    DRAINING = "draining"
    #: Shut down for good.
    CLOSED = "closed"


class StandInReason(enum.StrEnum):
    """Why a request was handed to stand-in instead of being answered."""

    NO_CONNECTION = "no-signed-on-connection"
    MAX_OUTSTANDING = "max-outstanding"
    CONNECTIONS_FULL = "connections-full"
    MARKED_DOWN = "issuer-marked-down"
    SHUTTING_DOWN = "shutting-down"
    DUPLICATE_IN_FLIGHT = "duplicate-in-flight"
    TIMED_OUT = "timed-out"
    CONNECTION_CLOSED = "connection-closed"

    @property
    def forwarded(self) -> bool:
        """Whether the request had left for the issuer (so it may have acted on it)."""
        return self in (StandInReason.TIMED_OUT, StandInReason.CONNECTION_CLOSED)


class CloseReason(enum.StrEnum):
    """Why the machine asks the shell to close a connection."""

    CONNECT_TIMEOUT = "connect-timeout"
    SIGN_ON_REFUSED = "sign-on-refused"
    SIGN_ON_TIMEOUT = "sign-on-timeout"
    ECHO_TIMEOUT = "echo-timeout"
    ISSUER_SIGNED_OFF = "issuer-signed-off"
    SHUTDOWN = "shutdown"


class UnmatchedWhy(enum.StrEnum):
    """Why a message from the issuer was not used (the shell logs it, masked)."""

    NO_MATCH = "no-match"
    LATE = "late"
    NO_RESPONSE_CODE = "no-response-code"
    UNEXPECTED_MTI = "unexpected-mti"


@dataclass(frozen=True, slots=True)
class Connect:
    """Open a TCP connection to ``endpoint`` (``host:port``) and report back as ``conn``."""

    conn: ConnId
    endpoint: str


@dataclass(frozen=True, slots=True)
class Send:
    """Encode, MAC and write ``fields`` on ``conn``."""

    conn: ConnId
    fields: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Close:
    """Close ``conn``; the machine has already forgotten it."""

    conn: ConnId
    reason: CloseReason


@dataclass(frozen=True, slots=True)
class Answered:
    """The issuer's answer to ``handle`` (matched; it carries DE39)."""

    handle: RequestHandle
    fields: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class StandIn:
    """``handle`` got no usable answer and never will: stand-in decides it."""

    handle: RequestHandle
    reason: StandInReason


@dataclass(frozen=True, slots=True)
class Unmatched:
    """A message from the issuer that changes nothing; to be logged (masked) and dropped."""

    conn: ConnId
    fields: Mapping[str, str]
    why: UnmatchedWhy


@dataclass(frozen=True, slots=True)
class IssuerUp:
    """The issuer has a signed-on connection again."""

    issuer_id: str


@dataclass(frozen=True, slots=True)
class IssuerDown:
    """The issuer has no signed-on connection left."""

    issuer_id: str


Output = Connect | Send | Close | Answered | StandIn | Unmatched | IssuerUp | IssuerDown
