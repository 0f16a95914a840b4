"""Trace replay: a trace recorded on one switch, replayed against another,
compared answer by answer (``simulators.replay``, ``iso-switch-replay``).

Recording uses the psec-based test terminal of ``server_helpers``; replay
re-seals with ``simulators.client``'s devices, so a response MAC that
verifies proves both sides agree on the replay device's keys.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from iso_switch.bootstrap import build_hsm
from iso_switch.cli import main as iso_switch_main
from iso_switch.config import ListenerConfig
from iso_switch.trace import TraceEntry, TraceError, TraceHeader
from simulators.client import open_switch_client
from simulators.replay import (
    SKIP_MASKED,
    FieldDiff,
    Replayer,
    ReplayError,
    ReplayReport,
    compare_fields,
    load_plan,
    main,
    parse_target,
    plan_replay,
)
from tests.server_helpers import (
    BIN_LISTENER,
    CARD_RICH,
    HEX_LISTENER,
    Running,
    Terminal,
    connect,
    make_config,
    start_switch,
    switch_with_listener,
)

TRACE = "trace.jsonl"


async def _record(data_dir: Path, *, masked: bool = False, gap_s: float = 0.0) -> Path:
    """A deterministic sequence on two listeners: echo, purchase (PIN+MAC),
    balance inquiry (PIN+MAC), reversal of the purchase (MAC), balance
    again on TERM0001 (hex); echo then a refund on TERM0003 (binary)."""
    async with trio.open_nursery() as nursery:
        running = await start_switch(nursery, data_dir, trace__enabled=True,
                                     trace__path=TRACE, trace__masked=masked)
        async with connect(running) as client:
            terminal = Terminal("TERM0001")
            codec = client.codec
            assert (await client.call(terminal.seal(codec, terminal.network("301"))))["39"] == "00"
            await trio.sleep(gap_s)
            purchase = terminal.financial(amount=12345)
            assert (await client.call(terminal.seal(codec, purchase, pin="1234",
                                                    mac=True)))["39"] == "00"
            inquiry = terminal.seal(codec, terminal.financial(code="300000", amount=0),
                                    pin="1234", mac=True)
            assert (await client.call(inquiry))["39"] == "00"
            reversal = terminal.seal(codec, terminal.follow_up("0400", purchase), mac=True)
            assert (await client.call(reversal))["39"] == "00"
            inquiry = terminal.seal(codec, terminal.financial(code="300000", amount=0),
                                    pin="1234", mac=True)
            assert (await client.call(inquiry))["39"] == "00"
        async with connect(running, BIN_LISTENER) as client:
            plain = Terminal("TERM0003")
            assert (await client.call(plain.seal(client.codec, plain.network("301"))))["39"] == "00"
            refund = plain.seal(client.codec, plain.financial(code="200000", amount=500))
            assert (await client.call(refund))["39"] == "00"
        running.switch.shutdown()
    return data_dir / TRACE


def _targets(running: Running) -> dict[str | None, tuple[str, int]]:
    return {HEX_LISTENER: ("127.0.0.1", running.port(HEX_LISTENER)),
            BIN_LISTENER: ("127.0.0.1", running.port(BIN_LISTENER))}


async def _replay(trace: Path, data_dir: Path, **options: object) -> tuple[ReplayReport, Replayer]:
    hsm = build_hsm(make_config(data_dir))
    plan, _masked = load_plan(trace, hsm)
    async with trio.open_nursery() as nursery:
        running = await start_switch(nursery, data_dir)
        replayer = Replayer(plan, _targets(running), hsm=hsm, **options)  # type: ignore[arg-type]
        report = await replayer.run()
        running.switch.shutdown()
    return report, replayer


async def test_replay_against_a_fresh_switch_matches_every_answer(tmp_path):
    trace = await _record(tmp_path / "recorded")
    report, replayer = await _replay(trace, tmp_path / "fresh", pace="max", timeout_s=10)
    data = report.to_json()
    assert data["differences"] == []
    assert (data["requests"], data["matched"], data["missing"], data["skipped"]) == (7, 7, 0, 0)
    assert report.ok
    # Re-sealed under fresh KSNs (their response MACs verified under the
    # replay device's keys, else they would be differences).
    for planned, sealed in zip(replayer.plan, replayer._sealed, strict=True):
        if "62" in planned.fields:
            assert sealed is not None and sealed.ksn != planned.fields["62"]
    assert len({p.connection for p in replayer.plan}) == 2


async def test_keep_ksn_sends_the_recorded_bytes(tmp_path):
    trace = await _record(tmp_path / "recorded")
    report, replayer = await _replay(trace, tmp_path / "fresh", pace="max", keep_ksn=True)
    assert report.ok and report.count("matched") == 7
    assert all(sealed is None for sealed in replayer._sealed)


async def test_replay_reports_what_differs_when_a_card_is_stolen(tmp_path, capsys):
    trace = await _record(tmp_path / "recorded")
    fresh = tmp_path / "fresh"
    assert iso_switch_main(["ledger", "init", "--data-dir", str(fresh)]) == 0
    assert iso_switch_main(["cards", "state", "1", "stolen", "--data-dir", str(fresh)]) == 0
    capsys.readouterr()
    async with trio.open_nursery() as nursery:
        running = await start_switch(nursery, fresh)
        argv = [str(trace), "--target", f"127.0.0.1:{running.port(HEX_LISTENER)}",
                "--target", f"{BIN_LISTENER}=127.0.0.1:{running.port(BIN_LISTENER)}",
                "--pace", "max", "--json", "--data-dir", str(fresh)]
        code = await trio.to_thread.run_sync(main, argv)
        running.switch.shutdown()
    out = capsys.readouterr().out
    assert code == 1
    # In-process switch logs share stdout in tests: pick the report's line.
    data = json.loads(next(line for line in out.splitlines() if line.startswith('{"requests"')))
    assert data["differing"] == 4 and data["matched"] == 3 and not data["ok"]
    first = data["differences"][0]
    assert (first["mti"], first["stan"]) == ("0200", "000002")
    assert {"field": "39", "recorded": "00", "replayed": "43"} in first["fields"]
    assert CARD_RICH not in out


async def test_original_pacing_keeps_the_recorded_gaps(tmp_path):
    gap_s = 0.4
    trace = await _record(tmp_path / "recorded", gap_s=gap_s)
    started = trio.current_time()
    report, _ = await _replay(trace, tmp_path / "fresh", pace="original")
    assert report.ok
    assert trio.current_time() - started >= gap_s * 0.9


async def test_a_masked_trace_replays_only_requests_without_masked_fields(tmp_path):
    trace = await _record(tmp_path / "recorded", masked=True)
    report, _ = await _replay(trace, tmp_path / "fresh", pace="max")
    data = report.to_json()
    assert data["skipped_by_reason"] == {SKIP_MASKED: 5}
    assert data["matched"] == 2  # the two echoes
    assert not report.ok
    assert "masked trace" in report.to_text()


async def test_a_trace_sealed_under_another_key_is_refused(tmp_path):
    trace = await _record(tmp_path / "recorded")
    lines = trace.read_text().splitlines()
    header = json.loads(lines[0])
    header["key_kcv"] = "0000000000"
    trace.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    with pytest.raises(TraceError, match="KCV"):
        load_plan(trace, build_hsm(make_config(tmp_path)))


# -- sans-I/O --------------------------------------------------------------------


def _entry(seq: int, direction: str, at_s: float, conn: int = 1) -> TraceEntry:
    mti = "0800" if direction == "in" else "0810"
    return TraceEntry("t1", at_s, "", conn, seq, HEX_LISTENER, HEX_LISTENER,
                      direction, {"t": mti, "11": f"{seq:06d}"}, {}, ())  # type: ignore[arg-type]


def test_a_request_waits_for_the_answers_that_preceded_it_and_only_those():
    items = [
        _entry(1, "in", 0.0), _entry(2, "in", 0.1, conn=2),  # pipelined, two connections
        _entry(1, "out", 0.2), _entry(3, "in", 0.3),          # 3 after 1's answer only
        _entry(2, "out", 0.4), _entry(3, "out", 0.5), _entry(4, "in", 0.6),
    ]
    plan = plan_replay(items, None)
    assert [p.seq for p in plan] == [1, 2, 3, 4]
    assert [p.waits_for for p in plan] == [[], [], [0], [1, 2]]
    assert [p.connection for p in plan] == [("t1", 1), ("t1", 2), ("t1", 1), ("t1", 1)]


def test_comparison_ignores_what_it_is_told_and_never_shows_a_pan():
    recorded = {"t": "0210", "p": "X", "2": CARD_RICH, "37": "1", "39": "00", "54": "A"}
    replayed = {"t": "0210", "p": "Y", "2": "4761739001010028", "37": "2", "39": "51"}
    diffs = compare_fields(recorded, (), replayed, ("37",))
    assert diffs == [FieldDiff("2", "476173******0010", "476173******0028"),
                     FieldDiff("39", "00", "51"), FieldDiff("54", "A", None)]
    masked = {"t": "0210", "2": "476173******0010"}
    assert compare_fields(masked, ("2",), {"t": "0210", "2": CARD_RICH}, ()) == []


def test_targets_parse_with_and_without_a_listener():
    assert parse_target("127.0.0.1:8583") == (None, ("127.0.0.1", 8583))
    assert parse_target("ascii87-bin=::1:8584") == ("ascii87-bin", ("::1", 8584))
    for bad in ("8583", "host:", "host:99999", "host:x"):
        with pytest.raises(ReplayError):
            parse_target(bad)


async def test_a_switch_that_never_answers_gives_missing_answers(tmp_path):
    trace = await _record(tmp_path / "recorded")
    hsm = build_hsm(make_config(tmp_path))
    plan, _ = load_plan(trace, hsm)

    async def silent(stream: trio.SocketStream) -> None:
        while await stream.receive_some(65536):
            pass

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, silent, 0)
        port = listeners[0].socket.getsockname()[1]
        replayer = Replayer(plan, {None: ("127.0.0.1", port)}, hsm=hsm, pace="max",
                            timeout_s=0.2)
        report = await replayer.run()
        nursery.cancel_scope.cancel()
    # Every request waits for the answer before it, so all time out in turn.
    assert report.count("missing") == 7 and not report.ok
    assert "no answer" in report.to_text()


# -- other framings ------------------------------------------------------------

POS = "pos"
TPDU = bytes.fromhex("6000120000")
OTHER_TPDU = bytes.fromhex("6000340000")


POS_LISTENER = ListenerConfig(name=POS, port=0, dialect="ascii87-hex", framing="ascii4",
                              tpdu=True)


async def test_a_tpdu_listener_is_recorded_with_its_framing_and_replayed_alike(tmp_path):
    """The trace header says how each listener framed (ascii4 + TPDU here)
    and each frame's line its TPDU; replay speaks that framing and sends
    each request with its own recorded TPDU (two different ones on one
    connection here, as the fresh switch's own trace shows)."""
    recorded = tmp_path / "recorded"
    async with trio.open_nursery() as nursery:
        running = await start_switch(nursery, recorded, switch_with_listener(
            recorded, POS_LISTENER, trace__enabled=True, trace__path=TRACE))
        terminal = Terminal("TERM0001")
        async with open_switch_client("127.0.0.1", running.port(POS), framing="ascii4",
                                      tpdu=TPDU) as client:
            codec = client.codec
            fields, _raw = await client.call(terminal.seal(codec, terminal.network("301")).raw)
            assert fields["39"] == "00"
            # A keep-alive needs no TPDU, even here.
            await client.send_keep_alive()
            purchase = terminal.seal(codec, terminal.financial(amount=700), pin="1234", mac=True)
            await client.send(purchase.raw, OTHER_TPDU)
            assert (await client.receive()).fields["39"] == "00"
        running.switch.shutdown()
    trace = recorded / TRACE
    header = json.loads(trace.read_text().splitlines()[0])
    assert header["listeners"] == {POS: {"dialect": "ascii87-hex", "framing": "ascii4",
                                         "tpdu": True}}
    frames = [json.loads(line) for line in trace.read_text().splitlines()[1:]]
    assert [(f["dir"], f["tpdu"]) for f in frames] == [
        ("in", "6000120000"), ("out", "6000000012"),
        ("in", "6000340000"), ("out", "6000000034")]

    fresh = tmp_path / "fresh"
    hsm = build_hsm(make_config(fresh))
    plan, _masked = load_plan(trace, hsm)
    assert [(p.framing, p.tpdu) for p in plan] == [("ascii4", TPDU), ("ascii4", OTHER_TPDU)]
    async with trio.open_nursery() as nursery:
        running = await start_switch(nursery, fresh, switch_with_listener(
            fresh, POS_LISTENER, trace__enabled=True, trace__path=TRACE))
        report = await Replayer(plan, {POS: ("127.0.0.1", running.port(POS))}, hsm=hsm,
                                pace="max", timeout_s=10).run()
        running.switch.shutdown()
    assert report.ok and report.count("matched") == 2
    replayed = [json.loads(line) for line in (fresh / TRACE).read_text().splitlines()[1:]]
    assert [f["tpdu"] for f in replayed if f["dir"] == "in"] == ["6000120000", "6000340000"]


def test_a_trace_without_listener_framings_replays_as_binary2():
    """Traces written before the header named framings."""
    header = TraceHeader("t1", "", False, None, None)
    plan = plan_replay([header, _entry(1, "in", 0.0), _entry(1, "out", 0.1)], None)
    assert [(p.framing, p.tpdu, p.skip) for p in plan] == [("binary2", None, None)]
