"""The demo data of interface.md section 6, seeded once on first start.

Idempotent: a ``meta`` row records that the seed ran, and the seed runs in
one transaction, so a crash halfway leaves nothing and the next start seeds
again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from iso_switch.codec.masking import mask_pan
from iso_switch.issuer import pan_hash
from iso_switch.ledger import AccountKind, SqliteLedgerStore
from iso_switch.ledger.records import CardRow, IssuerRow, MerchantRow, TerminalRow
from iso_switch.processor.model import PinHsm, ProcessorConfig
from iso_switch.routing import ON_US_ISSUER

SEED_MARK = "demo_seeded"
EQUITY_ACCOUNT = "EQUITY-156"  # the operator's funding account for opening balances
SETTLEMENT_ACCOUNT = "6222020000009999"
CASH_CLEARING_ACCOUNT = "6222020000009990"
MERCHANT_ID = "MERCHANT0000001"
ON_US_BIN = "476173"
ALL_CODES = frozenset({"00", "01", "20", "30", "31", "40"})


@dataclass(frozen=True, slots=True)
class DemoCard:
    pan: str
    expiry: str
    pin: str
    state: str
    account: str
    opening_minor: int


# Demo cards: public test data (interface.md section 6), never real cards.
DEMO_CARDS = (
    DemoCard("4761739001010010", "2812", "1234", "active", "6222020000000015", 1_000_000),
    DemoCard("4761739001010028", "2812", "4321", "active", "6222020000000023", 5_000),
    DemoCard("4761739001010036", "2812", "1111", "lost", "6222020000000031", 100_000),
    DemoCard("4761739001010044", "2812", "1111", "stolen", "6222020000000049", 100_000),
    DemoCard("4761739001010051", "2001", "1111", "active", "6222020000000056", 100_000),
)
DEMO_TERMINALS = (
    TerminalRow("TERM0001", MERCHANT_ID, True, ALL_CODES),
    TerminalRow("TERM0002", MERCHANT_ID, True, ALL_CODES - {"01", "40"}),
    TerminalRow("TERM0003", MERCHANT_ID, False, ALL_CODES),
)


def add_card(
    store: SqliteLedgerStore, hsm: PinHsm, config: ProcessorConfig, *, pan: str, pin: str,
    expiry: str, state: str, account_id: int, now: datetime,
) -> int:
    """Create a card: PAN only as keyed hash + masked form, PIN only as
    verification data from the HSM."""
    pvd = hsm.make_pin_verification_data(pan, pin)
    card = CardRow(
        id=0, pan_hash=pan_hash(config.pan_hash_key, pan), pan_masked=mask_pan(pan),
        last4=pan[-4:], expiry=expiry, state=state, account_id=account_id,
        pvd_method=pvd.method, pvd_pvki=pvd.pvki, pvd_value=pvd.value, pvd_key_name=pvd.key_name,
        pin_tries=0, pin_blocked=False, limit_txn_minor=config.limit_txn_minor,
        limit_day_minor=config.limit_day_minor, limit_day_count=config.limit_day_count,
    )
    return store.insert_card(card, now)


def seed_demo(store: SqliteLedgerStore, hsm: PinHsm, config: ProcessorConfig,
              now: datetime) -> bool:
    """Seed section 6 unless already done; True when it seeded."""
    if store.get_meta(SEED_MARK) is not None:
        return False
    currency = config.currency
    with store.write():
        equity = store.create_account(EQUITY_ACCOUNT, currency, AccountKind.EQUITY, now)
        settlement = store.create_account(SETTLEMENT_ACCOUNT, currency, AccountKind.SETTLEMENT,
                                          now)
        cash = store.create_account(CASH_CLEARING_ACCOUNT, currency, AccountKind.CLEARING, now)
        store.upsert_issuer(IssuerRow(ON_US_ISSUER, "on-us issuer", True))
        store.set_route(ON_US_BIN, ON_US_ISSUER)
        store.upsert_merchant(MerchantRow(MERCHANT_ID, "Demo merchant", settlement, cash))
        for terminal in DEMO_TERMINALS:
            store.upsert_terminal(terminal)
        for demo in DEMO_CARDS:
            account = store.create_account(demo.account, currency, AccountKind.CARDHOLDER, now)
            store.transfer(equity, account, demo.opening_minor, currency, "opening balance", now)
            add_card(store, hsm, config, pan=demo.pan, pin=demo.pin, expiry=demo.expiry,
                     state=demo.state, account_id=account, now=now)
        store.set_meta(SEED_MARK, now.isoformat())
    return True
