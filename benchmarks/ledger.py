"""Durable ledger postings per second: group commit vs one commit per posting.

Both runs use the same SQLite store (WAL, ``synchronous=FULL``: every
commit is fsync'd) in one process, so the ratio compares like with like.
A posting is one transfer between two accounts (a cardholder debit and the
merchant's settlement credit), applied with the ledger's rules (no
cardholder overdraft, currency, closed accounts).

    python -m benchmarks.ledger            # figures as text
    python -m benchmarks.ledger --json     # {"group_commit_postings_s", ...}
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from iso_switch.ledger import AccountKind, Entry, SqliteLedgerStore, TransferKind

CURRENCY = 156
CARDHOLDERS = 1_000
OPENING_MINOR = 10**12
BATCH_SIZE_DEFAULT = 1_000
GROUP_POSTINGS_DEFAULT = 200_000
SINGLE_SECONDS_DEFAULT = 3.0


def _setup(store: SqliteLedgerStore, now: datetime) -> tuple[list[int], int]:
    with store.write():
        equity = store.create_account("EQ", CURRENCY, AccountKind.EQUITY, now)
        merchant = store.create_account("M", CURRENCY, AccountKind.SETTLEMENT, now)
        cards = [store.create_account(f"C{i}", CURRENCY, AccountKind.CARDHOLDER, now)
                 for i in range(CARDHOLDERS)]
        store.move([Entry(TransferKind.POSTED, equity, c, OPENING_MINOR, CURRENCY, ref="open")
                    for c in cards], now)
    return cards, merchant


def group_commit(store: SqliteLedgerStore, cards: list[int], merchant: int, postings: int,
                 batch_size: int) -> float:
    """Postings per second, ``batch_size`` postings per fsync'd commit."""
    now = datetime.now(UTC)
    done = 0
    start = time.perf_counter()
    while done < postings:
        entries = [
            Entry(TransferKind.POSTED, cards[(done + i) % len(cards)], merchant, 1 + i % 97,
                  CURRENCY, ref="bench")
            for i in range(min(batch_size, postings - done))
        ]
        store.begin()
        store.move(entries, now)
        store.commit()
        done += len(entries)
    return done / (time.perf_counter() - start)


def single_commit(store: SqliteLedgerStore, cards: list[int], merchant: int,
                  seconds: float) -> float:
    """Postings per second with one fsync'd commit per posting."""
    now = datetime.now(UTC)
    done = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        store.begin()
        store.transfer(cards[done % len(cards)], merchant, 1, CURRENCY, "bench", now)
        store.commit()
        done += 1
    return done / (time.perf_counter() - start)


def run(postings: int, batch_size: int, single_seconds: float,
        directory: Path | None) -> dict[str, float]:
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        store = SqliteLedgerStore(Path(tmp) / "bench.sqlite3", synchronous="FULL")
        cards, merchant = _setup(store, datetime.now(UTC))
        group = group_commit(store, cards, merchant, postings, batch_size)
        single = single_commit(store, cards, merchant, single_seconds)
        problems = store.check_invariants()
        store.close()
    if problems:
        raise SystemExit("ledger invariants violated after the benchmark: " + problems[0])
    return {
        "group_commit_postings_s": round(group, 1),
        "single_commit_postings_s": round(single, 1),
        "ratio": round(group / single, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--postings", type=int, default=GROUP_POSTINGS_DEFAULT,
                        help=f"postings in the group-commit run ({GROUP_POSTINGS_DEFAULT})")
    parser.add_argument("--batch", type=int, default=BATCH_SIZE_DEFAULT,
                        help=f"postings per group commit ({BATCH_SIZE_DEFAULT})")
    parser.add_argument("--single-seconds", type=float, default=SINGLE_SECONDS_DEFAULT,
                        help="how long the one-commit-per-posting run lasts")
    parser.add_argument("--dir", type=Path, default=None,
                        help="where the temporary store lives (default: the system temp dir)")
    args = parser.parse_args()
    figures = run(args.postings, args.batch, args.single_seconds, args.dir)
    if args.json:
        print(json.dumps(figures))
        return
    print(f"group commit ({args.batch}/commit): {figures['group_commit_postings_s']:>12,.0f} "
          "durable postings/s")
    print(f"one commit per posting:   {figures['single_commit_postings_s']:>12,.0f} "
          "durable postings/s")
    print(f"ratio:                    {figures['ratio']:>12,.1f}x")


if __name__ == "__main__":
    main()
