"""The processor alone: decided requests per second and CPU per request.

The switch's ledger process spends its time in :meth:`Processor.process_batch`
(parse, DUKPT + PIN, business rules, SQL, commit). This benchmark drives
exactly that, in one process, without sockets: load cards are provisioned
(:mod:`simulators._provision`) on a fresh data dir, simulated terminals
(:class:`simulators.client.TerminalDevice`) seal purchases, balance
inquiries and withdrawals with a PIN block and a MAC, and the requests are
decoded with the switch's codec, as the server hands them over. Building
and decoding happen before the clock starts; only ``process_batch`` (in
batches of :data:`BATCH_SIZE`, one commit each) is timed.

It runs twice, each on its own copy of the provisioned data dir: with
``synchronous=FULL`` (the production default: one fsync per batch) and with
``synchronous=NORMAL`` (no fsync per commit in WAL mode), which separates
the fsync from the CPU. Each mode reports the best of a few rounds: wall
requests/s, wall us/request and CPU us/request (process time). Every
request must be approved; anything else means the figure measured some
other path, and the run fails.

    python -m benchmarks.processor            # figures as text
    python -m benchmarks.processor --json     # {"full": {...}, "normal": {...}}
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from iso_switch.bootstrap import build_hsm
from iso_switch.config import load_config
from iso_switch.processor import (
    Processor,
    ProcessorConfig,
    Request,
    config_from,
    open_store,
)
from iso_switch.security.demo import pan_hash_key
from simulators._provision import LOAD_EXPIRY, LOAD_PIN, load_card_pan, provision_cards
from simulators.client import TerminalDevice, codec_for

BATCH_SIZE: Final = 50
#: Requests per round; every card is used once per round.
REQUESTS_DEFAULT: Final = 1_000
ROUNDS_DEFAULT: Final = 5
#: The demo risk rules alert on a card used more than 10 times a minute:
#: one use per card per round keeps every round on the common path.
CARDS_DEFAULT: Final = 1_000
#: Distinct DUKPT devices (each its own KSN replay state), all on TERM0001.
DEVICES: Final = 20
TERMINAL: Final = "TERM0001"
DIALECT: Final = "ascii87-hex"
AMOUNT_MINOR_BASE: Final = 1_000
#: Request mix, in order, repeated: purchase, purchase, purchase,
#: withdrawal, balance inquiry.
MIX: Final = ("purchase", "purchase", "purchase", "withdrawal", "balance")
MODES: Final = ("FULL", "NORMAL")


def _devices() -> list[TerminalDevice]:
    span = 999_999 // DEVICES
    return [
        TerminalDevice(terminal_id=TERMINAL, dialect=DIALECT, device_index=1000 + index,
                       stan_range=(1 + index * span, (index + 1) * span))
        for index in range(DEVICES)
    ]


def build_requests(devices: Sequence[TerminalDevice], count: int, cards: int,
                   offset: int) -> list[Request]:
    """``count`` sealed, then decoded, requests: what the server hands over."""
    codec = codec_for(DIALECT)
    requests = []
    for index in range(count):
        device = devices[index % len(devices)]
        pan = load_card_pan((offset + index) % cards)
        amount = AMOUNT_MINOR_BASE + index % 97
        kind = MIX[index % len(MIX)]
        if kind == "purchase":
            fields = device.purchase(pan, amount, expiry=LOAD_EXPIRY)
        elif kind == "withdrawal":
            fields = device.withdrawal(pan, amount, expiry=LOAD_EXPIRY)
        else:
            fields = device.balance_inquiry(pan, expiry=LOAD_EXPIRY)
        raw = device.seal(fields, pin=LOAD_PIN)
        requests.append(Request(fields=codec.decode(raw), mac_status="valid",
                                received_at=datetime.now(UTC)))
    return requests


def _run_mode(template: Path, work: Path, mode: str, requests: int, rounds: int,
              cards: int) -> dict[str, float]:
    data_dir = work / mode.lower()
    shutil.copytree(template, data_dir)
    config = load_config(None, {"data_dir": str(data_dir)})
    hsm = build_hsm(config, warn=False)
    key, _ = pan_hash_key(hsm.key_store, config.keys.pan_hash_key)
    processor_config: ProcessorConfig = config_from(config, pan_hash_key=key)
    processor_config = ProcessorConfig(**{
        **{name: getattr(processor_config, name) for name in processor_config.__slots__},
        "synchronous": mode,
    })
    store = open_store(data_dir, processor_config)
    processor = Processor(store, hsm, processor_config)
    devices = _devices()
    best_wall_s = best_cpu_s = float("inf")
    try:
        for round_index in range(rounds):
            batch = build_requests(devices, requests, cards, round_index)
            wall_start, cpu_start = time.perf_counter(), time.process_time()
            outcomes = []
            for start in range(0, len(batch), BATCH_SIZE):
                outcomes.extend(processor.process_batch(batch[start:start + BATCH_SIZE]))
            wall_s = time.perf_counter() - wall_start
            cpu_s = time.process_time() - cpu_start
            codes = {outcome.response.get("39", "") for outcome in outcomes}
            if codes != {"00"}:
                raise SystemExit(f"expected every request approved, got {sorted(codes)}")
            best_wall_s, best_cpu_s = min(best_wall_s, wall_s), min(best_cpu_s, cpu_s)
        problems = store.check_invariants()
    finally:
        store.close()
    if problems:
        raise SystemExit("ledger invariants violated after the benchmark: " + problems[0])
    return {
        "requests_s": round(requests / best_wall_s, 1),
        "us_per_request": round(best_wall_s / requests * 1e6, 1),
        "cpu_us_per_request": round(best_cpu_s / requests * 1e6, 1),
    }


def run(requests: int, rounds: int, cards: int,
        directory: Path | None) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        work = Path(tmp)
        template = work / "template"
        provision_cards(template, cards)
        return {mode.lower(): _run_mode(template, work, mode, requests, rounds, cards)
                for mode in MODES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--requests", type=int, default=REQUESTS_DEFAULT,
                        help=f"requests per round ({REQUESTS_DEFAULT})")
    parser.add_argument("--rounds", type=int, default=ROUNDS_DEFAULT,
                        help=f"rounds per mode; the best counts ({ROUNDS_DEFAULT})")
    parser.add_argument("--cards", type=int, default=CARDS_DEFAULT,
                        help=f"load cards provisioned ({CARDS_DEFAULT}); keep it at least "
                             "--requests so no card trips the velocity rule")
    parser.add_argument("--dir", type=Path, default=None,
                        help="where the temporary data dirs live (default: the system temp dir)")
    args = parser.parse_args()
    if args.requests <= 0 or args.rounds <= 0 or args.cards <= 0:
        parser.error("--requests, --rounds and --cards are positive")
    figures = run(args.requests, args.rounds, args.cards, args.dir)
    if args.json:
        print(json.dumps(figures))
        return
    print(f"processor, batches of {BATCH_SIZE}, best of {args.rounds} rounds of "
          f"{args.requests} requests (mix: {', '.join(MIX)})")
    for mode, result in figures.items():
        print(f"synchronous={mode.upper():<7} {result['requests_s']:>9,.0f} requests/s  "
              f"{result['us_per_request']:>7.1f} us/request  "
              f"{result['cpu_us_per_request']:>7.1f} CPU us/request")


if __name__ == "__main__":
    main()
