"""Approval codes (DE38): drawn from a CSPRNG, unique per card per business
day. They were ``seq * 7919 + 104729``, so anyone who saw an RRN knew the
code."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from iso_switch.processor import core
from tests.helpers_ledger import CARD_POOR, financial, make_env


def _old_formula(rrn: str) -> str:
    return f"{(int(rrn[-8:]) * 7919 + 104_729) % 10**6:06d}"


def test_codes_are_not_derived_from_the_rrn(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    answers = [env.send(financial(env, amount=100)) for _ in range(20)]
    assert all(a["39"] == "00" for a in answers)
    matches = sum(a["38"] == _old_formula(a["37"]) for a in answers)
    assert matches == 0
    assert len({a["38"] for a in answers}) == 20


def test_a_card_never_gets_the_same_code_twice_in_a_business_day(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = make_env(tmp_path)
    draws = iter([123456, 123456, 123456, 654321, 123456, 123456])
    monkeypatch.setattr(core.secrets, "randbelow", lambda _n: next(draws))
    first = env.send(financial(env, amount=100))
    second = env.send(financial(env, amount=100))
    assert (first["38"], second["38"]) == ("123456", "654321")
    # Another card, or the same card on another business day, may reuse it.
    assert env.send(financial(env, amount=100, pan=CARD_POOR))["38"] == "123456"
    env.clock.advance(timedelta(days=1))
    assert env.send(financial(env, amount=100))["38"] == "123456"
