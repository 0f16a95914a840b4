"""The demo data of docs/interface.md section 6, seeded in demo mode only.

Insert-if-absent, row by row, in one transaction: a restart (or a second
switch on the same ledger) inserts only what is missing and never touches a
row an operator changed, and a crash halfway leaves nothing, so the next
start seeds again. An account's opening balance is posted only when the
seed creates that account.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from iso_switch.codec.masking import mask_pan
from iso_switch.codes import KNOWN_TXN_TYPES, TxnType
from iso_switch.issuer import CardState, pan_hash
from iso_switch.ledger import AccountKind, AdminLedgerStore
from iso_switch.ledger.records import CardRow, IssuerRow, MerchantRow, TerminalRow
from iso_switch.processor.model import PinHsm, ProcessorConfig
from iso_switch.routing import ON_US_ISSUER

SEED_MARK = "demo_seeded"
EQUITY_ACCOUNT = "EQUITY-156"  # the operator's funding account for opening balances
SETTLEMENT_ACCOUNT = "6222020000009999"
CASH_CLEARING_ACCOUNT = "6222020000009990"
MERCHANT_ID = "MERCHANT0000001"
ON_US_BIN = "476173"
ALL_CODES = frozenset(txn_type.value for txn_type in KNOWN_TXN_TYPES)


@dataclass(frozen=True, slots=True)
class DemoCard:
    pan: str
    expiry: str
    pin: str
    state: str
    account: str
    opening_minor: int


# Demo cards: public test data (docs/interface.md section 6), never real cards.
DEMO_CARDS = (
    DemoCard("4761739001010010", "2812", "1234", CardState.ACTIVE, "6222020000000015", 1_000_000),
    DemoCard("4761739001010028", "2812", "4321", CardState.ACTIVE, "6222020000000023", 5_000),
    DemoCard("4761739001010036", "2812", "1111", CardState.LOST, "6222020000000031", 100_000),
    DemoCard("4761739001010044", "2812", "1111", CardState.STOLEN, "6222020000000049", 100_000),
    DemoCard("4761739001010051", "2001", "1111", CardState.ACTIVE, "6222020000000056", 100_000),
)
# The demo terminals refund without a daily cap (section 6 sets none).
DEMO_TERMINALS = (
    TerminalRow("TERM0001", MERCHANT_ID, True, ALL_CODES, refunds_allowed=True,
                refund_day_minor=None),
    TerminalRow("TERM0002", MERCHANT_ID, True,
                ALL_CODES - {TxnType.CASH_WITHDRAWAL.value, TxnType.FUNDS_TRANSFER.value},
                refunds_allowed=True, refund_day_minor=None),
    TerminalRow("TERM0003", MERCHANT_ID, False, ALL_CODES, refunds_allowed=True,
                refund_day_minor=None),
)


def add_card(
    store: AdminLedgerStore, hsm: PinHsm, config: ProcessorConfig, *, pan: str, pin: str,
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


def seed_demo(store: AdminLedgerStore, hsm: PinHsm, config: ProcessorConfig,
              now: datetime) -> bool:
    """Insert the rows of section 6 that are absent; True when any was."""
    currency = config.currency
    inserted: list[str] = []

    def account(number: str, kind: AccountKind) -> tuple[int, bool]:
        existing = store.account_by_number(number)
        if existing is not None:
            return existing.id, False
        inserted.append(number)
        return store.create_account(number, currency, kind, now), True

    with store.write():
        equity, _ = account(EQUITY_ACCOUNT, AccountKind.EQUITY)
        settlement, _ = account(SETTLEMENT_ACCOUNT, AccountKind.SETTLEMENT)
        cash, _ = account(CASH_CLEARING_ACCOUNT, AccountKind.CLEARING)
        if ON_US_ISSUER not in store.load_issuers():
            store.upsert_issuer(IssuerRow(ON_US_ISSUER, "on-us issuer", True))
        if ON_US_BIN not in store.load_routes():
            store.set_route(ON_US_BIN, ON_US_ISSUER)
        if MERCHANT_ID not in store.load_merchants():
            store.upsert_merchant(MerchantRow(MERCHANT_ID, "Demo merchant", settlement, cash))
        terminals = store.load_terminals()
        for terminal in DEMO_TERMINALS:
            if terminal.id not in terminals:
                store.upsert_terminal(terminal)
                inserted.append(terminal.id)
        for demo in DEMO_CARDS:
            account_id, created = account(demo.account, AccountKind.CARDHOLDER)
            if created:
                store.transfer(equity, account_id, demo.opening_minor, currency,
                               "opening balance", now)
            if store.card_by_hash(pan_hash(config.pan_hash_key, demo.pan)) is None:
                add_card(store, hsm, config, pan=demo.pan, pin=demo.pin, expiry=demo.expiry,
                         state=demo.state, account_id=account_id, now=now)
                inserted.append(mask_pan(demo.pan))
        if inserted and store.get_meta(SEED_MARK) is None:
            store.set_meta(SEED_MARK, now.isoformat())
    return bool(inserted)
