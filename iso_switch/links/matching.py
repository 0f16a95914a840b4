"""How answers on an issuer link find their requests, and the link's own
network management messages.

An issuer answers on the connection the request went out on, with the
request's MTI + 10 and the same DE11 and DE37 (interface section 7.2); the
repeat MTIs of store-and-forward (0121, 0221, 0421) are answered with the
base MTI's answer. So a request is keyed by ``(answer MTI, DE11, DE37)``
per connection, and an answer looks itself up by its own MTI, DE11, DE37.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from iso_switch.protocol import NetworkCode

__all__ = [
    "ANSWER_MTI",
    "AUTHORISATION_MTIS",
    "MatchKey",
    "answer_key",
    "network_request",
    "request_key",
]

#: The MTI each request sent on a link is answered with.
ANSWER_MTI: Final[Mapping[str, str]] = {
    "0100": "0110",
    "0200": "0210",
    "0120": "0130",
    "0121": "0130",
    "0220": "0230",
    "0221": "0230",
    "0420": "0430",
    "0421": "0430",
}

#: Requests that ask the issuer for a decision. The operator's ``issuer down``
#: stops these; advices and reversal advices (store-and-forward) still go.
AUTHORISATION_MTIS: Final = frozenset({"0100", "0200"})

_ANSWER_MTIS: Final = frozenset(ANSWER_MTI.values())

#: ``(answer MTI, DE11, DE37)``.
MatchKey = tuple[str, str, str]


def request_key(fields: Mapping[str, str]) -> MatchKey:
    """The key the answer to ``fields`` (a request with DE11 and DE37) will carry."""
    return (ANSWER_MTI[fields["t"]], fields["11"], fields["37"])


def answer_key(fields: Mapping[str, str]) -> MatchKey | None:
    """The key of an answer, or None when ``fields`` is not an answer MTI the link sends for."""
    mti = fields.get("t", "")
    if mti not in _ANSWER_MTIS:
        return None
    return (mti, fields.get("11", ""), fields.get("37", ""))


def network_request(code: NetworkCode, stan: str, de7: str) -> dict[str, str]:
    """The switch's own 0800 (sign-on, sign-off or echo) as a field dict."""
    return {"t": "0800", "7": de7, "11": stan, "70": code.value}
