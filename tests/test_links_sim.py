"""The seeded simulation of the issuer link (see ``tests/links_sim.py``).

Each seed is its own test (its id names the seed), so a failure names the
seed that reproduces it. For long runs::

    LINK_SIM_SEEDS=2000 ./run pytest tests/test_links_sim.py -q
    LINK_SIM_SEED=1234 ./run pytest tests/test_links_sim.py -q -n 0   # one seed again
"""

from __future__ import annotations

import os

import pytest

from .links_sim import LinkSim

_SEEDS = ([int(os.environ["LINK_SIM_SEED"])] if os.environ.get("LINK_SIM_SEED")
          else range(int(os.environ.get("LINK_SIM_SEEDS", "40"))))


@pytest.mark.parametrize("seed", _SEEDS, ids=lambda seed: f"seed={seed}")
def test_every_invariant_holds_after_every_step(seed: int) -> None:
    sim = LinkSim(seed)
    try:
        tally = sim.run()
    except AssertionError as exc:
        raise AssertionError(
            f"link simulation seed {seed} at t={sim.now:.3f}s: {exc}; reproduce with "
            f"LINK_SIM_SEED={seed} ./run pytest tests/test_links_sim.py -n 0") from exc
    assert tally.submitted == tally.answered + sum(tally.stand_in.values())


def test_the_simulation_reaches_the_interesting_cases() -> None:
    """Over a few seeds the world produces answers, every kind of ending and
    late answers; a world too kind would prove little."""
    reasons: set[str] = set()
    unmatched: set[str] = set()
    answered = 0
    for seed in range(20):
        tally = LinkSim(seed).run()
        reasons |= set(tally.stand_in)
        unmatched |= set(tally.unmatched)
        answered += tally.answered
    assert answered > 500
    assert {"timed-out", "connection-closed", "no-signed-on-connection", "max-outstanding",
            "connections-full", "issuer-marked-down", "shutting-down"} <= reasons
    assert {"late", "no-match", "no-response-code"} <= unmatched


def test_a_seed_replays_the_same_run() -> None:
    assert LinkSim(7).run() == LinkSim(7).run()
