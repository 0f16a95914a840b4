"""``iso-switch saf``: the store-and-forward queue of advices and reversal
advices to remote issuers.

``saf list`` shows the open items (queued or outstanding), or with
``--dead`` / ``--refused`` the dead letters or the items an issuer refused;
PANs masked, cardholder data never shown (the ledger holds it sealed).
``saf retry ID`` queues a dead or refused item again, recorded in the audit
log. Both open the ledger under ``--data-dir`` like the other admin
commands and may run while the switch serves.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iso_switch.cli.ledger_cmd import add_data_dir
from iso_switch.codec.masking import mask_pan

if TYPE_CHECKING:
    from iso_switch.ledger import SafItem

SAF_LIST_LIMIT_DEFAULT = 100

_LIST_HELP = (
    "list the store-and-forward queue: open items (queued or outstanding) by default, "
    "oldest first; PANs masked"
)
_RETRY_HELP = (
    "queue a dead or refused item again (due at once, sent with the repeat MTI, its "
    "expiry clock restarted); recorded in the audit log as saf.retry"
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    saf = subparsers.add_parser(
        "saf", help="list and re-queue store-and-forward items to remote issuers",
        description="Advices and reversal advices waiting for remote issuers.",
    )
    actions = saf.add_subparsers(dest="saf_command", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help=_LIST_HELP, description=_LIST_HELP)
    add_data_dir(listing)
    which = listing.add_mutually_exclusive_group()
    which.add_argument("--dead", action="store_true",
                       help="only dead letters (unacknowledged past saf_expiry_h)")
    which.add_argument("--refused", action="store_true",
                       help="only items the issuer refused (kept for reconciliation)")
    listing.add_argument("--issuer", metavar="ID", help="only this remote issuer's items")
    listing.add_argument("--limit", type=int, default=SAF_LIST_LIMIT_DEFAULT,
                         help=f"how many items (default {SAF_LIST_LIMIT_DEFAULT})")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(func=_list)
    retry = actions.add_parser("retry", help=_RETRY_HELP, description=_RETRY_HELP)
    add_data_dir(retry)
    retry.add_argument("id", type=int, help="the item id from 'saf list'")
    retry.set_defaults(func=_retry)


def _open(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from iso_switch.processor import open_store

    return open_store(Path(args.data_dir))


def item_summary(item: SafItem) -> dict[str, Any]:
    """An item as shown to an operator: its delivery state and the message's
    plain fields, the PAN masked (again: nothing unmasked can slip out)."""
    message = item.item
    return {
        "id": item.id, "issuer": message.issuer_id, "state": str(item.state),
        "kind": str(message.kind), "mti": message.mti, "stan": message.stan,
        "rrn": message.rrn, "transaction": message.txn_group,
        "amount_minor": message.amount_minor, "currency": message.currency,
        "pan": mask_pan(message.pan_masked), "attempts": item.attempts,
        "next_attempt_at": item.next_attempt_at, "created_at": item.created_at,
        "last_rc": item.last_rc,
    }


def _list(args: argparse.Namespace) -> int:
    from iso_switch.ledger import SafState

    if args.dead:
        states = [SafState.DEAD]
    elif args.refused:
        states = [SafState.REFUSED]
    else:
        states = [SafState.QUEUED, SafState.OUTSTANDING]
    store = _open(args)
    try:
        items = store.list_saf_items(states, args.issuer, args.limit)
    finally:
        store.close()
    if not args.json:
        print(f"{'id':>6}  {'issuer':<12} {'state':<12} {'kind':<10} {'mti':<4} {'DE11':<6} "
              f"{'DE37':<12} {'amount':>14} {'ccy':>3}  {'card':<19} {'tries':>5} {'rc':<2} "
              "next attempt (UTC)")
    for item in items:
        row = item_summary(item)
        if args.json:
            print(json.dumps(row, sort_keys=True))
            continue
        print(f"{row['id']:>6}  {row['issuer']:<12} {row['state']:<12} {row['kind']:<10} "
              f"{row['mti']:<4} {row['stan']:<6} {row['rrn']:<12} "
              f"{row['amount_minor'] / 100:>14,.2f} {row['currency']:>3}  {row['pan']:<19} "
              f"{row['attempts']:>5} {row['last_rc']:<2} {row['next_attempt_at']}")
    return 0


def _retry(args: argparse.Namespace) -> int:
    from iso_switch.ledger.audit import os_user

    store = _open(args)
    now = datetime.now(UTC)
    try:
        with store.write():
            before = store.get_saf_item(args.id)
            requeued = store.requeue_saf_item(args.id, now)
            if before is not None and requeued is not None:
                store.append_audit(
                    os_user(), "saf.retry", f"saf:{args.id}",
                    {"state": str(before.state), "issuer": before.item.issuer_id,
                     "last_rc": before.last_rc, "pan": mask_pan(before.item.pan_masked)},
                    {"state": str(requeued.state), "next_attempt_at": requeued.next_attempt_at},
                    now)
    finally:
        store.close()
    if before is None or requeued is None:
        state = "no such item" if before is None else f"it is {before.state}"
        print(f"error: item {args.id} is not dead or refused ({state})")
        return 1
    print(f"item {args.id} re-queued for {before.item.issuer_id} (was {before.state})")
    return 0
