"""``iso-switch-replay``: send a recorded trace's requests to a switch again
and compare every answer with the recorded one, field by field.

A trace (``iso_switch.trace``) holds every frame a switch received
and sent. Replay reads it, opens the sealed cardholder fields with the
trace key from the key store (resolved exactly as the switch does:
``--config`` / ``--data-dir``, ``$ISO_SWITCH_MASTER_KEY`` or the
configured master key file, the demo key store otherwise), and sends the
requests (``dir == "in"``):

- **one client connection per traced connection**, each request on the
  connection it came in on, in the recorded order;
- **causality kept**: a request waits for every answer that had gone out
  before it arrived in the recording (on any connection), so a reversal
  never overtakes its original even with ``--pace max``; requests that were
  pipelined in the recording are pipelined again;
- **pacing**: ``--pace original`` (default) sends each request at its
  recorded offset from the start; ``--pace max`` as fast as causality
  allows;
- **re-secured**: the recorded KSNs would be replays (``63``) on the
  switch that recorded them, so by default every request that carried a
  PIN block or a MAC is sealed again by a fresh replay device (a random
  DUKPT device id under the recorded key set; one device per connection):
  the PIN is recovered from the recorded PIN block under the recorded KSN
  (in memory only) and encrypted under the new KSN, and the MAC is computed
  again. ``--keep-ksn`` sends the recorded fields as they were (a fresh
  switch has never seen those KSNs).

Answers are matched to requests by response MTI class + DE11 + DE41 and
compared with the recorded answers, ignoring the bitmaps and the fields of
``--ignore`` (default :data:`DEFAULT_IGNORED_FIELDS`: RRN, approval code,
KSN and MACs, which differ on every run). A response MAC is also verified
under the replay device's keys. A masked trace cannot restore its masked
fields: requests that have any are skipped (counted, and said so); a
recorded answer's masked fields are compared in their masked form.

Exit status: 0 when every replayed request was answered as recorded and
none was skipped for masked fields, 1 otherwise (2 for usage errors, a
missing trace key or an unreadable trace). ``--json`` prints the report as
one JSON object. Differences show protected fields masked, never in clear.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import trio

from iso_switch.acquirer.mac import MAC_FIELDS, mac_field
from iso_switch.security.errors import SecurityError
from iso_switch.security.hsm import SoftwareHsm
from iso_switch.security.ksn import TDES_COUNTER_BITS
from iso_switch.security.pinblock import FORMAT_0, decrypt_pin_block
from iso_switch.trace import (
    PROTECTED_FIELDS,
    FieldSealer,
    TracedListener,
    TraceEntry,
    TraceError,
    TraceHeader,
    TraceItem,
    mask_value,
    read_trace,
    sealer_from_store,
)
from simulators.client import (
    DEVICES_MAX,
    ConnectionClosed,
    MacVerdict,
    ResponseTimeout,
    Sealed,
    SwitchClient,
    SwitchClientError,
    TerminalDevice,
    codec_for,
    open_switch_client,
    pan_of,
    parse_tpdu,
    request_key,
    response_key,
)

#: Fields that differ on every run by design: RRN, approval code, KSN, MACs.
DEFAULT_IGNORED_FIELDS: Final = ("37", "38", "62", *MAC_FIELDS)
#: Bitmaps are never compared: a field present on one side only is reported
#: as that field.
BITMAP_FIELDS: Final = frozenset({"p", "1"})
DEFAULT_TIMEOUT_S: Final = 10.0
#: How long the collector waits for an answer before checking whether the
#: replay is over (not a limit on the switch).
_COLLECT_POLL_S: Final = 0.5
#: Differences listed in the text report (all of them go to --json).
TEXT_DIFFERENCES_MAX: Final = 50
PACES: Final = ("original", "max")
#: A KSN prefix: key set id (10 hex) + the device id's top 5 nibbles.
KSN_PREFIX_HEX_CHARS: Final = 15

SKIP_MASKED = "masked fields"
SKIP_UNDECODABLE = "undecodable when recorded"
SKIP_NO_TARGET = "no target for its listener"
SKIP_PIN = "PIN block does not decrypt under the key store"
SKIP_NO_TPDU = "its TPDU listener recorded no TPDU for it"


class ReplayError(Exception):
    """The replay cannot run (bad target, trace, or key store)."""


# -- planning (sans-I/O) ------------------------------------------------------


@dataclass(slots=True)
class Planned:
    """One recorded request on its way to being replayed."""

    index: int
    trace_id: str
    conn: int
    seq: int
    at_s: float  # offset from the start of the whole replay
    listener: str
    dialect: str
    fields: dict[str, str] = field(repr=False)
    recorded: dict[str, str] | None = field(repr=False)
    recorded_masked: tuple[str, ...] = ()
    skip: str | None = None
    waits_for: list[int] = field(default_factory=list)
    #: The recorded listener's framing (its trace header), and this
    #: request's TPDU when that listener used one.
    framing: str = "binary2"
    tpdu: bytes | None = None

    @property
    def connection(self) -> tuple[str, int]:
        return (self.trace_id, self.conn)


def plan_replay(items: Iterable[TraceItem], sealer: FieldSealer | None) -> list[Planned]:
    """The requests of a trace in send order, each with its recorded answer
    and the requests whose answers it must wait for (those that went out,
    in the recording, before it came in). Several recordings in one file
    are replayed one after the other."""
    runs: dict[str, tuple[list[TraceEntry], dict[int, TraceEntry]]] = {}
    listeners: dict[tuple[str, str], TracedListener] = {}
    for item in items:
        if isinstance(item, TraceHeader):
            for name, spoken in item.listeners.items():
                listeners[(item.trace_id, name)] = spoken
        if not isinstance(item, TraceEntry):
            continue
        requests, answers = runs.setdefault(item.trace_id, ([], {}))
        if item.direction == "in":
            requests.append(item)
        else:
            answers[item.seq] = item
    planned: list[Planned] = []
    offset_s = 0.0
    for requests, answers in runs.values():
        requests.sort(key=lambda e: (e.at_s, e.seq))
        run_start = len(planned)
        index_of_seq: dict[int, int] = {}
        for entry in requests:
            index_of_seq[entry.seq] = len(planned)
            planned.append(_plan_one(
                len(planned), entry, answers.get(entry.seq), sealer, offset_s,
                listeners.get((entry.trace_id, entry.listener), TracedListener(entry.dialect))))
        outs = sorted((a for a in answers.values() if a.seq in index_of_seq),
                      key=lambda a: a.at_s)
        cursor = 0
        for request in planned[run_start:]:
            while cursor < len(outs) and outs[cursor].at_s + offset_s < request.at_s:
                request.waits_for.append(index_of_seq[outs[cursor].seq])
                cursor += 1
        if requests:
            offset_s = max(offset_s, planned[-1].at_s)
    return planned


def _plan_one(index: int, entry: TraceEntry, answer: TraceEntry | None,
              sealer: FieldSealer | None, offset_s: float, spoken: TracedListener) -> Planned:
    skip: str | None = None
    fields: dict[str, str] = {}
    tpdu = _tpdu(entry.tpdu) if spoken.tpdu else None
    if entry.error is not None:
        skip = SKIP_UNDECODABLE
    elif entry.masked:
        skip = SKIP_MASKED
    elif spoken.tpdu and tpdu is None:
        skip = SKIP_NO_TPDU
    else:
        fields = entry.restored(sealer)
    recorded: dict[str, str] | None = None
    recorded_masked: tuple[str, ...] = ()
    if answer is not None and answer.error is None:
        recorded = answer.restored(sealer)
        recorded_masked = answer.masked
    return Planned(index, entry.trace_id, entry.conn, entry.seq, entry.at_s + offset_s,
                   entry.listener, entry.dialect, fields, recorded, recorded_masked, skip,
                   framing=spoken.framing, tpdu=tpdu)


def _tpdu(text: str | None) -> bytes | None:
    """A recorded TPDU (hex), if it is one."""
    if text is None:
        return None
    try:
        return parse_tpdu(text)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class FieldDiff:
    """One field that differs; values already masked where protected."""

    field: str
    recorded: str | None
    replayed: str | None


def shown(field_id: str, value: str | None) -> str | None:
    """A value as a report may show it: protected fields masked."""
    if value is None or field_id not in PROTECTED_FIELDS:
        return value
    return mask_value(field_id, value)


def _field_order(name: str) -> tuple[int, str]:
    return (int(name), "") if name.isdigit() else (-1, name)


def compare_fields(recorded: Mapping[str, str], recorded_masked: Iterable[str],
                   replayed: Mapping[str, str], ignore: Iterable[str]) -> list[FieldDiff]:
    """Fields that differ between a recorded and a replayed answer. A field
    masked in the recording is compared in its masked form."""
    skip = BITMAP_FIELDS | set(ignore)
    masked = set(recorded_masked)
    diffs: list[FieldDiff] = []
    for name in sorted((set(recorded) | set(replayed)) - skip, key=_field_order):
        old = recorded.get(name)
        new = replayed.get(name)
        if name in masked and new is not None:
            new = mask_value(name, new)
            if old != new:
                diffs.append(FieldDiff(name, old, new))
            continue
        if old != new:
            diffs.append(FieldDiff(name, shown(name, old), shown(name, new)))
    return diffs


@dataclass(slots=True)
class Outcome:
    """What became of one planned request."""

    planned: Planned
    status: str = "pending"  # matched | differing | missing | skipped | unrecorded
    diffs: list[FieldDiff] = field(default_factory=list)
    note: str | None = None


@dataclass(slots=True)
class ReplayReport:
    outcomes: list[Outcome]
    pace: str

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    def skipped_by_reason(self) -> dict[str, int]:
        reasons: dict[str, int] = {}
        for outcome in self.outcomes:
            if outcome.status == "skipped" and outcome.note is not None:
                reasons[outcome.note] = reasons.get(outcome.note, 0) + 1
        return reasons

    @property
    def ok(self) -> bool:
        return (self.count("differing") == 0 and self.count("missing") == 0
                and self.skipped_by_reason().get(SKIP_MASKED, 0) == 0)

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": len(self.outcomes),
            "replayed": len(self.outcomes) - self.count("skipped"),
            "matched": self.count("matched"),
            "differing": self.count("differing"),
            "missing": self.count("missing"),
            "unrecorded": self.count("unrecorded"),
            "skipped": self.count("skipped"),
            "skipped_by_reason": self.skipped_by_reason(),
            "pace": self.pace,
            "ok": self.ok,
            "differences": [_outcome_json(o) for o in self.outcomes
                            if o.status in ("differing", "missing")],
        }

    def to_text(self) -> str:
        data = self.to_json()
        lines = [
            f"replayed {data['replayed']} of {data['requests']} recorded requests "
            f"(pace {self.pace})",
            f"  matched     {data['matched']}",
            f"  differing   {data['differing']}",
            f"  missing     {data['missing']}  (no answer in time)",
            f"  unrecorded  {data['unrecorded']}  (answered; no recorded answer to compare)",
            f"  skipped     {data['skipped']}",
        ]
        for reason, count in sorted(data["skipped_by_reason"].items()):
            lines.append(f"    {count} {reason}")
        if data["skipped_by_reason"].get(SKIP_MASKED):
            lines.append("  (a masked trace cannot restore PANs, tracks or PIN blocks: "
                         "record with a trace key to replay those requests)")
        differences = data["differences"]
        if differences:
            lines.append("differences:")
        for item in differences[:TEXT_DIFFERENCES_MAX]:
            head = (f"  conn {item['conn']} seq {item['seq']} {item['mti']} "
                    f"stan {item['stan']}:")
            if item["status"] == "missing":
                lines.append(f"{head} no answer")
                continue
            parts = [f"DE{d['field']} recorded {d['recorded']!s} replayed {d['replayed']!s}"
                     for d in item["fields"]]
            lines.append(f"{head} " + "; ".join(parts))
        if len(differences) > TEXT_DIFFERENCES_MAX:
            lines.append(f"  ... {len(differences) - TEXT_DIFFERENCES_MAX} more (use --json)")
        lines.append("OK: every replayed request was answered as recorded" if self.ok
                     else "FAILED: see above")
        return "\n".join(lines)


def _outcome_json(outcome: Outcome) -> dict[str, Any]:
    planned = outcome.planned
    return {
        "trace": planned.trace_id, "conn": planned.conn, "seq": planned.seq,
        "mti": planned.fields.get("t"), "stan": planned.fields.get("11"),
        "status": outcome.status,
        "fields": [{"field": d.field, "recorded": d.recorded, "replayed": d.replayed}
                   for d in outcome.diffs],
    }


# -- running (trio) -------------------------------------------------------------

Target = tuple[str, int]


def parse_target(text: str) -> tuple[str | None, Target]:
    """``[LISTENER=]HOST:PORT``."""
    listener: str | None = None
    if "=" in text:
        listener, text = text.split("=", 1)
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ReplayError("a target is [LISTENER=]HOST:PORT")
    return listener, (host, int(port))


@dataclass(slots=True)
class _Connection:
    client: SwitchClient
    device: TerminalDevice | None
    pending: dict[tuple[str, str, str], deque[int]] = field(default_factory=dict)


class Replayer:
    """Runs a plan against targets. ``hsm`` opens recorded PIN blocks and
    gives the replay devices their BDK; ``device_index`` is the first
    replay device's index under the recorded KSN prefix (random if None)."""

    def __init__(self, plan: Sequence[Planned], targets: Mapping[str | None, Target], *,
                 hsm: SoftwareHsm | None, pace: str = "original", keep_ksn: bool = False,
                 ignore: Iterable[str] = DEFAULT_IGNORED_FIELDS,
                 timeout_s: float = DEFAULT_TIMEOUT_S, device_index: int | None = None) -> None:
        if pace not in PACES:
            raise ReplayError(f"pace is one of {', '.join(PACES)}")
        self.plan = plan
        self.targets = dict(targets)
        self.hsm = hsm
        self.pace = pace
        self.keep_ksn = keep_ksn
        self.ignore = tuple(ignore)
        self.timeout_s = timeout_s
        self.outcomes = [Outcome(p) for p in plan]
        self._done = [trio.Event() for _ in plan]
        self._sealed: list[Sealed | None] = [None] * len(plan)
        self._connections: dict[tuple[str, int], _Connection] = {}
        self._device_index = device_index
        self._devices_made = 0
        self._finished = False

    def _target(self, planned: Planned) -> Target | None:
        return self.targets.get(planned.listener, self.targets.get(None))

    async def run(self) -> ReplayReport:
        async with trio.open_nursery() as nursery:
            await self._drive(nursery)
            for event in self._done:
                await event.wait()
            self._finished = True
            nursery.cancel_scope.cancel()
        return ReplayReport(self.outcomes, self.pace)

    async def _drive(self, nursery: trio.Nursery) -> None:
        start = trio.current_time()
        first_at_s = self.plan[0].at_s if self.plan else 0.0
        for planned in self.plan:
            for index in planned.waits_for:
                await self._done[index].wait()
            if planned.skip is None and self._target(planned) is None:
                planned.skip = SKIP_NO_TARGET
            if planned.skip is not None:
                self._finish(planned.index, "skipped", note=planned.skip)
                continue
            if self.pace == "original":
                await trio.sleep_until(start + planned.at_s - first_at_s)
            try:
                connection = await self._connection(planned, nursery)
                raw = self._secure(planned, connection)
            except SkipRequest as skip:
                self._finish(planned.index, "skipped", note=str(skip))
                continue
            except (OSError, SwitchClientError):
                self._finish(planned.index, "missing", note="cannot connect")
                continue
            key = request_key(planned.fields)
            connection.pending.setdefault(key, deque()).append(planned.index)
            try:
                await connection.client.send(raw, planned.tpdu)
            except SwitchClientError:
                self._finish(planned.index, "missing", note="connection closed")
                continue
            nursery.start_soon(self._deadline, planned.index)

    async def _connection(self, planned: Planned, nursery: trio.Nursery) -> _Connection:
        connection = self._connections.get(planned.connection)
        if connection is not None:
            return connection
        target = self._target(planned)
        assert target is not None
        holder: list[SwitchClient] = []

        async def hold_open(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            async with open_switch_client(target[0], target[1], dialect=planned.dialect,
                                          framing=planned.framing, tpdu=planned.tpdu,
                                          timeout_s=self.timeout_s) as client:
                holder.append(client)
                task_status.started()
                await self._collect(client, planned.connection)

        await nursery.start(hold_open)
        connection = _Connection(holder[0], None)
        self._connections[planned.connection] = connection
        return connection

    async def _collect(self, client: SwitchClient, conn_key: tuple[str, int]) -> None:
        while not self._finished:
            try:
                response = await client.receive(timeout_s=_COLLECT_POLL_S)
            except ResponseTimeout:
                continue
            except ConnectionClosed:
                return
            connection = self._connections.get(conn_key)
            if connection is None:
                continue
            queue = connection.pending.get(response_key(response.fields))
            if not queue:
                continue
            index = queue.popleft()
            self._judge(index, response.fields, response.raw, connection)

    def _judge(self, index: int, fields: Mapping[str, str], raw: bytes,
               connection: _Connection) -> None:
        if self._done[index].is_set():
            return
        planned = self.plan[index]
        if planned.recorded is None:
            self._finish(index, "unrecorded")
            return
        diffs = compare_fields(planned.recorded, planned.recorded_masked, fields, self.ignore)
        sealed = self._sealed[index]
        if sealed is not None and sealed.mac and connection.device is not None:
            verdict = connection.device.verify_response_mac(raw, sealed.ksn, fields)
            if verdict is MacVerdict.BAD:
                diffs.append(FieldDiff(mac_field(fields), "valid MAC", "MAC BAD"))
        self._finish(index, "differing" if diffs else "matched", diffs=diffs)

    async def _deadline(self, index: int) -> None:
        with trio.move_on_after(self.timeout_s):
            await self._done[index].wait()
        self._finish(index, "missing", note="no answer in time")

    def _finish(self, index: int, status: str, *, note: str | None = None,
                diffs: list[FieldDiff] | None = None) -> None:
        if self._done[index].is_set():
            return
        outcome = self.outcomes[index]
        outcome.status = status
        outcome.note = note
        outcome.diffs = diffs or []
        self._done[index].set()

    # -- re-securing ------------------------------------------------------

    def _secure(self, planned: Planned, connection: _Connection) -> bytes:
        codec = codec_for(planned.dialect)
        fields = planned.fields
        has_pin = "52" in fields
        has_mac = any(name in fields for name in MAC_FIELDS)
        if self.keep_ksn or not (has_pin or has_mac):
            return codec.encode(fields)
        if self.hsm is None:
            raise ReplayError("re-sealing PIN blocks and MACs needs the key store")
        ksn = fields.get("62", "")
        if connection.device is None:
            connection.device = self._new_device(planned, ksn)
        pin: str | None = None
        if has_pin:
            pin = self._recorded_pin(fields, ksn)
        sealed = connection.device.seal_message(fields, pin, has_mac)
        self._sealed[planned.index] = sealed
        return sealed.raw

    def _recorded_pin(self, fields: Mapping[str, str], ksn: str) -> str:
        """The PIN inside a recorded PIN block (kept in memory only)."""
        assert self.hsm is not None
        pan = pan_of(fields)
        try:
            keys = self.hsm.dukpt_keys(ksn)
            return decrypt_pin_block(keys.pin, bytes.fromhex(fields["52"]), pan, FORMAT_0)
        except (SecurityError, ValueError):
            raise SkipRequest(SKIP_PIN) from None

    def _new_device(self, planned: Planned, ksn: str) -> TerminalDevice:
        assert self.hsm is not None
        prefix = ksn[:KSN_PREFIX_HEX_CHARS].upper()
        if len(prefix) != KSN_PREFIX_HEX_CHARS:
            raise SkipRequest("recorded KSN is malformed")
        if self._device_index is None:
            # A random device id: its counters are new to any switch, so the
            # replay is never refused as a KSN replay.
            base = int(prefix + "00000", 16)
            used = (base >> TDES_COUNTER_BITS) & (DEVICES_MAX - 1)
            room = DEVICES_MAX - used - len(self.plan) - 1
            self._device_index = 1 + secrets.randbelow(max(room, 1))
        index = self._device_index + self._devices_made
        self._devices_made += 1
        try:
            return TerminalDevice.from_key_store(
                self.hsm.key_store, ksn_prefix=prefix, device_index=index,
                dialect=planned.dialect, terminal_id=planned.fields.get("41", ""))
        except ValueError as exc:
            raise SkipRequest(f"no replay device: {exc}") from None


class SkipRequest(Exception):
    """This one request cannot be replayed (the reason is the message)."""


# -- the command ------------------------------------------------------------------


def _hsm_for(args: argparse.Namespace) -> SoftwareHsm:
    from iso_switch.bootstrap import build_hsm
    from iso_switch.config import load_config

    config = load_config(args.config, {"data_dir": args.data_dir})
    return build_hsm(config)


def load_plan(path: Path, hsm: SoftwareHsm | None) -> tuple[list[Planned], bool]:
    """The plan of a trace file and whether it holds masked fields. Checks
    that the key store's trace key is the one the trace was sealed under."""
    items = read_trace(path)
    headers = [item for item in items if isinstance(item, TraceHeader)]
    sealed = any(isinstance(i, TraceEntry) and i.sealed for i in items)
    masked = any(isinstance(i, TraceEntry) and i.masked for i in items)
    sealer: FieldSealer | None = None
    if sealed:
        if hsm is None:
            raise TraceError("the trace holds sealed fields: the trace key is needed")
        sealer, name, kcv = sealer_from_store(hsm.key_store)
        for header in headers:
            if header.key_kcv is not None and header.key_kcv != kcv:
                raise TraceError(
                    f"trace {header.trace_id} was sealed under key {header.key_name} "
                    f"(KCV {header.key_kcv}); this key store's trace key {name} has KCV {kcv}"
                )
    return plan_replay(items, sealer), masked


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iso-switch-replay",
        description="Replay a message trace recorded by 'iso-switch serve --trace' against a "
        "switch and compare every answer with the recorded one. Sealed fields are opened "
        "with the key store's trace key (same key store resolution as the switch); PIN "
        "blocks and MACs are sealed again under a fresh replay DUKPT device unless "
        "--keep-ksn. Exit 0 when everything matched, 1 otherwise.",
    )
    parser.add_argument("trace", type=Path, metavar="TRACE", help="the trace file (JSON Lines)")
    parser.add_argument("--target", action="append", required=True,
                        metavar="[LISTENER=]HOST:PORT",
                        help="where to send; repeat with LISTENER= to send each recorded "
                        "listener's connections to its own port (HOST:PORT alone: every "
                        "listener without its own target)")
    parser.add_argument("--pace", choices=PACES, default="original",
                        help="original: at the recorded offsets (default); max: as fast as "
                        "causality allows (a request still waits for answers that preceded "
                        "it in the recording)")
    parser.add_argument("--keep-ksn", action="store_true",
                        help="send the recorded KSNs, PIN blocks and MACs as they were (only "
                        "a switch that never saw them accepts them)")
    parser.add_argument("--ignore", metavar="FIELDS",
                        default=",".join(DEFAULT_IGNORED_FIELDS),
                        help="comma-separated fields not compared (default: "
                        f"{','.join(DEFAULT_IGNORED_FIELDS)}; bitmaps are never compared)")
    parser.add_argument("--timeout-s", type=float, default=DEFAULT_TIMEOUT_S,
                        help=f"wait this long for each answer (default {DEFAULT_TIMEOUT_S:g})")
    parser.add_argument("--device-index", type=int, default=None,
                        help="first replay DUKPT device index under the recorded KSN prefix "
                        "(default: random, so KSNs are new to any switch)")
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="switch configuration naming the key store and master key file")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="data directory the key store path is relative to")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        targets = dict(parse_target(text) for text in args.target)
        ignore = tuple(f.strip() for f in args.ignore.split(",") if f.strip())
        hsm = _hsm_for(args)
        plan, masked = load_plan(args.trace, hsm)
        if masked and not args.json:
            print("note: this is a masked trace: requests with masked fields are skipped",
                  file=sys.stderr)
        replayer = Replayer(plan, targets, hsm=hsm, pace=args.pace, keep_ksn=args.keep_ksn,
                            ignore=ignore, timeout_s=args.timeout_s,
                            device_index=args.device_index)
        report = trio.run(replayer.run)
    except (ReplayError, TraceError, SecurityError) as exc:
        print(f"iso-switch-replay: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a config error and the like: one line, no traceback
        print(f"iso-switch-replay: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_json()) if args.json else report.to_text())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
