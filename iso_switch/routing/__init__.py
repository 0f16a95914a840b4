"""BIN routing: which issuer serves a PAN.

Longest-prefix match over the route table. Issuers are in-process now (the
on-us issuer, id ``onus``); the table names an issuer id, so the remote
issuers' prefixes (``[[issuers]]``) join the same lookup through
:meth:`BinTable.over`. The processor does not use that yet: it routes on
the ledger's table alone until forwarding is wired. A route to an issuer
that is marked down, or that has no link in this process, answers 91.
:func:`check_route` is the routing step of the order of checks.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass

from iso_switch.codes import ResponseCode

ON_US_ISSUER = "onus"
BIN_LENGTH_MAX = 11


@dataclass(frozen=True, slots=True)
class BinTable:
    """Prefix -> issuer id, matched longest first."""

    routes: dict[str, str]

    @classmethod
    def over(cls, ledger_routes: Mapping[str, str],
             remote_routes: Mapping[str, str]) -> BinTable:
        """One longest-prefix table over the ledger's route table and the
        remote issuers' prefixes (``Config.remote_routes``), so a PAN's
        route is found by one lookup whichever side serves it. The two must
        not share a prefix (the start refuses any overlap)."""
        shared = ledger_routes.keys() & remote_routes.keys()
        if shared:
            raise ValueError(f"prefixes routed twice: {', '.join(sorted(shared))}")
        return cls({**ledger_routes, **remote_routes})

    def issuer_for(self, pan: str) -> str | None:
        for length in range(min(BIN_LENGTH_MAX, len(pan)), 0, -1):
            issuer = self.routes.get(pan[:length])
            if issuer is not None:
                return issuer
        return None


def check_route(issuer_id: str | None, issuer_available: bool) -> ResponseCode | None:
    """``15`` when no route matches the PAN; ``91`` when the issuer it names
    is down or is not served in this process (only the on-us issuer is)."""
    if issuer_id is None:
        return ResponseCode.NO_SUCH_ISSUER
    if not issuer_available or issuer_id != ON_US_ISSUER:
        return ResponseCode.ISSUER_INOPERATIVE
    return None


def route_overlaps(prefixes: Iterable[str], routed: Collection[str]) -> Iterator[tuple[str, str]]:
    """Pairs ``(prefix, route)`` of ``prefixes`` and ``routed`` where one
    begins with the other (equal included): two tables that would both
    claim some PAN. Linear in the prefixes (each at most
    :data:`BIN_LENGTH_MAX` long), not quadratic in the pairs."""
    for prefix in prefixes:
        for length in range(1, len(prefix) + 1):
            if prefix[:length] in routed:
                yield prefix, prefix[:length]
    for route in routed:
        for length in range(1, len(route)):  # equal pairs were found above
            if route[:length] in prefixes:
                yield route[:length], route
