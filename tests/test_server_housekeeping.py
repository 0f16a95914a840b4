"""An idle switch still does its housekeeping: a hold whose expiry has
passed is expired within ``ledger.housekeeping_interval_s`` without any
request arriving (the pump sends the ledger an empty batch), in the
ledger process and in the writer thread alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trio

from iso_switch.processor import open_store
from tests.helpers_ledger import ACCOUNT_RICH, SETTLEMENT
from tests.server_helpers import Terminal, connect, start_switch

# Generous: the interval is 0.1 s; this bounds a hung test, not the speed.
WAIT_LIMIT_S = 30.0


@pytest.mark.parametrize("worker", ["process", "thread"])
async def test_an_idle_switch_expires_a_due_hold(
    nursery: trio.Nursery, tmp_path: Path, worker: str
) -> None:
    running = await start_switch(nursery, tmp_path, ledger__worker=worker,
                                 ledger__housekeeping_interval_s=0.1)
    # An operator's connection (as the admin CLI) places a hold that is
    # already due; the switch is idle.
    store = open_store(tmp_path)
    try:
        card = store.account_by_number(ACCOUNT_RICH)
        merchant = store.account_by_number(SETTLEMENT)
        assert card is not None and merchant is not None
        now = datetime.now(UTC)
        with store.write():
            hold_id = store.hold(card.id, merchant.id, 2_500, card.currency,
                                 now - timedelta(minutes=1), "due", now - timedelta(days=7))
        with trio.fail_after(WAIT_LIMIT_S):
            while (hold := store.get_hold(hold_id)) is not None and hold.state == "pending":
                await trio.sleep(0.05)
        assert hold is not None and str(hold.state) == "expired"
        assert store.get_account(card.id).debits_pending == 0
        assert store.check_invariants(datetime.now(UTC)) == []
    finally:
        store.close()
    # Empty batches between requests change nothing for the requests.
    terminal = Terminal("TERM0001")
    async with connect(running) as client:
        answer = await client.call(terminal.seal(client.codec, terminal.financial(), pin="1234",
                                                 mac=True))
        assert answer["39"] == "00"
    running.switch.shutdown()
