"""``iso-switch-load``: a load generator for the switch.

N connections, each its own DUKPT device (distinct KSN device ids, distinct
STAN ranges, spread over TERM0001..TERM0003), send a mix of transactions
with PINs and MACs built by :mod:`simulators.client`.

- **Closed loop** (default): each connection keeps ``--pipeline K``
  requests outstanding (default 1: send, wait, send). Throughput is what the
  switch sustains at that concurrency.
- **Open loop** (``--rate R``): requests are offered at R per second in
  total whatever the switch does; a connection that already has
  :data:`OPEN_LOOP_OUTSTANDING_MAX` unanswered requests drops the offer.
  Latency counts from the *scheduled* send time, so a stalled switch shows
  in the percentiles instead of hiding (no coordinated omission).

It reports throughput, latency percentiles from an HDR histogram, and the
count per response code (``--json`` for one JSON object).

Sustained load needs cards it cannot exhaust: ``iso-switch-load provision
--data-dir DIR --cards N`` creates load cards (see
:mod:`simulators._provision`) in the switch's ledger, before or while it
serves; ``--provision DIR`` does the same just before a run. The demo cards
would answer 65/61/51 within a minute.

Each device's DUKPT counter is kept in a state file (default
``./var/load-state.json``) so a second run against the same switch does not
replay KSNs (``63``).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import trio
from hdrh.histogram import HdrHistogram

from iso_switch.protocol.framing import FramingKind
from simulators._provision import LOAD_EXPIRY, LOAD_PIN, load_card_pan, provision_cards
from simulators._state import SimState, StateError
from simulators.client import (
    DEFAULT_TIMEOUT_S,
    DEMO_KSN_PREFIX,
    STAN_MAX,
    MacVerdict,
    ResponseTimeout,
    Sealed,
    SwitchClient,
    SwitchClientError,
    TerminalDevice,
    open_switch_client,
    tpdu_argument,
)

DEFAULT_MIX: Final = "purchase=60,balance=15,withdraw=10,refund=5,auth=10"
DEFAULT_TERMINAL_IDS: Final = ("TERM0001", "TERM0002", "TERM0003")
DEFAULT_STATE_FILE: Final = "./var/load-state.json"
#: Load devices start at this KSN device index, clear of the terminal
#: simulator's device 0 and the test suite's devices.
FIRST_DEVICE_INDEX: Final = 1000
TERMINALS_MAX: Final = 10_000
PIPELINE_MAX: Final = 64  # the switch's default in-flight bound per connection
OPEN_LOOP_OUTSTANDING_MAX: Final = 64
DEFAULT_CARDS: Final = 1000
#: Latency histogram range: 1 us .. 10 min, 3 significant digits.
LATENCY_US_MIN: Final = 1
LATENCY_US_MAX: Final = 600_000_000
PROGRESS_INTERVAL_S: Final = 0.25
STATE_SAVE_INTERVAL_S: Final = 5.0
AMOUNT_MINOR_MIN: Final = 100
AMOUNT_MINOR_MAX: Final = 5_000

#: Transaction kinds of ``--mix`` and whether each needs a PIN.
KINDS: Final[dict[str, bool]] = {
    "purchase": True, "balance": True, "withdraw": True, "refund": False, "auth": False,
    "transfer": True, "echo": False,
}
#: What a terminal profile refuses (docs/interface.md section 6): TERM0002 does
#: no withdrawals or transfers; those kinds are left out of its mix.
TERMINAL_REFUSES: Final[dict[str, frozenset[str]]] = {
    "TERM0002": frozenset({"withdraw", "transfer"}),
}
TRANSFER_TO_ACCOUNT: Final = "6222020000009999"


def parse_mix(text: str) -> dict[str, int]:
    """``"purchase=70,balance=30"`` -> weights; unknown kinds are an error."""
    mix: dict[str, int] = {}
    for part in text.split(","):
        name, _, weight = part.strip().partition("=")
        if name not in KINDS:
            raise argparse.ArgumentTypeError(
                f"unknown kind {name!r} (known: {', '.join(KINDS)})")
        try:
            value = int(weight) if weight else 1
        except ValueError:
            raise argparse.ArgumentTypeError(f"weight of {name} is not an integer") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"weight of {name} is negative")
        mix[name] = value
    if not any(mix.values()):
        raise argparse.ArgumentTypeError("the mix has no positive weight")
    return mix


@dataclass
class Stats:
    """What a run measured. ``sent`` counts requests put on the wire;
    each ends as exactly one of an answer (``codes``), a timeout or an
    error, so ``sum(codes) + timeouts + errors == sent`` after the run."""

    histogram: HdrHistogram = field(
        default_factory=lambda: HdrHistogram(LATENCY_US_MIN, LATENCY_US_MAX, 3))
    codes: Counter[str] = field(default_factory=Counter)
    by_kind: dict[str, Counter[str]] = field(default_factory=dict)
    sent: int = 0
    timeouts: int = 0
    errors: int = 0
    offered: int = 0
    dropped: int = 0
    mac_bad: int = 0
    connect_failures: int = 0

    @property
    def answered(self) -> int:
        return sum(self.codes.values())

    def record(self, kind: str, code: str, latency_s: float, verdict: MacVerdict) -> None:
        self.codes[code] += 1
        self.by_kind.setdefault(kind, Counter())[code] += 1
        self.histogram.record_value(
            min(max(int(latency_s * 1_000_000), LATENCY_US_MIN), LATENCY_US_MAX))
        if verdict is MacVerdict.BAD:
            self.mac_bad += 1


@dataclass
class Plan:
    """The run's settings, validated."""

    host: str
    port: int
    dialect: str
    framing: str
    tpdu: bytes | None
    terminals: int
    terminal_ids: tuple[str, ...]
    mix: dict[str, int]
    pipeline: int
    rate_tps: float | None
    duration_s: float | None
    count: int | None
    cards: int
    first_card: int
    timeout_s: float
    seed: int | None
    #: The peer is benchmarks.echo_server (the end-to-end benchmark's
    #: baseline): each answer is the request itself, matched by its own MTI
    #: and taken as approved, so auths still send their completions.
    echo_target: bool = False


