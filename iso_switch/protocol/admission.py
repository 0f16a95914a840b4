"""Admission per source address: what a peer may cost before it authenticates.

Every request with a KSN costs the switch a DUKPT derivation (a few hundred
microseconds of CPU) before its MAC or PIN block can say whether the sender
holds a real device key. A peer that sends made-up KSNs can therefore buy
CPU for the price of a packet. :class:`PeerGuard` bounds that per source
address, with counters in fixed windows of ``window_s``:

- connections open at once per address (``max_connections_per_address``);
- failed authentications per window (a ``63``, or a PIN block that does not
  decode): past ``max_auth_failures``, an address's requests from devices it
  has not authenticated before are refused without any key work;
- new device IDs per window (``max_new_devices``): past it, the same.

A device ID (the KSN without its counter) that has authenticated from an
address is remembered for that address and is always admitted, so honest
terminals behind one NAT address keep working while a forger behind the
same address is throttled. Everything is bounded: addresses tracked
(``max_addresses``, the least recently seen forgotten first) and devices
remembered per address (``max_known_devices``).

Sans-I/O: the caller passes the time (``now_s``, a monotonic clock).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from enum import Enum

#: Defaults, chosen so that 50 terminals behind one address, each
#: reconnecting and signing on, stay far below every bound.
MAX_CONNECTIONS_PER_ADDRESS = 1_000
MAX_AUTH_FAILURES_PER_WINDOW = 100
MAX_NEW_DEVICES_PER_WINDOW = 200
ADMISSION_WINDOW_S = 60.0
MAX_ADDRESSES_TRACKED = 65_536
MAX_KNOWN_DEVICES_PER_ADDRESS = 4_096


class Refusal(Enum):
    """Why an address was refused (a metric and log label)."""

    CONNECTIONS = "connections_per_address"
    AUTH_FAILURES = "auth_failures_per_address"
    NEW_DEVICES = "new_devices_per_address"


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    max_connections_per_address: int = MAX_CONNECTIONS_PER_ADDRESS
    max_auth_failures: int = MAX_AUTH_FAILURES_PER_WINDOW
    max_new_devices: int = MAX_NEW_DEVICES_PER_WINDOW
    window_s: float = ADMISSION_WINDOW_S
    max_addresses: int = MAX_ADDRESSES_TRACKED
    max_known_devices: int = MAX_KNOWN_DEVICES_PER_ADDRESS


@dataclass(slots=True)
class _Peer:
    connections: int = 0
    window_start_s: float = 0.0
    auth_failures: int = 0
    new_devices: int = 0
    known: OrderedDict[str, None] = field(default_factory=OrderedDict)


class PeerGuard:
    """Per-address counters; see the module docstring. Not thread-safe: the
    server calls it from its one trio thread."""

    def __init__(self, limits: AdmissionLimits | None = None) -> None:
        self.limits = limits or AdmissionLimits()
        self._peers: OrderedDict[str, _Peer] = OrderedDict()
        #: Refusals so far, by reason (for logs and metrics).
        self.refusals: Counter[Refusal] = Counter()

    def _peer(self, address: str, now_s: float) -> _Peer:
        peer = self._peers.get(address)
        if peer is None:
            # Room is made before the new address is added, so the address
            # being counted can never be the one forgotten.
            excess = len(self._peers) + 1 - self.limits.max_addresses
            if excess > 0:
                self._forget_idle(excess)
            peer = _Peer(window_start_s=now_s)
            self._peers[address] = peer
        else:
            self._peers.move_to_end(address)
        if now_s - peer.window_start_s >= self.limits.window_s:
            peer.window_start_s, peer.auth_failures, peer.new_devices = now_s, 0, 0
        return peer

    def _forget_idle(self, excess: int) -> None:
        """Forget up to ``excess`` of the least recently seen addresses
        without open connections (one with connections is kept: its count
        must stay right for the bound to hold)."""
        idle: list[str] = []
        for address, peer in self._peers.items():  # least recently seen first
            if len(idle) >= excess:
                break
            if peer.connections == 0:
                idle.append(address)
        for address in idle:
            del self._peers[address]

    # -- connections ----------------------------------------------------

    def connect(self, address: str, now_s: float) -> Refusal | None:
        """A new connection from ``address``: None to serve it, else why not."""
        peer = self._peer(address, now_s)
        if peer.connections >= self.limits.max_connections_per_address:
            self.refusals[Refusal.CONNECTIONS] += 1
            return Refusal.CONNECTIONS
        peer.connections += 1
        return None

    def disconnect(self, address: str) -> None:
        peer = self._peers.get(address)
        if peer is not None and peer.connections > 0:
            peer.connections -= 1

    def connections(self, address: str) -> int:
        peer = self._peers.get(address)
        return 0 if peer is None else peer.connections

    # -- authentication work ---------------------------------------------

    def admit(self, address: str, device_id: str, now_s: float) -> Refusal | None:
        """May a request from ``address`` with ``device_id`` have key work
        done? Known devices always; others while the address is within its
        failure and new-device bounds (each admitted new device counts)."""
        peer = self._peer(address, now_s)
        if device_id in peer.known:
            peer.known.move_to_end(device_id)
            return None
        if peer.auth_failures >= self.limits.max_auth_failures:
            self.refusals[Refusal.AUTH_FAILURES] += 1
            return Refusal.AUTH_FAILURES
        if peer.new_devices >= self.limits.max_new_devices:
            self.refusals[Refusal.NEW_DEVICES] += 1
            return Refusal.NEW_DEVICES
        peer.new_devices += 1
        return None

    def authenticated(self, address: str, device_id: str, now_s: float) -> None:
        """``device_id`` proved its key from ``address`` (a valid MAC, or a
        PIN block that decodes): admit it from now on."""
        known = self._peer(address, now_s).known
        known[device_id] = None
        known.move_to_end(device_id)
        if len(known) > self.limits.max_known_devices:
            known.popitem(last=False)

    def failed(self, address: str, now_s: float) -> None:
        """A failed authentication from ``address`` (answered 63, or 55 for
        a PIN block that does not decode)."""
        self._peer(address, now_s).auth_failures += 1

    def tracked(self) -> int:
        return len(self._peers)


__all__ = [
    "ADMISSION_WINDOW_S",
    "MAX_ADDRESSES_TRACKED",
    "MAX_AUTH_FAILURES_PER_WINDOW",
    "MAX_CONNECTIONS_PER_ADDRESS",
    "MAX_KNOWN_DEVICES_PER_ADDRESS",
    "MAX_NEW_DEVICES_PER_WINDOW",
    "AdmissionLimits",
    "PeerGuard",
    "Refusal",
]
