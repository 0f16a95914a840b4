"""What one issuer's links are allowed to do: the configuration the link
machine runs under and every limit it enforces, each named.

Why a separate frozen value: the machine never reads a configuration file
or a clock; the trio shell builds one :class:`LinkConfig` per
``[[issuers]]`` entry and hands it over, and tests build their own with
small timeouts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "BACKOFF_FIRST_S",
    "BACKOFF_MAX_S",
    "DEFAULT_ECHO_INTERVAL_S",
    "DEFAULT_MAX_OUTSTANDING",
    "DEFAULT_TIMEOUT_S",
    "MAX_ENDPOINTS",
    "MAX_OUTSTANDING_PER_CONNECTION",
    "MAX_REMEMBERED_TIMEOUTS",
    "LinkConfig",
]

#: A closed or refused connection is reopened after this long at first...
BACKOFF_FIRST_S: Final = 1.0
#: ...doubling on each failure up to this ceiling (interface section 7.1).
BACKOFF_MAX_S: Final = 30.0
#: Wait for an answer (sign-on, echo, request) this long by default.
DEFAULT_TIMEOUT_S: Final = 4.0
#: A connection that received nothing this long sends an echo, by default.
DEFAULT_ECHO_INTERVAL_S: Final = 30.0
#: Forwarded requests awaiting an answer, per issuer, by default.
DEFAULT_MAX_OUTSTANDING: Final = 256
#: Forwarded requests awaiting an answer on one connection, by default: one
#: slow connection must not hold the whole issuer's allowance.
MAX_OUTSTANDING_PER_CONNECTION: Final = 64
#: Endpoints (and so connections) per issuer.
MAX_ENDPOINTS: Final = 16
#: Timed-out request keys remembered per issuer so that an answer arriving
#: after its timeout is told apart from one that never matched anything.
MAX_REMEMBERED_TIMEOUTS: Final = 1024


@dataclass(frozen=True, slots=True)
class LinkConfig:
    """One remote issuer's link settings (a subset of an ``[[issuers]]`` entry).

    Invalid values raise :class:`ValueError` naming the field: they come
    from an operator's configuration, not from a programmer.
    """

    issuer_id: str
    endpoints: tuple[str, ...]
    timeout_s: float = DEFAULT_TIMEOUT_S
    echo_interval_s: float = DEFAULT_ECHO_INTERVAL_S
    max_outstanding: int = DEFAULT_MAX_OUTSTANDING
    max_outstanding_per_connection: int = MAX_OUTSTANDING_PER_CONNECTION
    backoff_first_s: float = BACKOFF_FIRST_S
    backoff_max_s: float = BACKOFF_MAX_S

    def __post_init__(self) -> None:
        if not self.issuer_id:
            raise ValueError("issuer_id must not be empty")
        if not 1 <= len(self.endpoints) <= MAX_ENDPOINTS:
            raise ValueError(f"endpoints: between 1 and {MAX_ENDPOINTS} required")
        if len(set(self.endpoints)) != len(self.endpoints):
            raise ValueError("endpoints: each endpoint at most once")
        for name in ("timeout_s", "echo_interval_s", "backoff_first_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be above 0")
        if self.backoff_max_s < self.backoff_first_s:
            raise ValueError("backoff_max_s must not be below backoff_first_s")
        for name in ("max_outstanding", "max_outstanding_per_connection"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")

    def next_backoff_s(self, current_s: float) -> float:
        """The reconnect delay after one that waited ``current_s``: doubled, capped."""
        return min(current_s * 2, self.backoff_max_s)