class Budget:
    """The shared stop condition: a request count or a deadline."""

    def __init__(self, count: int | None, deadline: float | None) -> None:
        self.remaining = count
        self.deadline = deadline
        self.stopped = False

    def take(self) -> bool:
        """Reserve one request; False once the run is over."""
        if self.stopped:
            return False
        if self.deadline is not None and trio.current_time() >= self.deadline:
            self.stopped = True
            return False
        if self.remaining is not None:
            if self.remaining <= 0:
                self.stopped = True
                return False
            self.remaining -= 1
        return True


class LoadTerminal:
    """One connection's device and its share of the mix."""

    def __init__(self, plan: Plan, index: int, device: TerminalDevice, rng: random.Random,
                 stats: Stats) -> None:
        self.plan = plan
        self.index = index
        self.device = device
        self.rng = rng
        self.stats = stats
        refused = TERMINAL_REFUSES.get(device.terminal_id, frozenset())
        allowed = {k: w for k, w in plan.mix.items() if w > 0 and k not in refused}
        if not allowed:  # this terminal may do nothing of the mix: fall back to echo
            allowed = {"echo": 1}
        self.kinds = list(allowed)
        self.weights = list(allowed.values())

    def _card(self) -> str:
        return load_card_pan(self.plan.first_card + self.rng.randrange(self.plan.cards))

    def _amount(self) -> int:
        return self.rng.randrange(AMOUNT_MINOR_MIN, AMOUNT_MINOR_MAX + 1)

    def build(self, kind: str) -> Sealed:
        device = self.device
        pin = LOAD_PIN if KINDS[kind] else None
        if kind == "echo":
            return device.seal_message(device.echo())
        pan = self._card()
        if kind == "purchase":
            fields = device.purchase(pan, self._amount(), expiry=LOAD_EXPIRY)
        elif kind == "balance":
            fields = device.balance_inquiry(pan, expiry=LOAD_EXPIRY)
        elif kind == "withdraw":
            fields = device.withdrawal(pan, self._amount(), expiry=LOAD_EXPIRY)
        elif kind == "refund":
            fields = device.refund(pan, self._amount(), expiry=LOAD_EXPIRY)
        elif kind == "transfer":
            fields = device.transfer(pan, self._amount(), TRANSFER_TO_ACCOUNT,
                                     expiry=LOAD_EXPIRY)
        else:
            fields = device.authorization(pan, self._amount(), expiry=LOAD_EXPIRY)
        return device.seal_message(fields, pin=pin)

    async def one(self, client: SwitchClient, budget: Budget,
                  started: float | None = None) -> None:
        """One transaction of the mix (an auth is followed by its
        completion when approved and the budget allows)."""
        kind = self.rng.choices(self.kinds, self.weights)[0]
        built: list[Sealed] = []
        fields = await self._call(client, kind, lambda: _keep(built, self.build(kind)), built,
                                  started)
        approved = fields is not None and fields.get(
            "39", "00" if self.plan.echo_target else "--") == "00"
        if kind == "auth" and approved and budget.take():
            original = built[0].fields
            done: list[Sealed] = []
            await self._call(
                client, "completion",
                lambda: _keep(done, self.device.seal_message(self.device.completion(original))),
                done, None)

    async def _call(self, client: SwitchClient, kind: str, build: Callable[[], Sealed],
                    built: list[Sealed], started: float | None) -> dict[str, str] | None:
        """Seal (under the client's send lock, so KSN counters leave in
        order) and send one request; record its answer."""
        stats = self.stats
        begin = trio.current_time() if started is None else started
        stats.sent += 1
        try:
            fields, raw = await client.call(build, self.plan.timeout_s)
        except ResponseTimeout:
            stats.timeouts += 1
            return None
        except SwitchClientError:
            stats.errors += 1
            return None
        latency = trio.current_time() - begin
        sealed = built[0]
        verdict = (self.device.verify_response_mac(raw, sealed.ksn, fields)
                   if sealed.mac else MacVerdict.ABSENT)
        stats.record(kind, fields.get("39", "--"), latency, verdict)
        return fields

    async def closed_loop(self, client: SwitchClient, budget: Budget) -> None:
        async def worker() -> None:
            while budget.take():
                await self.one(client, budget)

        async with trio.open_nursery() as nursery:
            for _ in range(self.plan.pipeline):
                nursery.start_soon(worker)

    async def open_loop(self, client: SwitchClient, budget: Budget, rate_tps: float) -> None:
        interval_s = 1.0 / rate_tps
        # Spread the connections' schedules over one interval.
        next_at = trio.current_time() + interval_s * self.rng.random()
        outstanding = 0

        async def run_one(scheduled: float) -> None:
            nonlocal outstanding
            try:
                await self.one(client, budget, scheduled)
            finally:
                outstanding -= 1

        async with trio.open_nursery() as nursery:
            while True:
                await trio.sleep_until(next_at)
                if not budget.take():
                    break
                self.stats.offered += 1
                if outstanding >= OPEN_LOOP_OUTSTANDING_MAX or client.closed:
                    self.stats.dropped += 1
                else:
                    outstanding += 1
                    nursery.start_soon(run_one, next_at)
                next_at += interval_s


