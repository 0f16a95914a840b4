"""The configuration of remote issuers (interface section 7): the keys and
their defaults, what is refused at load and at start (naming the key), the
round trip through ``config show``, and the example that points the switch
at the issuer simulator."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from iso_switch.bootstrap import DemoKeyRefused, build_hsm
from iso_switch.config import (
    Config,
    ConfigError,
    IssuerConfig,
    check_issuer_routes,
    dump_config,
    load_config,
    parse_config,
    parse_endpoint,
    reload_plan,
)
from iso_switch.routing import route_overlaps
from iso_switch.security.keystore import KeyStore, MasterKey
from iso_switch.server import build_switch
from tests.server_helpers import make_config

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "switch-bank-b.toml"
REQUIRED = {"id": "bank-b", "bins": ["541333"], "endpoints": ["127.0.0.1:9583"],
            "pin_key": "demo-zpk-bank-b", "mac_key": "demo-zak-bank-b"}


def issuers(*entries: dict[str, Any], **top: Any) -> Config:
    return parse_config({"issuers": list(entries), **top})


def test_an_entry_with_the_required_keys_gets_the_documented_defaults() -> None:
    (issuer,) = issuers(REQUIRED).issuers
    assert issuer == IssuerConfig(
        id="bank-b", bins=("541333",), endpoints=("127.0.0.1:9583",), dialect="ascii87-hex",
        framing="binary2", pin_key="demo-zpk-bank-b", mac_key="demo-zak-bank-b",
        timeout_s=4.0, echo_interval_s=30.0, max_outstanding=256, stand_in="decline",
        stand_in_max_minor=0, stand_in_day_count=3, stand_in_day_minor=0, saf_retry_s=10.0,
        saf_expiry_h=72)
    assert Config().institution_id == "00000099901" and Config().issuers == ()


def test_the_example_loads_and_points_at_the_simulator() -> None:
    config = load_config(EXAMPLE)
    (issuer,) = config.issuers
    assert config.demo and config.institution_id == "00000099901"
    assert (issuer.id, issuer.bins, issuer.endpoints) == ("bank-b", ("541333",),
                                                          ("127.0.0.1:9583",))
    assert (issuer.pin_key, issuer.mac_key) == ("demo-zpk-bank-b", "demo-zak-bank-b")
    assert parse_config(tomllib.loads(dump_config(config))) == config
    build_hsm(config, warn=False)  # its link keys are in the demo key store


def test_config_show_prints_issuers_that_load_back(tmp_path: Path) -> None:
    config = issuers(REQUIRED, {**REQUIRED, "id": "bank-c", "bins": ["4000", "4111"],
                                "endpoints": ["[::1]:9584", "c.example:1"], "mac_key": "",
                                "stand_in": "limits", "stand_in_max_minor": 5000},
                     institution_id="42")
    text = dump_config(config)
    assert 'bins = ["4000", "4111"]' in text and 'institution_id = "42"' in text
    assert parse_config(tomllib.loads(text)) == config


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_keys_without_a_default_are_required(missing: str) -> None:
    entry = {key: value for key, value in REQUIRED.items() if key != missing}
    with pytest.raises(ConfigError, match=rf"^issuers\[0\]\.{missing}: is required"):
        issuers(entry)


@pytest.mark.parametrize(("change", "key_path"), [
    ({"id": "bank b"}, "issuers[0].id"),
    ({"id": "due-from:x"}, "issuers[0].id"),
    ({"id": "onus"}, "issuers[0].id"),
    ({"id": "x" * 33}, "issuers[0].id"),
    ({"bins": []}, "issuers[0].bins"),
    ({"bins": "541333"}, "issuers[0].bins"),
    ({"bins": ["54x"]}, "issuers[0].bins"),
    ({"bins": ["541333541333"]}, "issuers[0].bins"),
    ({"bins": ["5413", "5413"]}, "issuers[0].bins"),
    ({"bins": [541333]}, "issuers[0].bins[0]"),
    ({"endpoints": []}, "issuers[0].endpoints"),
    ({"endpoints": ["127.0.0.1"]}, "issuers[0].endpoints"),
    ({"endpoints": ["127.0.0.1:0"]}, "issuers[0].endpoints"),
    ({"endpoints": ["127.0.0.1:65536"]}, "issuers[0].endpoints"),
    ({"endpoints": ["::1:9583"]}, "issuers[0].endpoints"),
    ({"endpoints": ["[nope]:9583"]}, "issuers[0].endpoints"),
    ({"endpoints": [":9583"]}, "issuers[0].endpoints"),
    ({"endpoints": ["a:1", "a:1"]}, "issuers[0].endpoints"),
    ({"endpoints": [f"h{n}:1" for n in range(17)]}, "issuers[0].endpoints"),
    ({"dialect": "ascii93"}, "issuers[0].dialect"),
    ({"framing": "binary4"}, "issuers[0].framing"),
    ({"pin_key": ""}, "issuers[0].pin_key"),
    ({"mac_key": "no spaces"}, "issuers[0].mac_key"),
    ({"timeout_s": 0}, "issuers[0].timeout_s"),
    ({"timeout_s": 5.0}, "issuers[0].timeout_s"),
    ({"echo_interval_s": 0}, "issuers[0].echo_interval_s"),
    ({"max_outstanding": 0}, "issuers[0].max_outstanding"),
    ({"stand_in": "approve"}, "issuers[0].stand_in"),
    ({"stand_in_max_minor": -1}, "issuers[0].stand_in_max_minor"),
    ({"stand_in_day_count": -1}, "issuers[0].stand_in_day_count"),
    ({"stand_in_day_minor": -1}, "issuers[0].stand_in_day_minor"),
    ({"saf_retry_s": 0}, "issuers[0].saf_retry_s"),
    ({"saf_expiry_h": 0}, "issuers[0].saf_expiry_h"),
    ({"tls": True}, "issuers[0].tls"),
])
def test_bad_entries_are_refused_naming_the_key(change: dict[str, Any], key_path: str) -> None:
    with pytest.raises(ConfigError) as info:
        issuers({**REQUIRED, **change})
    assert info.value.key_path == key_path


@pytest.mark.parametrize("value", ["", "123456789012", "12a", "١٢"])
def test_institution_id_is_one_to_eleven_digits(value: str) -> None:
    with pytest.raises(ConfigError, match=r"^institution_id: "):
        parse_config({"institution_id": value})
    assert parse_config({"institution_id": "1"}).institution_id == "1"


def test_endpoints_take_names_v4_and_bracketed_v6() -> None:
    assert parse_endpoint("bank-b.example:9583") == ("bank-b.example", 9583)
    assert parse_endpoint("10.0.0.1:1") == ("10.0.0.1", 1)
    assert parse_endpoint("[2001:db8::1]:65535") == ("2001:db8::1", 65535)


def test_the_timeout_must_be_below_the_decision_deadline() -> None:
    with pytest.raises(ConfigError, match=r"^issuers\[0\]\.timeout_s: must be below "
                                          r"timeouts\.decision_deadline_s \(3\), got 4"):
        issuers(REQUIRED, timeouts={"decision_deadline_s": 3})
    assert issuers({**REQUIRED, "timeout_s": 2.5}, timeouts={"decision_deadline_s": 3})


def test_ids_are_unique() -> None:
    with pytest.raises(ConfigError, match=r"^issuers\[1\]\.id: duplicate issuer id 'bank-b'"):
        issuers(REQUIRED, {**REQUIRED, "bins": ["4000"]})


@pytest.mark.parametrize("other", [["541333"], ["5413"], ["54133312"], ["4", "54"]])
def test_two_issuers_may_not_claim_one_pan(other: list[str]) -> None:
    with pytest.raises(ConfigError, match=r"^issuers\[1\]\.bins: .* of issuers\[0\]"):
        issuers(REQUIRED, {**REQUIRED, "id": "bank-c", "bins": other})


def test_one_issuer_may_list_nested_prefixes_and_others_disjoint_ones() -> None:
    config = issuers({**REQUIRED, "bins": ["5413", "541333"]},
                     {**REQUIRED, "id": "bank-c", "bins": ["5414", "4"]})
    assert [issuer.id for issuer in config.issuers] == ["bank-b", "bank-c"]


def test_route_overlaps_finds_both_directions() -> None:
    routed = {"476173": "onus", "5": "other"}
    assert sorted(route_overlaps(["4761", "47617311", "522", "6"], routed)) == [
        ("4761", "476173"), ("47617311", "476173"), ("522", "5")]


def test_issuer_bins_may_not_overlap_the_ledger_routes() -> None:
    config = issuers({**REQUIRED, "bins": ["541333", "4761"]})
    with pytest.raises(ConfigError) as info:
        check_issuer_routes(config, {"476173": "onus"})
    assert info.value.key_path == "issuers[0].bins"
    assert "'4761' overlaps '476173', routed to 'onus'" in str(info.value)
    check_issuer_routes(config, {"4762": "onus", "54134": "onus"})  # disjoint: fine
    with pytest.raises(ConfigError, match=r"^issuers\[0\]\.id: "):
        check_issuer_routes(config, {"9": "bank-b"})


def test_issuers_wait_for_a_restart_on_reload() -> None:
    running = Config()
    loaded = issuers(REQUIRED, institution_id="7")
    plan = reload_plan(running, loaded)
    assert plan.ignored == ("institution_id", "issuers") and plan.changed == ()
    assert plan.config == running


# -- at start: the key store and the ledger ---------------------------------------


def _real_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> KeyStore:
    master_hex = os.urandom(32).hex()
    monkeypatch.setenv("ISO_SWITCH_MASTER_KEY", master_hex)
    store = KeyStore(tmp_path / "keys", MasterKey.from_hex(master_hex, "test"), create=True)
    store.generate("zpk", "P0", "T", 16, "E")
    store.generate("zak", "M3", "T", 16, "C")
    store.generate("pan-hash", "M7", "H", 32, "C")
    return store


@pytest.mark.parametrize(("keys", "key_path", "problem"), [
    ({"pin_key": "nope"}, "issuers[0].pin_key", "no key 'nope' in the key store"),
    ({"pin_key": "zak"}, "issuers[0].pin_key", "key 'zak': key usage M3 not allowed"),
    ({"mac_key": "zpk"}, "issuers[0].mac_key", "key 'zpk': key usage P0 not allowed"),
    ({"mac_key": "nope"}, "issuers[0].mac_key", "no key 'nope'"),
])
def test_link_keys_must_be_in_the_key_store_for_their_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keys: dict[str, str], key_path: str,
    problem: str,
) -> None:
    _real_store(tmp_path, monkeypatch)
    entry = {**REQUIRED, "pin_key": "zpk", "mac_key": "zak"}
    base = {"demo": False, "data_dir": str(tmp_path)}
    assert build_hsm(parse_config({**base, "issuers": [entry]}), warn=False)
    assert build_hsm(parse_config({**base, "issuers": [entry | {"mac_key": ""}]}), warn=False)
    with pytest.raises(ConfigError) as info:
        build_hsm(parse_config({**base, "issuers": [entry | keys]}), warn=False)
    assert info.value.key_path == key_path and problem in str(info.value)


def test_a_reload_that_loses_a_running_link_key_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from iso_switch.server.reload import prepare_reload

    _real_store(tmp_path, monkeypatch)
    config = parse_config({"demo": False, "data_dir": str(tmp_path),
                           "issuers": [REQUIRED | {"pin_key": "zpk", "mac_key": "zak"}]})
    hsm = build_hsm(config, warn=False)
    assert prepare_reload(lambda: config, config, hsm).plan.config == config
    (tmp_path / "keys" / "zak.tr31").unlink()
    with pytest.raises(ConfigError, match=r"^issuers\[0\]\.mac_key: no key 'zak'"):
        prepare_reload(lambda: config, config, hsm)


def test_a_decrypt_only_zone_pin_key_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _real_store(tmp_path, monkeypatch).generate("zpk-in", "P0", "T", 16, "D")
    config = parse_config({"demo": False, "data_dir": str(tmp_path),
                           "issuers": [REQUIRED | {"pin_key": "zpk-in", "mac_key": ""}]})
    with pytest.raises(ConfigError, match=r"^issuers\[0\]\.pin_key: key 'zpk-in': mode"):
        build_hsm(config, warn=False)


def test_demo_link_keys_are_refused_outside_demo_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _real_store(tmp_path, monkeypatch)
    demo = KeyStore(ROOT / "keys", MasterKey.demo())
    store.add("demo-zpk-bank-b", demo.key_for("demo-zpk-bank-b", ("P0",), "E"), "P0", "T", "E")
    config = parse_config({"demo": False, "data_dir": str(tmp_path), "issuers": [REQUIRED]})
    with pytest.raises(DemoKeyRefused, match=r"demo-zpk-bank-b \(KCV D4BE7B\)"):
        build_hsm(config, warn=False)


def test_the_switch_starts_with_an_issuer_beside_the_on_us_routes(tmp_path: Path) -> None:
    switch = build_switch(make_config(tmp_path, issuers=[REQUIRED]), handle_signals=False)
    assert switch.config.issuers[0].id == "bank-b"


def test_serve_refuses_issuer_bins_the_ledger_routes(tmp_path: Path) -> None:
    config = tmp_path / "switch.toml"
    config.write_text(EXAMPLE.read_text("utf-8").replace('"541333"', '"541333", "47617"'),
                      encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "iso_switch", "serve", "--config", str(config),
         "--data-dir", str(tmp_path / "var")],
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1
    assert ("issuers[0].bins: '47617' overlaps '476173', routed to 'onus' in the ledger's "
            "route table") in done.stderr


# -- iso-switch issuer up|down for remote issuers -------------------------------------


def test_issuer_down_and_up_take_a_configured_remote_issuer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from iso_switch.cli import main
    from iso_switch.processor import open_store

    config = tmp_path / "switch.toml"
    config.write_text(EXAMPLE.read_text("utf-8").replace(
        "demo = true", f"demo = true\ndata_dir = {str(tmp_path / 'var')!r}"), encoding="utf-8")
    open_store(tmp_path / "var").close()
    given = ["--config", str(config)]
    assert main(["issuer", "down", "bank-b", "--data-dir", str(tmp_path / "var")]) == 1
    assert "needs --config" in capsys.readouterr().out
    assert main(["issuer", "list", *given]) == 0
    assert "bank-b   up    remote issuer        BINs 541333" in capsys.readouterr().out
    assert main(["issuer", "down", "bank-b", *given]) == 0
    assert main(["issuer", "down", "bank-c", *given]) == 1
    # Kept in the ledger: later commands (and restarts) see it without the file.
    store = open_store(tmp_path / "var")
    assert store.load_issuers()["bank-b"].available is False
    assert store.load_routes() == {}  # a state, not a route
    store.close()
    assert main(["issuer", "up", "bank-b", "--data-dir", str(tmp_path / "var")]) == 0
    assert main(["issuer", "list", *given]) == 0
    out = capsys.readouterr().out
    assert "issuer bank-b is down" in out and "issuer bank-b is up" in out
    assert out.count("bank-b   up") == 1
    bad = tmp_path / "bad.toml"
    bad.write_text("[[issuers]]\nid = 'x'\n", encoding="utf-8")
    assert main(["issuer", "down", "x", "--config", str(bad)]) == 1
    assert "issuers[0].bins: is required" in capsys.readouterr().out


def test_one_longest_prefix_lookup_over_both_route_sources() -> None:
    from iso_switch.codes import ResponseCode
    from iso_switch.routing import BinTable, check_route

    config = issuers({**REQUIRED, "bins": ["5413", "541333"]},
                     {**REQUIRED, "id": "bank-c", "bins": ["4000"]})
    assert config.remote_routes == {"5413": "bank-b", "541333": "bank-b", "4000": "bank-c"}
    table = BinTable.over({"476173": "onus"}, config.remote_routes)
    assert table.issuer_for("4761739001010010") == "onus"
    assert table.issuer_for("5413330000000019") == "bank-b"
    assert table.issuer_for("4000001234567899") == "bank-c"
    assert table.issuer_for("6011000000000004") is None
    # Not served in this process until forwarding is wired.
    assert check_route("bank-b", True) == ResponseCode.ISSUER_INOPERATIVE
    with pytest.raises(ValueError, match="4000"):
        BinTable.over({"4000": "onus"}, config.remote_routes)
