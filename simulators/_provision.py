"""Load-test cards: many cardholders that sustained load cannot exhaust.

The demo cards of docs/interface.md section 6 allow 20 approved debits and
20000.00 per business day and hold small balances, so a minute of load turns
into ``65``/``61``/``51`` declines. :func:`provision_cards` adds cards that a
benchmark can hammer: valid Luhn PANs under the on-us BIN 476173, PIN
:data:`LOAD_PIN` (stored only as PIN verification data from the switch's own
HSM), each with its own account holding :data:`LOAD_OPENING_MINOR` and with
per-card limits raised (limits live on each card row, so no switch
configuration changes). The PANs are a pure function of an index
(:func:`load_card_pan`), so the load generator knows them without reading
anything.

Load PANs start ``4761738`` and accounts ``62220288``: neither collides
with the demo data (``4761739...``, ``62220200...``). Public test data,
never real cards.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from iso_switch.config import load_config
from iso_switch.ledger import AccountKind
from iso_switch.processor import ProcessorConfig, config_from, open_store, seed_demo
from iso_switch.processor.seed import EQUITY_ACCOUNT, add_card
from iso_switch.security.hsm import SoftwareHsm
from iso_switch.security.keystore import MASTER_KEY_ENV, KeyStore, resolve_master_key

LOAD_PAN_PREFIX: Final = "4761738"  # BIN 476173 + 8
LOAD_ACCOUNT_PREFIX: Final = "62220288"
LOAD_PIN: Final = "1234"
LOAD_EXPIRY: Final = "3012"
LOAD_CARDS_MAX: Final = 10**8  # 8 digits of index in the PAN
#: 1,000,000,000.00: far more than any run spends, and it still fits
#: DE54's 12 digits.
LOAD_OPENING_MINOR: Final = 100_000_000_000
LOAD_LIMIT_TXN_MINOR: Final = 500_000  # 5000.00, the demo per-transaction limit
LOAD_LIMIT_DAY_MINOR: Final = 10**14
LOAD_LIMIT_DAY_COUNT: Final = 10**9


def luhn_check_digit(digits: str) -> str:
    """The digit that makes ``digits`` + it pass the Luhn check."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 0:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return str(-total % 10)


def load_card_pan(index: int) -> str:
    """The 16-digit PAN of load card ``index`` (0-based)."""
    if not 0 <= index < LOAD_CARDS_MAX:
        raise ValueError(f"a load card index is 0..{LOAD_CARDS_MAX - 1}")
    body = f"{LOAD_PAN_PREFIX}{index:08d}"
    return body + luhn_check_digit(body)


def load_account_number(index: int) -> str:
    return f"{LOAD_ACCOUNT_PREFIX}{index:08d}"


@dataclass(frozen=True, slots=True)
class ProvisionReport:
    created: int
    existing: int


def _hsm_for(data_dir: Path, config_path: Path | None) -> tuple[SoftwareHsm, ProcessorConfig]:
    """The HSM over the key store the switch would use with this config
    (so PIN verification data matches), without the demo-key log line."""
    import os

    from iso_switch.security.demo import pan_hash_key
    from iso_switch.server import keys_dir_for

    config = load_config(config_path, {"data_dir": str(data_dir)})
    master_file = config.keys.master_key_file
    master = resolve_master_key(
        config.resolve_path(master_file) if master_file else None,
        environ={MASTER_KEY_ENV: os.environ.get(config.keys.master_key_env, "")},
        allow_demo=config.demo,
    )
    store = KeyStore(keys_dir_for(config), master)
    key, _ = pan_hash_key(store, config.keys.pan_hash_key)
    return SoftwareHsm(store), config_from(config, pan_hash_key=key)


def provision_cards(data_dir: Path, count: int, *, first: int = 0,
                    config_path: Path | None = None) -> ProvisionReport:
    """Create load cards ``first .. first+count-1`` in the ledger under
    ``data_dir`` (seeding the demo data first if needed). Idempotent: a card
    whose account exists is skipped. One transaction; safe while the switch
    serves (it reloads reference data when another process commits)."""
    if count < 0 or first < 0 or first + count > LOAD_CARDS_MAX:
        raise ValueError(f"load cards are numbered 0..{LOAD_CARDS_MAX - 1}")
    hsm, processor_config = _hsm_for(data_dir, config_path)
    card_config = replace(processor_config, limit_txn_minor=LOAD_LIMIT_TXN_MINOR,
                          limit_day_minor=LOAD_LIMIT_DAY_MINOR,
                          limit_day_count=LOAD_LIMIT_DAY_COUNT)
    store = open_store(data_dir, processor_config)
    try:
        now = datetime.now(UTC)
        seed_demo(store, hsm, processor_config, now)
        created = existing = 0
        currency = processor_config.currency
        with store.write():
            equity = store.account_by_number(EQUITY_ACCOUNT)
            assert equity is not None, "seed_demo creates the equity account"
            for index in range(first, first + count):
                number = load_account_number(index)
                if store.account_by_number(number) is not None:
                    existing += 1
                    continue
                account = store.create_account(number, currency, AccountKind.CARDHOLDER, now)
                store.transfer(equity.id, account, LOAD_OPENING_MINOR, currency,
                               "load test opening balance", now)
                add_card(store, hsm, card_config, pan=load_card_pan(index), pin=LOAD_PIN,
                         expiry=LOAD_EXPIRY, state="active", account_id=account, now=now)
                created += 1
    finally:
        store.close()
    return ProvisionReport(created, existing)