def _keep(into: list[Sealed], sealed: Sealed) -> Sealed:
    into.append(sealed)
    return sealed


def _stan_range(index: int, terminals: int) -> tuple[int, int]:
    span = STAN_MAX // terminals
    return (1 + index * span, (index + 1) * span)


def make_devices(plan: Plan, state: SimState) -> list[TerminalDevice]:
    """One device per connection: KSN device index FIRST_DEVICE_INDEX + i,
    its own STAN range, terminal IDs round robin, counters from ``state``."""
    devices = []
    for index in range(plan.terminals):
        probe = TerminalDevice(dialect=plan.dialect, device_index=FIRST_DEVICE_INDEX + index)
        saved = state.device(probe.initial_ksn)
        first, last = _stan_range(index, plan.terminals)
        stan = saved.stan + 1 if isinstance(saved.stan, int) and first <= saved.stan < last \
            else None
        devices.append(TerminalDevice(
            terminal_id=plan.terminal_ids[index % len(plan.terminal_ids)],
            dialect=plan.dialect, ksn_prefix=DEMO_KSN_PREFIX,
            device_index=FIRST_DEVICE_INDEX + index, counter=saved.counter,
            stan_range=(first, last), stan=stan))
    return devices


def save_devices(state: SimState, devices: Sequence[TerminalDevice]) -> None:
    for device in devices:
        saved = state.device(device.initial_ksn)
        saved.counter = device.counter
        saved.stan = device.last_stan
    state.save()


