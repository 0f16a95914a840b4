"""Seeding, cache reload across processes, KSN state rules, 0800 in a batch
and the sans-I/O import rule."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iso_switch.processor import ProcessorConfig, Request, open_store
from tests.helpers_ledger import (
    ACCOUNT_RICH,
    CASH,
    SETTLEMENT,
    Env,
    financial,
    ksn,
    make_env,
)


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return make_env(tmp_path)


def test_seed_is_section_6(env: Env) -> None:
    store = env.store
    balances = {a.number: a.ledger_balance_minor for a in store.list_accounts()}
    assert balances == {
        "EQUITY-156": -1_305_000, SETTLEMENT: 0, CASH: 0, ACCOUNT_RICH: 1_000_000,
        "6222020000000023": 5_000, "6222020000000031": 100_000,
        "6222020000000049": 100_000, "6222020000000056": 100_000,
    }
    cards = {c.pan_masked: (c.expiry, c.state) for c in store.list_cards()}
    assert cards == {
        "476173******0010": ("2812", "active"), "476173******0028": ("2812", "active"),
        "476173******0036": ("2812", "lost"), "476173******0044": ("2812", "stolen"),
        "476173******0051": ("2001", "active"),
    }
    terminals = store.load_terminals()
    assert [t.mac_required for t in terminals.values()] == [True, True, False]
    assert terminals["TERM0002"].allowed_codes == {"00", "20", "30", "31"}
    raw = store.conn.execute("SELECT * FROM cards").fetchall()
    assert "4761739001010010" not in repr(raw)


def test_another_process_change_is_seen_by_the_next_batch(env: Env, tmp_path: Path) -> None:
    admin = open_store(tmp_path, ProcessorConfig(synchronous="OFF"))
    with admin.write():
        admin.set_issuer_available("onus", False)
    assert env.send(financial(env))["39"] == "91"
    with admin.write():
        admin.set_issuer_available("onus", True)
    assert env.send(financial(env))["39"] == "00"


def test_ksn_state_only_moves_with_a_stored_decision(env: Env) -> None:
    def device_state() -> tuple[int, int] | None:
        return env.store.get_ksn_state("FFFF9876543210E0")

    fields = dict(financial(env), **{"62": ksn(5), "64": "0" * 16})
    assert env.send(dict(fields, **{"4": "ABC"}), "valid")["39"] == "30"
    assert device_state() is None
    assert env.send(fields, "invalid")["39"] == "63"
    assert device_state() is None
    assert env.send(fields, "valid")["39"] == "00"
    assert device_state() == (5, 0)
    repeat = dict(fields, t="0201", **{"62": ksn(9)})
    assert env.send(repeat, "valid")["39"] == "00"  # stored decision: state unchanged
    assert device_state() == (5, 0)
    assert env.send(dict(fields, **{"4": "000000000001", "62": ksn(7)}), "valid")["39"] == "94"
    assert device_state() == (5, 0)


def test_replay_state_is_recorded_only_for_an_authenticated_ksn(env: Env) -> None:
    # Interface section 4: a valid MAC, or a PIN block that decodes, on a
    # MAC-optional terminal. A made-up KSN with neither leaves no state.
    def device_state(device: int) -> tuple[int, int] | None:
        return env.store.get_ksn_state(f"FFFF987654{device:06X}")

    unauthenticated = dict(financial(env), **{"62": ksn(3, device=0x1210E0)})
    assert env.send(unauthenticated)["39"] == "00"
    assert device_state(0x1210E0) is None
    with_pin = financial(env, pin="1234")
    assert env.send(dict(with_pin, **{"62": ksn(4, device=0x2210E0)}))["39"] == "00"
    assert device_state(0x2210E0) == (4, 0)
    wrong_pin = financial(env, pin="9999")  # decodes, does not verify: still authentic
    assert env.send(dict(wrong_pin, **{"62": ksn(6, device=0x4210E0)}))["39"] == "55"
    assert device_state(0x4210E0) == (6, 0)
    macd = dict(financial(env), **{"62": ksn(8, device=0x5210E0), "64": "0" * 16})
    assert env.send(macd, "valid")["39"] == "00"
    assert device_state(0x5210E0) == (8, 0)
    undecodable = financial(env, pin="1234")
    env.processor.hsm.verify_pin = lambda *args: None  # type: ignore[method-assign]
    assert env.send(dict(undecodable, **{"62": ksn(9, device=0x6210E0)}))["39"] == "55"
    assert device_state(0x6210E0) is None


def test_0800_and_unknown_mti_in_a_batch(env: Env) -> None:
    now = env.clock.now
    outcomes = env.processor.process_batch([
        Request({"t": "0800", "7": "0301120000", "11": "000001", "70": "001"}, "absent", now),
        Request({"t": "0300", "11": "000002"}, "absent", now),
    ])
    assert outcomes[0].response == {"t": "0810", "7": "0301120000", "11": "000001",
                                    "70": "001", "39": "00"}
    assert not outcomes[0].mac_response
    assert outcomes[1].response["39"] == "30" and outcomes[1].response["t"] == "0310"


def test_sans_io_packages_never_import_trio() -> None:
    code = (
        "import sys\n"
        "import iso_switch.ledger, iso_switch.issuer, iso_switch.acquirer, "
        "iso_switch.routing, iso_switch.processor\n"
        "assert 'trio' not in sys.modules, 'trio imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


FIELD_NAMES = ["2", "3", "4", "7", "11", "12", "13", "14", "22", "32", "35", "41", "42", "49",
               "52", "62", "64", "90", "95", "102", "103"]


@pytest.fixture(scope="module")
def fuzz_env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    return make_env(tmp_path_factory.mktemp("fuzz"))


@given(
    mti=st.sampled_from(["0100", "0101", "0200", "0201", "0220", "0221", "0400", "0401",
                         "0420", "0421", "0800", "0300", "x"]),
    overrides=st.dictionaries(st.sampled_from(FIELD_NAMES),
                              st.text(alphabet="0123456789ABCDEF=D x", max_size=45)),
    drop=st.sets(st.sampled_from(FIELD_NAMES)),
    mac=st.sampled_from(["valid", "invalid", "absent"]),
)
def test_any_decoded_request_gets_an_answer_never_96(fuzz_env: Env, mti: str,
                                                     overrides: dict[str, str],
                                                     drop: set[str], mac: str) -> None:
    env = fuzz_env
    fields = financial(env, mti=mti if mti[:2] in ("01", "02") else "0200")
    fields["t"] = mti
    fields["90"] = "0200" + fields["11"] + fields["7"] + "0" * 22
    fields.update(overrides)
    for name in drop:
        fields.pop(name, None)
    out = env.processor.process(Request(fields, mac, env.clock.now))  # type: ignore[arg-type]
    assert out.response["39"] != "96"
    assert "t" in out.response
    assert env.store.check_invariants() == []
