"""BIN routing: which issuer serves a PAN.

Longest-prefix match over the route table. Issuers are in-process now (the
on-us issuer, id ``onus``); the table names an issuer id so a remote issuer
link can be added later without changing the lookup. A route to an issuer
that is marked down, or that has no link in this process, answers 91.
"""

from __future__ import annotations

from dataclasses import dataclass

ON_US_ISSUER = "onus"
BIN_LENGTH_MAX = 11


@dataclass(frozen=True, slots=True)
class BinTable:
    """Prefix -> issuer id, matched longest first."""

    routes: dict[str, str]

    def issuer_for(self, pan: str) -> str | None:
        for length in range(min(BIN_LENGTH_MAX, len(pan)), 0, -1):
            issuer = self.routes.get(pan[:length])
            if issuer is not None:
                return issuer
        return None