async def run_load(plan: Plan, state: SimState,
                   progress: Callable[[Stats, float], None] | None = None) -> tuple[Stats, float]:
    """Run the plan; returns the stats and the elapsed seconds."""
    rng = random.Random(plan.seed)
    stats = Stats()
    devices = make_devices(plan, state)
    terminals = [LoadTerminal(plan, i, d, random.Random(rng.random()), stats)
                 for i, d in enumerate(devices)]
    start = trio.current_time()
    budget = Budget(plan.count, None if plan.duration_s is None else start + plan.duration_s)
    rate_each = None if plan.rate_tps is None else plan.rate_tps / plan.terminals

    async def drive(terminal: LoadTerminal) -> None:
        try:
            async with open_switch_client(plan.host, plan.port, dialect=plan.dialect,
                                          framing=plan.framing, tpdu=plan.tpdu,
                                          timeout_s=plan.timeout_s,
                                          max_in_flight=max(plan.pipeline,
                                                            OPEN_LOOP_OUTSTANDING_MAX),
                                          echo_target=plan.echo_target) as client:
                if rate_each is None:
                    await terminal.closed_loop(client, budget)
                else:
                    await terminal.open_loop(client, budget, rate_each)
        except OSError:
            stats.connect_failures += 1

    async def report() -> None:
        last_save = trio.current_time()
        while True:
            await trio.sleep(PROGRESS_INTERVAL_S)
            if progress is not None:
                progress(stats, trio.current_time() - start)
            if trio.current_time() - last_save >= STATE_SAVE_INTERVAL_S:
                save_devices(state, devices)
                last_save = trio.current_time()

    try:
        async with trio.open_nursery() as outer:
            outer.start_soon(report)
            async with trio.open_nursery() as nursery:
                for terminal in terminals:
                    nursery.start_soon(drive, terminal)
            outer.cancel_scope.cancel()
    finally:
        save_devices(state, devices)
    elapsed = trio.current_time() - start
    if progress is not None:
        progress(stats, elapsed)
    return stats, elapsed


# -- reporting --------------------------------------------------------------------


def summary(plan: Plan, stats: Stats, elapsed_s: float) -> dict[str, Any]:
    """The JSON-ready result of a run."""
    h = stats.histogram
    answered = stats.answered

    def ms(value_us: float) -> float:
        return round(value_us / 1000.0, 3)

    latency = ({"p50": ms(h.get_value_at_percentile(50)),
                "p90": ms(h.get_value_at_percentile(90)),
                "p99": ms(h.get_value_at_percentile(99)),
                "p99_9": ms(h.get_value_at_percentile(99.9)),
                "max": ms(h.get_max_value()), "mean": ms(h.get_mean_value())}
               if answered else {})
    result: dict[str, Any] = {
        "mode": "closed-loop" if plan.rate_tps is None else "open-loop",
        "host": plan.host, "port": plan.port, "dialect": plan.dialect,
        "framing": plan.framing, "tpdu": None if plan.tpdu is None else plan.tpdu.hex().upper(),
        "terminals": plan.terminals, "pipeline": plan.pipeline if plan.rate_tps is None else None,
        "mix": plan.mix, "cards": plan.cards,
        "duration_s": round(elapsed_s, 3),
        "sent": stats.sent, "answered": answered,
        "timeouts": stats.timeouts, "errors": stats.errors,
        "connect_failures": stats.connect_failures,
        "tps": round(answered / elapsed_s, 1) if elapsed_s > 0 else 0.0,
        "latency_ms": latency,
        "response_codes": dict(sorted(stats.codes.items())),
        "by_kind": {k: dict(sorted(v.items())) for k, v in sorted(stats.by_kind.items())},
        "mac_bad": stats.mac_bad,
    }
    if plan.rate_tps is not None:
        result["offered_tps"] = plan.rate_tps
        result["offered"] = stats.offered
        result["dropped"] = stats.dropped
        result["accepted_tps"] = result["tps"]
    return result


