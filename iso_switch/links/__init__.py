"""The switch's links toward remote issuers, sans-I/O (interface section 7.1
and the matching of 7.2).

:class:`IssuerLink` is the state machine for one issuer's pool of
connections; the shell that owns the sockets, the codec, MACs and PIN
translation lives in ``iso_switch.server``. The public API is re-exported
here; the modules underneath are implementation detail.
"""

from iso_switch.links.config import (
    BACKOFF_FIRST_S,
    BACKOFF_MAX_S,
    DEFAULT_ECHO_INTERVAL_S,
    DEFAULT_MAX_OUTSTANDING,
    DEFAULT_TIMEOUT_S,
    MAX_ENDPOINTS,
    MAX_OUTSTANDING_PER_CONNECTION,
    MAX_REMEMBERED_TIMEOUTS,
    LinkConfig,
)
from iso_switch.links.events import (
    Answered,
    Close,
    CloseReason,
    Connect,
    ConnId,
    ConnState,
    IssuerDown,
    IssuerUp,
    Output,
    RequestHandle,
    Send,
    StandIn,
    StandInReason,
    Unmatched,
    UnmatchedWhy,
)
from iso_switch.links.machine import ConnectionView, IssuerLink
from iso_switch.links.matching import ANSWER_MTI, AUTHORISATION_MTIS, MatchKey

__all__ = [
    "ANSWER_MTI",
    "AUTHORISATION_MTIS",
    "BACKOFF_FIRST_S",
    "BACKOFF_MAX_S",
    "DEFAULT_ECHO_INTERVAL_S",
    "DEFAULT_MAX_OUTSTANDING",
    "DEFAULT_TIMEOUT_S",
    "MAX_ENDPOINTS",
    "MAX_OUTSTANDING_PER_CONNECTION",
    "MAX_REMEMBERED_TIMEOUTS",
    "Answered",
    "Close",
    "CloseReason",
    "ConnId",
    "ConnState",
    "Connect",
    "ConnectionView",
    "IssuerDown",
    "IssuerLink",
    "IssuerUp",
    "LinkConfig",
    "MatchKey",
    "Output",
    "RequestHandle",
    "Send",
    "StandIn",
    "StandInReason",
    "Unmatched",
    "UnmatchedWhy",
]
