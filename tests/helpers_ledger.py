"""Test helpers for the ledger, issuer and processor tests: a fake PIN HSM,
KSNs, request builders and a processor on a temporary store.

The fake HSM stands in for :class:`~iso_switch.security.hsm.SoftwareHsm`
so these tests exercise the business rules only; a "PIN block" here is a
hash of PAN and PIN (see :func:`pin_block`), never a real block.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from iso_switch.ledger import AccountKind, AdminLedgerStore, SqliteLedgerStore
from iso_switch.processor import Processor, ProcessorConfig, Request, open_store, seed_demo
from iso_switch.security.hsm import PinVerificationData

START = datetime(2025, 3, 1, 4, 0, tzinfo=UTC)  # 12:00 in Asia/Shanghai
CARD_RICH = "4761739001010010"  # PIN 1234, 10000.00
CARD_POOR = "4761739001010028"  # PIN 4321, 50.00
CARD_LOST = "4761739001010036"
CARD_STOLEN = "4761739001010044"
CARD_EXPIRED = "4761739001010051"
ACCOUNT_RICH = "6222020000000015"
ACCOUNT_POOR = "6222020000000023"
SETTLEMENT = "6222020000009999"
CASH = "6222020000009990"
PINS = {CARD_RICH: "1234", CARD_POOR: "4321", CARD_LOST: "1111", CARD_STOLEN: "1111",
        CARD_EXPIRED: "1111"}
KEY_SET = "FFFF987654"


def _digest(pan: str, pin: str) -> bytes:
    return hashlib.sha256(f"{pan}:{pin}".encode()).digest()[:8]


def pin_block(pan: str, pin: str) -> str:
    """The fake 'encrypted PIN block' (DE52 hex) the fake HSM accepts."""
    return _digest(pan, pin).hex().upper()


class FakeHsm:
    def __init__(self) -> None:
        self.verified = 0

    def verify_pin(self, ksn: str, encrypted_pin_block: bytes, pan: str,
                   verification: object) -> bool:
        assert isinstance(verification, PinVerificationData)
        self.verified += 1
        return encrypted_pin_block.hex() == verification.value

    def verify_zone_pin(self, zone_pin_block: bytes, pan: str, verification: object) -> bool:
        raise AssertionError("the processor tests never rewrap PIN blocks")

    def make_pin_verification_data(self, pan: str, pin: str,
                                   method: str = "pvv") -> PinVerificationData:
        return PinVerificationData("fake", 1, _digest(pan, pin).hex(), "fake-pvk")


def ksn(counter: int, device: int = 0x3210E0) -> str:
    """A TDES KSN of the demo key set for ``device`` with ``counter``."""
    return KEY_SET + f"{(device << 16) | counter:010X}"


@dataclass
class Clock:
    now: datetime = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@dataclass
class Env:
    """A seeded processor on a temporary store, with a controllable clock."""

    processor: Processor
    clock: Clock
    stan: int = 0
    counter: int = 0
    sent: list[dict[str, str]] = field(default_factory=list)

    @property
    def store(self):  # type: ignore[no-untyped-def]
        return self.processor.store

    def next_stan(self) -> str:
        self.stan += 1
        return f"{self.stan:06d}"

    def next_ksn(self) -> str:
        self.counter += 1
        return ksn(self.counter)

    def de7(self) -> str:
        return self.clock.now.strftime("%m%d%H%M%S")

    def send(self, fields: dict[str, str], mac: str = "absent") -> dict[str, str]:
        outcome = self.processor.process(Request(fields, mac, self.clock.now))  # type: ignore[arg-type]
        self.sent.append(fields)
        return outcome.response

    def balance(self, number: str) -> tuple[int, int]:
        account = self.store.account_by_number(number)
        return account.ledger_balance_minor, account.available_balance_minor


def make_env(tmp: Path, config: ProcessorConfig | None = None,
             start: datetime = START) -> Env:
    config = config or ProcessorConfig(synchronous="OFF")
    store = open_store(tmp, config)
    hsm = FakeHsm()
    clock = Clock(start)
    seed_demo(store, hsm, config, clock.now)
    return Env(Processor(store, hsm, config, clock=clock), clock)


def financial(env: Env, *, mti: str = "0200", code: str = "000000", amount: int = 1000,
              pan: str = CARD_RICH, terminal: str = "TERM0003", pin: str | None = None,
              stan: str | None = None, **extra: str) -> dict[str, str]:
    """A 0100/0200 request; ``pin`` adds DE52 + DE62 with a fresh KSN."""
    fields = {
        "t": mti, "2": pan, "3": code, "4": f"{amount:012d}", "7": env.de7(),
        "11": stan or env.next_stan(), "12": env.clock.now.strftime("%H%M%S"),
        "13": env.clock.now.strftime("%m%d"), "22": "051", "41": terminal,
        "42": "MERCHANT0000001", "49": "156",
    }
    if pin is not None:
        fields["52"] = pin_block(pan, pin)
        fields["62"] = env.next_ksn()
    fields.update(extra)
    return fields


def de90(original: dict[str, str]) -> str:
    acquirer = original.get("32", "")
    return (original["t"] + original["11"] + original["7"] + acquirer.rjust(11, "0")
            + "0" * 11)


def completion(env: Env, original: dict[str, str], amount: int, **extra: str) -> dict[str, str]:
    fields = {
        "t": "0220", "2": original["2"], "3": original["3"], "4": f"{amount:012d}",
        "7": env.de7(), "11": env.next_stan(), "41": original["41"], "42": original["42"],
        "49": original["49"], "90": de90(original),
    }
    fields.update(extra)
    return fields


def reversal(env: Env, original: dict[str, str], *, mti: str = "0400",
             actual: int | None = None, **extra: str) -> dict[str, str]:
    fields = {
        "t": mti, "2": original["2"], "3": original["3"], "4": original["4"], "7": env.de7(),
        "11": env.next_stan(), "41": original["41"], "42": original["42"],
        "49": original["49"], "90": de90(original),
    }
    if actual is not None:
        fields["95"] = f"{actual:012d}" + "0" * 30
    fields.update(extra)
    return fields


LEDGER_NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
CNY, USD = 156, 840


SMALL_LEDGER_OPENING_MINOR = 50_000


@dataclass(frozen=True)
class SmallLedger:
    """Account ids of :func:`seed_small_ledger`."""

    closed: int  # a closed cardholder account
    equity: int
    card: int  # a cardholder holding SMALL_LEDGER_OPENING_MINOR
    merchant: int  # a settlement account (may go negative)
    dollars: int  # a USD cardholder account


def seed_small_ledger(store: AdminLedgerStore) -> SmallLedger:
    """Five accounts in any store: every CNY transfer touching the closed
    or the USD account is refused."""
    with store.write():
        closed = store.create_account("X", CNY, AccountKind.CARDHOLDER, LEDGER_NOW)
        equity = store.create_account("EQ", CNY, AccountKind.EQUITY, LEDGER_NOW)
        card = store.create_account("C", CNY, AccountKind.CARDHOLDER, LEDGER_NOW)
        merchant = store.create_account("M", CNY, AccountKind.SETTLEMENT, LEDGER_NOW)
        dollars = store.create_account("U", USD, AccountKind.CARDHOLDER, LEDGER_NOW)
        store.transfer(equity, card, SMALL_LEDGER_OPENING_MINOR, CNY, "opening", LEDGER_NOW)
        store.set_account_closed(closed, True)
    return SmallLedger(closed, equity, card, merchant, dollars)


def small_ledger(path: Path) -> SqliteLedgerStore:
    """Five accounts for ledger-level tests: 1 a closed cardholder, 2 equity,
    3 a cardholder holding 500.00, 4 a settlement account, 5 a USD
    cardholder (every CNY transfer touching 1 or 5 is refused)."""
    store = SqliteLedgerStore(path, synchronous="OFF")
    seed_small_ledger(store)
    return store
