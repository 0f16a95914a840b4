"""``iso-switch audit``: the append-only log of administrative actions.

Each line: when (UTC), who (the OS user of the CLI, or the console's
operator), what, on which target, and the state before and after. Targets
and states never hold a full PAN, a PIN or key material.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from iso_switch.cli.ledger_cmd import LIST_LIMIT_DEFAULT, add_data_dir


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "audit", help="list the audit log of administrative actions (newest first)",
        description="The append-only audit log: who changed a card, the PIN tries, a "
        "blacklist, a terminal or merchant profile, a review, an account or a key, when, "
        "and the state before and after (PANs masked).",
    )
    add_data_dir(parser)
    parser.add_argument("--limit", type=int, default=LIST_LIMIT_DEFAULT,
                        help=f"how many entries (default {LIST_LIMIT_DEFAULT})")
    parser.add_argument("--action", help="only this action, e.g. card.state or key.rotate")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.set_defaults(func=_audit)


def _audit(args: argparse.Namespace) -> int:
    from iso_switch.processor import open_store

    store = open_store(Path(args.data_dir))
    try:
        entries = store.list_audit(args.limit, args.action)
    finally:
        store.close()
    for e in entries:
        if args.json:
            print(json.dumps({"id": e.id, "at": e.at, "actor": e.actor, "action": e.action,
                              "target": e.target, "before": e.before, "after": e.after},
                             sort_keys=True))
        else:
            print(f"{e.id:>6}  {e.at}  {e.actor:<12} {e.action:<18} {e.target:<24} "
                  f"{json.dumps(e.before, sort_keys=True)} -> "
                  f"{json.dumps(e.after, sort_keys=True)}")
    return 0
