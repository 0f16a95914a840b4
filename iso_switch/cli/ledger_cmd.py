"""``iso-switch ledger``, ``review`` and ``alerts``: the ledger's health, the
review queue of referred transfers, and risk alerts.

All work on the SQLite store under ``--data-dir`` and may run while the
switch serves: SQLite serialises writers, and the switch notices changes
through ``PRAGMA data_version``.
"""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from iso_switch.security.hsm import SoftwareHsm

DATA_DIR_ENV = "ISO_SWITCH_DATA_DIR"
DEFAULT_DATA_DIR = "./var"
LIST_LIMIT_DEFAULT = 50


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", default=os.environ.get(DATA_DIR_ENV, DEFAULT_DATA_DIR),
        help=f"the switch's data directory holding ledger.sqlite3 (default ${DATA_DIR_ENV} "
        f"or {DEFAULT_DATA_DIR})",
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ledger = subparsers.add_parser(
        "ledger", help="check the ledger's invariants, seed the demo data, show balances",
        description="The durable double-entry ledger under --data-dir.",
    )
    ledger_sub = ledger.add_subparsers(dest="ledger_command", metavar="ACTION", required=True)
    check = ledger_sub.add_parser(
        "check", help="verify the invariants (exit 1 when any is violated)",
        description="Per currency total debits == total credits (pending and posted); no "
        "cardholder account below zero; every account's totals equal its transfers; every "
        "hold pending-unexpired, posted, voided or expired. Exit 0 when sound, 1 otherwise.",
    )
    add_data_dir(check)
    check.set_defaults(func=_check)
    init = ledger_sub.add_parser(
        "init", help="create the store and seed the demo data (idempotent)",
        description="Create ledger.sqlite3 under --data-dir, apply migrations and seed the "
        "demo data of the README (cards' PIN verification data comes from the key store).",
    )
    add_data_dir(init)
    _add_keys_arguments(init)
    init.set_defaults(func=_init)

    review = subparsers.add_parser(
        "review", help="list, approve or decline transfers referred for review (01)",
        description="Transfers above the review threshold are answered 01 and their amount is "
        "held until an operator approves (posted) or declines (released) them here. "
        "Deciding twice the same way is harmless.",
    )
    review_sub = review.add_subparsers(dest="review_command", metavar="ACTION", required=True)
    listing = review_sub.add_parser("list", help="show reviews (pending by default)",
                                    description="Show the review queue.")
    add_data_dir(listing)
    listing.add_argument("--all", action="store_true", help="include decided reviews")
    listing.set_defaults(func=_review_list)
    for name, approve in (("approve", True), ("decline", False)):
        action = review_sub.add_parser(
            name, help=f"{name} review ID",
            description=("Post the held transfer." if approve else "Release the held amount."),
        )
        add_data_dir(action)
        action.add_argument("id", type=int, help="the review id from 'review list'")
        action.set_defaults(func=_review_decide, approve=approve)

    alerts = subparsers.add_parser(
        "alerts", help="list risk alerts (newest first)",
        description="Alerts raised by the risk rules and blacklists (PANs masked).",
    )
    add_data_dir(alerts)
    alerts.add_argument("--limit", type=int, default=LIST_LIMIT_DEFAULT,
                        help=f"how many (default {LIST_LIMIT_DEFAULT})")
    alerts.set_defaults(func=_alerts)


def _add_keys_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keys-dir", default=os.environ.get("ISO_SWITCH_KEYS_DIR", "keys"),
                        help="key store directory (default $ISO_SWITCH_KEYS_DIR or ./keys)")
    parser.add_argument("--master-key-file", help="file holding the key store's master key")
    parser.add_argument("--demo", action="store_true",
                        help="allow the built-in DEMO master key (demo keys only)")


def open_hsm(args: argparse.Namespace) -> SoftwareHsm:
    """The software HSM over the key store named by the arguments."""
    from iso_switch.security.hsm import SoftwareHsm
    from iso_switch.security.keystore import KeyStore, resolve_master_key

    directory = Path(args.keys_dir)
    allow_demo = bool(args.demo) or (directory / "master.kcv").exists()
    master = resolve_master_key(args.master_key_file, allow_demo=allow_demo)
    return SoftwareHsm(KeyStore(directory, master))


def _store(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from iso_switch.processor import open_store

    return open_store(Path(args.data_dir))


# How long past its expiry a pending hold may wait for the switch's
# housekeeping before `ledger check` calls it a violation (the default
# interval is 30 s; the maximum one hour).
EXPIRY_GRACE = timedelta(hours=1, minutes=5)


def _check(args: argparse.Namespace) -> int:
    store = _store(args)
    now = datetime.now(UTC)
    # The switch expires due holds with its next batch, or within
    # ledger.housekeeping_interval_s when idle: only a hold still pending
    # well past that is a fault (the switch has not been running).
    problems = store.check_invariants(now - EXPIRY_GRACE)
    accounts = len(store.list_accounts())
    if problems:
        for problem in problems:
            print(f"VIOLATION: {problem}")
        return 1
    print(f"ledger ok: {accounts} accounts, schema version {store.schema_version}")
    due = store.due_holds(now)
    if due:
        print(f"note: {len(due)} hold(s) past their expiry, expired by the switch's next "
              "housekeeping (a running switch does it within ledger.housekeeping_interval_s)")
    return 0


def _init(args: argparse.Namespace) -> int:
    from iso_switch.admin import seed_demo_data

    hsm = open_hsm(args)
    if not hsm.uses_demo_keys:
        # Demo cards on a real key store would be cards anyone can use.
        print("error: the demo data goes only into a ledger on the demo key store")
        return 1
    seeded = seed_demo_data(Path(args.data_dir), hsm)
    print("demo data seeded" if seeded else "already seeded; nothing changed")
    return 0


def _review_list(args: argparse.Namespace) -> int:
    store = _store(args)
    rows = store.list_reviews(None if args.all else "pending")
    print(f"{'id':>5}  {'state':<10} {'created (UTC)':<27} {'amount':>14}  card")
    for review_id, txn_key, _hold, state, created in rows:
        txn = store.get_txn(txn_key)
        amount = "" if txn is None else f"{txn.amount_minor / 100:,.2f}"
        card = "" if txn is None else txn.pan_masked
        print(f"{review_id:>5}  {state:<10} {created:<27} {amount:>14}  {card}")
    return 0


class _NoPins:
    """Review decisions never verify a PIN."""

    def verify_pin(self, ksn: str, encrypted_pin_block: bytes, pan: str,
                   verification: object) -> NoReturn:
        raise RuntimeError("not available here")

    def make_pin_verification_data(self, pan: str, pin: str, method: str = "pvv") -> NoReturn:
        raise RuntimeError("not available here")

    def verify_zone_pin(self, zone_pin_block: bytes, pan: str,
                        verification: object) -> NoReturn:
        raise RuntimeError("not available here")


def _review_decide(args: argparse.Namespace) -> int:
    from iso_switch.processor import Processor

    processor = Processor(_store(args), _NoPins())
    try:
        print(processor.decide_review(args.id, approve=args.approve))
    except ValueError as exc:
        print(f"error: {exc}")
        return 1
    return 0


def _alerts(args: argparse.Namespace) -> int:
    store = _store(args)
    for alert_id, created, rule, action, _key, pan_masked, detail in store.list_alerts(
        args.limit
    ):
        print(f"{alert_id:>6}  {created}  {rule:<10} {action:<8} {pan_masked:<20} {detail}")
    return 0