def print_summary(result: dict[str, Any], out: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    from simulators.client import describe_response_code

    console = Console(file=out, highlight=False)
    mode = result["mode"]
    head = (f"{mode}, {result['terminals']} terminals"
            + (f", pipeline {result['pipeline']}" if result["pipeline"] else "")
            + f", {result['duration_s']:.1f} s")
    console.print(f"[bold]iso-switch-load[/bold]: {head}")
    console.print(f"sent {result['sent']}, answered {result['answered']}, timeouts "
                  f"{result['timeouts']}, errors {result['errors']}, MAC bad {result['mac_bad']}")
    if mode == "open-loop":
        console.print(f"offered {result['offered_tps']:.1f} TPS ({result['offered']} offers, "
                      f"{result['dropped']} dropped), accepted {result['accepted_tps']:.1f} TPS")
    console.print(f"[bold]throughput {result['tps']:.1f} TPS[/bold]")
    if result["latency_ms"]:
        lat = result["latency_ms"]
        console.print("latency ms: " + ", ".join(
            f"{name} {lat[key]:.3f}" for name, key in (
                ("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p99.9", "p99_9"),
                ("max", "max"))))
    table = Table("DE39", "meaning", "count")
    for code, count in result["response_codes"].items():
        table.add_row(code, describe_response_code(code).partition(" ")[2], str(count))
    console.print(table)


# -- command line -----------------------------------------------------------------


def _positive_float(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError("must be a positive number")
    return value


def _bounded_int(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low}..{high}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iso-switch-load",
        description="Drive the switch with N terminals (connections, each its own DUKPT "
        "device) sending a mix of transactions with PINs and MACs; report TPS, latency "
        "percentiles (HDR histogram) and counts per response code. Needs load cards: run "
        "'iso-switch-load provision --data-dir DIR --cards N' first (or pass --provision "
        "DIR), else every card answers 14.",
        epilog="Subcommand: 'iso-switch-load provision --help' creates load cards.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="switch address")
    parser.add_argument("--port", type=int, default=8583, help="listener port (default 8583)")
    parser.add_argument("--dialect", default="ascii87-hex", help="listener dialect "
                        "(ascii87-hex default, ascii87-bin for port 8584)")
    parser.add_argument("--framing", default="binary2",
                        choices=[kind.value for kind in FramingKind],
                        help="length header (default binary2)")
    parser.add_argument("--tpdu", type=tpdu_argument, metavar="HEX",
                        help="the listener frames with a TPDU: send this one (10 hex, e.g. "
                        "6000120000)")
    parser.add_argument("--terminals", type=_bounded_int(1, TERMINALS_MAX), default=10,
                        help="connections, each its own DUKPT device (default 10)")
    parser.add_argument("--terminal-ids", default=",".join(DEFAULT_TERMINAL_IDS),
                        help="terminal IDs, assigned round robin (default "
                        "TERM0001,TERM0002,TERM0003; TERM0002 skips withdrawals/transfers)")
    parser.add_argument("--mix", type=parse_mix, default=parse_mix(DEFAULT_MIX),
                        help=f"kind=weight list (default {DEFAULT_MIX}); kinds: "
                        f"{', '.join(KINDS)}. 'auth' is an 0100 followed by its 0220")
    loop = parser.add_mutually_exclusive_group()
    loop.add_argument("--closed-loop", action="store_true",
                      help="each terminal waits for its answers (the default)")
    loop.add_argument("--rate", type=_positive_float, metavar="TPS",
                      help="open loop: offer this many requests per second in total")
    parser.add_argument("--pipeline", type=_bounded_int(1, PIPELINE_MAX), default=1,
                        help=f"closed loop: requests outstanding per connection (default 1, "
                        f"at most {PIPELINE_MAX})")
    stop = parser.add_mutually_exclusive_group()
    stop.add_argument("--duration", type=_positive_float, metavar="S",
                      help="run this many seconds (default 10)")
    stop.add_argument("--count", type=_bounded_int(1, 10**9), metavar="N",
                      help="send this many requests in total")
    parser.add_argument("--cards", type=_bounded_int(1, 10**7), default=DEFAULT_CARDS,
                        help=f"load cards used, numbered from --first-card (default "
                        f"{DEFAULT_CARDS})")
    parser.add_argument("--first-card", type=_bounded_int(0, 10**7), default=0,
                        help="index of the first load card (default 0)")
    parser.add_argument("--provision", metavar="DATA_DIR",
                        help="create the load cards in this switch data directory first")
    parser.add_argument("--config", help="the switch's config file (for --provision: "
                        "which key store)")
    parser.add_argument("--state", default=DEFAULT_STATE_FILE,
                        help=f"DUKPT counter state (default {DEFAULT_STATE_FILE}; 'none' "
                        "keeps nothing, and a second run against the same switch gets 63)")
    parser.add_argument("--timeout", type=_positive_float, default=DEFAULT_TIMEOUT_S,
                        help=f"seconds to wait for an answer (default {DEFAULT_TIMEOUT_S:g})")
    parser.add_argument("--seed", type=int, help="random seed (cards, amounts, kinds)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no live progress bar (also off when stderr is not a terminal)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object with the results")
    parser.add_argument("--echo-target", action="store_true",
                        help="the peer is benchmarks.echo_server, which returns each request "
                        "unchanged (the end-to-end benchmark's baseline): match answers by "
                        "the request's MTI and take them as approved; codes show '--' and "
                        "mac_bad is meaningless")
    return parser


def build_provision_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iso-switch-load provision",
        description="Create load-test cards in a switch's ledger (before or while it "
        "serves): Luhn-valid PANs 4761738NNNNNNNNC under the on-us BIN, PIN 1234 (stored "
        "as PIN verification data from the switch's key store), expiry 3012, each with an "
        "account holding 1,000,000,000.00 and daily limits raised so sustained load is "
        "not declined 61/65/51. Idempotent. The cards go through the switch's admin API "
        "(audited as card.import, like 'iso-switch cards import'); with the demo "
        "configuration the demo data is seeded first, as the switch does at start.",
    )
    parser.add_argument("--data-dir", required=True, help="the switch's data directory")
    parser.add_argument("--cards", type=_bounded_int(1, 10**7), default=DEFAULT_CARDS,
                        help=f"how many cards (default {DEFAULT_CARDS})")
    parser.add_argument("--first-card", type=_bounded_int(0, 10**7), default=0,
                        help="index of the first card (default 0)")
    parser.add_argument("--config", help="the switch's config file (which key store)")
    return parser


def provision_main(argv: Sequence[str]) -> int:
    args = build_provision_parser().parse_args(argv)
    report = provision_cards(Path(args.data_dir), args.cards, first=args.first_card,
                             config_path=Path(args.config) if args.config else None)
    print(f"load cards {args.first_card}..{args.first_card + args.cards - 1}: "
          f"{report.created} created, {report.existing} already there")
    return 0


def _plan(args: argparse.Namespace) -> Plan:
    ids = tuple(t.strip() for t in args.terminal_ids.split(",") if t.strip())
    if not ids:
        raise argparse.ArgumentTypeError("--terminal-ids is empty")
    duration = args.duration if args.duration is not None or args.count is not None else 10.0
    return Plan(host=args.host, port=args.port, dialect=args.dialect,
                framing=args.framing, tpdu=args.tpdu, terminals=args.terminals,
                terminal_ids=ids, mix=args.mix,
                pipeline=args.pipeline, rate_tps=args.rate, duration_s=duration,
                count=args.count, cards=args.cards, first_card=args.first_card,
                timeout_s=args.timeout, seed=args.seed, echo_target=args.echo_target)


def main(argv: Sequence[str] | None = None, out: Any = None) -> int:
    """Run the load generator (or ``provision``); results go to ``out``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["provision"]:
        return provision_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    out = out or sys.stdout
    try:
        plan = _plan(args)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    if args.provision:
        report = provision_cards(Path(args.provision), args.cards + args.first_card,
                                 config_path=Path(args.config) if args.config else None)
        print(f"provisioned: {report.created} created, {report.existing} already there",
              file=sys.stderr)
    try:
        state = SimState(None if args.state == "none" else Path(args.state))
    except StateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    show_progress = not args.no_progress and sys.stderr.isatty()
    try:
        if show_progress:
            stats, elapsed = _run_with_progress(plan, state)
        else:
            stats, elapsed = trio.run(run_load, plan, state)
    except KeyboardInterrupt:
        return 130
    result = summary(plan, stats, elapsed)
    if args.json:
        print(json.dumps(result), file=out)
    else:
        print_summary(result, out)
    if stats.sent and not stats.answered:
        return 1
    return 0


def _run_with_progress(plan: Plan, state: SimState) -> tuple[Stats, float]:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    total = float(plan.count) if plan.count is not None else float(plan.duration_s or 0)
    unit_is_count = plan.count is not None
    with Progress(TextColumn("[bold]load[/bold]"), BarColumn(), TextColumn("{task.description}"),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("", total=total)

        def update(stats: Stats, elapsed_s: float) -> None:
            done = stats.sent if unit_is_count else min(elapsed_s, total)
            tps = stats.answered / elapsed_s if elapsed_s > 0 else 0.0
            bar.update(task, completed=done,
                       description=f"sent {stats.sent}  answered {stats.answered}  "
                       f"{tps:,.0f} TPS  errors {stats.timeouts + stats.errors}")

        return trio.run(run_load, plan, state, update)


if __name__ == "__main__":
    sys.exit(main())
