"""The processor's values: what the server hands in, what it gets back,
and the configuration of the business rules."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

from iso_switch.acquirer.devices import NO_BINDINGS, DeviceBindings
from iso_switch.issuer import DEMO_PAN_HASH_KEY, RiskRules
from iso_switch.security.hsm import PinVerificationData


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Request:
    """A decoded request and the server's MAC verdict.

    ``fields``: pyiso8583-style dict (``'t'`` is the MTI; values as
    ``default_ascii`` decodes them, DE52/DE64 as upper-case hex).
    ``mac_status``: the server verified DE64/DE128 over the raw bytes under
    the KSN in DE62; ``"invalid"`` also when the key set is unknown or the
    KSN is malformed. ``received_at``: aware UTC, from the server's clock.
    """

    fields: Mapping[str, str]
    mac_status: Literal["valid", "invalid", "absent"]
    received_at: datetime
    listener: str = ""
    # DE52 rewrapped by the server under the zone PIN key
    # (Hsm.rewrap_pin_block), or None: then the PIN is verified under the
    # terminal's DUKPT key. Encrypted, but never shown or stored.
    pin_zone: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Outcome:
    """The answer to one request.

    ``response`` holds every response field but the MAC; the server adds
    DE64 (or DE128) when ``mac_response`` is true. ``log`` is the canonical
    log line's fields; it never holds a full PAN.
    """

    response: dict[str, str]
    mac_response: bool
    log: Mapping[str, object]


class PinHsm(Protocol):
    """The :class:`~iso_switch.security.hsm.Hsm` operations the issuer uses."""

    def verify_pin(
        self, ksn: str, encrypted_pin_block: bytes, pan: str, verification: PinVerificationData
    ) -> bool | None: ...

    def make_pin_verification_data(
        self, pan: str, pin: str, method: str = ...
    ) -> PinVerificationData: ...

    def verify_zone_pin(
        self, zone_pin_block: bytes, pan: str, verification: PinVerificationData
    ) -> bool | None: ...


@dataclass(frozen=True, slots=True)
class ProcessorConfig:
    """Business configuration. Amounts in minor units of the demo currency.

    ``pan_hash_key`` keys the card lookup hash (never in a repr). The switch
    sets it from the key store (``keys.pan_hash_key``); the default is the
    demo key's value, for tests and tools that build a processor by hand.
    ``synchronous`` is SQLite's durability setting: FULL fsyncs every
    commit (the default); NORMAL may lose the last batches on power loss.
    """

    timezone: str = "Asia/Shanghai"
    hold_expiry: timedelta = timedelta(days=7)
    retention: timedelta = timedelta(days=45)
    prune_interval: timedelta = timedelta(hours=1)
    review_threshold_minor: int = 200_000
    synchronous: str = "FULL"
    currency: int = 156
    limit_txn_minor: int = 500_000
    limit_day_minor: int = 2_000_000
    limit_day_count: int = 20
    pan_hash_key: bytes = field(default=DEMO_PAN_HASH_KEY, repr=False)
    risk: RiskRules = field(default_factory=RiskRules)
    #: Device-to-terminal bindings per key set (none: every device may
    #: send for any terminal, as in the demo).
    device_bindings: DeviceBindings = NO_BINDINGS


class CommitFailed(Exception):
    """The batch's commit failed: nothing of it is durable. The server
    answers 96 to every request of the batch."""
