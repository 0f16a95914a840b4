"""Crash test: a subprocess applies a stream of transactions and is killed
with SIGKILL at random points; after every kill the store must hold every
acknowledged transaction exactly once, nothing half-applied, and the
invariants must hold.

A restarted worker resends a window of requests before its last
acknowledgement (the terminals' retransmissions): each must get its stored
decision, with the same RRN, and move no money twice.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers_ledger import ACCOUNT_RICH, CARD_RICH, START, FakeHsm

BATCH = 20
ROUNDS = 12
RESEND_BATCHES = 3
OPENING_MINOR = 1_000_000
ROOT = Path(__file__).resolve().parent.parent


def _config():  # type: ignore[no-untyped-def]
    from iso_switch.issuer import RiskRules
    from iso_switch.processor import ProcessorConfig

    return ProcessorConfig(synchronous="FULL", limit_day_count=10**9, limit_day_minor=10**15,
                           risk=RiskRules(velocity_count=10**9))


def crash_request(seq: int) -> dict[str, str]:
    return {
        "t": "0200", "2": CARD_RICH, "3": "200000" if seq % 3 == 0 else "000000",
        "4": f"{1 + seq % 997:012d}", "7": "0301040000", "11": f"{seq:06d}", "12": "120000",
        "13": "0301", "22": "051", "41": "TERM0003", "42": "MERCHANT0000001", "49": "156",
    }


def worker(data_dir: str, start_seq: int) -> None:
    """Apply batches forever from ``start_seq``, printing each acknowledged
    batch after its commit."""
    from iso_switch.processor import Processor, Request, open_store, seed_demo

    config = _config()
    store = open_store(Path(data_dir), config)
    seed_demo(store, FakeHsm(), config, START)
    processor = Processor(store, FakeHsm(), config, clock=lambda: START)
    sys.stdout.write("ready\n")  # seeded: from here on a kill can only cut a batch
    sys.stdout.flush()
    seq = start_seq
    while True:
        requests = [Request(crash_request(s), "absent", START) for s in range(seq, seq + BATCH)]
        outcomes = processor.process_batch(requests)
        line = " ".join(f"{s}:{o.response['39']}:{o.response['37']}"
                        for s, o in zip(range(seq, seq + BATCH), outcomes, strict=True))
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        seq += BATCH


def _verify(data_dir: Path, acked: dict[int, tuple[str, str]]) -> None:
    from iso_switch.processor import open_store

    store = open_store(data_dir, _config())
    try:
        assert store.check_invariants() == []
        stored = {
            key: (rc, rrn, code, amount)
            for key, rc, rrn, code, amount in store.conn.execute(
                "SELECT key, rc, rrn, code, amount_minor FROM txns"
            )
        }
        for seq, (rc, rrn) in acked.items():
            found = stored.get(f"020|TERM0003|{seq:06d}|0301040000|")
            assert found is not None, f"acknowledged request {seq} is missing"
            assert found[:2] == (rc, rrn)
        postings = dict(store.conn.execute(
            "SELECT ref, count(*) FROM transfers GROUP BY ref"
        ).fetchall())
        net = 0
        for key, (rc, _rrn, code, amount) in stored.items():
            assert postings.get(key, 0) == (1 if rc == "00" else 0), key
            if rc == "00":
                net += amount if code.startswith("20") else -amount
        account = store.account_by_number(ACCOUNT_RICH)
        assert account is not None and account.ledger_balance_minor == OPENING_MINOR + net
    finally:
        store.close()


@pytest.mark.slow
def test_sigkill_at_random_points_loses_nothing_acknowledged(tmp_path: Path) -> None:
    rng = random.Random(8583)
    acked: dict[int, tuple[str, str]] = {}
    next_seq = 1
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for _ in range(ROUNDS):
        start = max(1, next_seq - RESEND_BATCHES * BATCH)
        code = f"from tests.test_crash_ledger import worker; worker({str(tmp_path)!r}, {start})"
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, cwd=ROOT, env=env)
        # The kill points are random in the batches' stream, not in the
        # child's start-up, which a loaded machine may stretch past them.
        assert child.stdout is not None
        assert child.stdout.readline() == b"ready\n"
        time.sleep(rng.uniform(0.4, 1.2))
        child.send_signal(signal.SIGKILL)
        output, _ = child.communicate()
        for line in output.decode().split("\n")[:-1]:  # the last piece may be cut short
            for item in line.split():
                seq_text, rc, rrn = item.split(":")
                seq = int(seq_text)
                if seq in acked:  # a retransmission: the stored decision, unchanged
                    assert acked[seq] == (rc, rrn)
                acked[seq] = (rc, rrn)
                next_seq = max(next_seq, seq + 1)
        _verify(tmp_path, acked)
    assert len(acked) > BATCH * ROUNDS  # the workers made progress between kills
