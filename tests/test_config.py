"""Configuration: embedded defaults, strict loading, TOML round trip, CLI."""

from __future__ import annotations

import argparse
import dataclasses
import tomllib
import typing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iso_switch.cli import config_cmd
from iso_switch.config import (
    Config,
    ConfigError,
    LimitsConfig,
    ListenerConfig,
    RiskConfig,
    TimeoutsConfig,
    dump_config,
    load_config,
    parse_config,
    reload_plan,
)
from iso_switch.protocol import DEFAULT_MAX_FRAME_BYTES, MAX_IN_FLIGHT_PER_CONNECTION


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "switch.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_embedded_defaults_match_the_interface() -> None:
    config = load_config()
    assert config == Config()
    hex_listener, bin_listener = config.listeners
    assert (hex_listener.host, hex_listener.port, hex_listener.dialect) == (
        "127.0.0.1",
        8583,
        "ascii87-hex",
    )
    assert (bin_listener.host, bin_listener.port, bin_listener.dialect) == (
        "127.0.0.1",
        8584,
        "ascii87-bin",
    )
    for listener in config.listeners:
        assert listener.framing == "binary2"
        assert listener.tpdu is False
    assert config.limits.max_frame_bytes == DEFAULT_MAX_FRAME_BYTES == 8192
    assert config.limits.max_in_flight_per_connection == MAX_IN_FLIGHT_PER_CONNECTION
    assert config.timeouts.decision_deadline_s < 30
    assert config.ledger.synchronous == "FULL"
    assert config.ledger.timezone == "Asia/Shanghai"
    assert config.ledger.hold_expiry_days == 7
    assert config.ledger.review_threshold_minor == 200_000
    assert config.keys.master_key_env == "ISO_SWITCH_MASTER_KEY"
    assert config.logging.format == "json"
    assert config.trace.enabled is False
    assert config.data_dir == "./var"


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().data_dir = "/elsewhere"  # type: ignore[misc]


def test_file_changes_only_the_keys_it_names(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        data_dir = "/srv/switch"
        [limits]
        max_frame_bytes = 4096
        [timeouts]
        idle_timeout_s = 60      # an integer is fine for seconds
        [logging]
        level = "debug"
        """,
    )
    config = load_config(path)
    assert config.data_dir == "/srv/switch"
    assert config.limits == LimitsConfig(max_frame_bytes=4096)
    assert config.timeouts == TimeoutsConfig(idle_timeout_s=60.0)
    assert isinstance(config.timeouts.idle_timeout_s, float)
    assert config.logging.level == "debug"
    assert config.listeners == Config().listeners


def test_listeners_in_the_file_replace_the_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [[listeners]]
        name = "bcd-tpdu"
        port = 9000
        dialect = "bcd87"
        framing = "bcd2"
        tpdu = true
        """,
    )
    (listener,) = load_config(path).listeners
    assert listener == ListenerConfig(
        name="bcd-tpdu", port=9000, dialect="bcd87", framing="bcd2", tpdu=True
    )
    assert listener.host == "127.0.0.1"


def test_overrides_win_over_the_file_and_none_is_skipped(tmp_path: Path) -> None:
    path = write(tmp_path, 'data_dir = "/from/file"\n[logging]\nlevel = "debug"\n')
    config = load_config(
        path, {"data_dir": "/from/cli", "logging.level": None, "limits.max_batch": 16}
    )
    assert config.data_dir == "/from/cli"
    assert config.logging.level == "debug"
    assert config.limits.max_batch == 16


@pytest.mark.parametrize(
    ("text", "key_path"),
    [
        ("max_frame_bytes = 1", "max_frame_bytes"),
        ("[limits]\nmax_frame_byte = 1", "limits.max_frame_byte"),
        ("[limits]\nmax_frame_bytes = 'big'", "limits.max_frame_bytes"),
        ("[limits]\nmax_frame_bytes = 10", "limits.max_frame_bytes"),
        ("[limits]\nmax_frame_bytes = 70000", "limits.max_frame_bytes"),
        ("[limits]\nmax_connections = true", "limits.max_connections"),
        ("[limits]\nmax_batch = 1.5", "limits.max_batch"),
        ("[timeouts]\nidle_timeout_s = 0", "timeouts.idle_timeout_s"),
        ("[timeouts]\nframe_read_timeout_s = nan", "timeouts.frame_read_timeout_s"),
        ("[timeouts]\ndecision_deadline_s = -1", "timeouts.decision_deadline_s"),
        ("[ledger]\nsynchronous = 'OFF'", "ledger.synchronous"),
        ("[ledger]\ntimezone = 'Mars/Olympus'", "ledger.timezone"),
        ("[ledger]\nhold_expiry_days = 0", "ledger.hold_expiry_days"),
        ("[ledger]\nreview_threshold_minor = -5", "ledger.review_threshold_minor"),
        ("[keys]\nmaster_key_env = 'NOT VALID'", "keys.master_key_env"),
        ("[risk]\nvelocity_count = 0", "risk.velocity_count"),
        ("[risk]\nvelocity_count = 65", "risk.velocity_count"),
        ("[risk]\nvelocity_window_s = 0", "risk.velocity_window_s"),
        ("[risk]\nvelocity_action = 'block'", "risk.velocity_action"),
        ("[risk]\namount_factor = 0", "risk.amount_factor"),
        ("[risk]\nblacklist_action = 'ignore'", "risk.blacklist_action"),
        ("[logging]\nformat = 'xml'", "logging.format"),
        ("[logging]\nlevel = 'verbose'", "logging.level"),
        ("[trace]\nenabled = 'yes'", "trace.enabled"),
        ("limits = 5", "limits"),
        ("listeners = 5", "listeners"),
        ("[[listeners]]\nport = 1", "listeners[0].name"),
        ("[[listeners]]\nname = 'a'", "listeners[0].port"),
        ("[[listeners]]\nname = 'a'\nport = 70000", "listeners[0].port"),
        ("[[listeners]]\nname = 'a'\nport = 1\nframing = 'bin2'", "listeners[0].framing"),
        ("[[listeners]]\nname = 'a'\nport = 1\ncolour = 'red'", "listeners[0].colour"),
        ("[[listeners]]\nname = 'a b'\nport = 1", "listeners[0].name"),
        ("[[listeners]]\nname = 'a'\nport = 1\n[[listeners]]\nname = 'a'\nport = 2",
         "listeners[1].name"),
        ("[[listeners]]\nname = 'a'\nport = 1\n[[listeners]]\nname = 'b'\nport = 1",
         "listeners[1].port"),
        ("listeners = []", "listeners"),
        ("[limits]\nmax_frame_bytes = 10000\n[[listeners]]\nname = 'a'\nport = 1\n"
         "framing = 'ascii4'", "limits.max_frame_bytes"),
    ],
)  # fmt: skip
def test_bad_files_are_refused_naming_the_key(tmp_path: Path, text: str, key_path: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert info.value.key_path == key_path
    assert str(info.value).startswith(key_path + ":")


def test_two_listeners_on_port_zero_are_allowed() -> None:
    raw = {"listeners": [{"name": "a", "port": 0}, {"name": "b", "port": 0}]}
    assert [listener.port for listener in parse_config(raw).listeners] == [0, 0]


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[limits\n"))
    (tmp_path / "latin1.toml").write_bytes(b'data_dir = "\xe9"')
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(tmp_path / "latin1.toml")


def test_override_through_a_scalar_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, {"data_dir.sub": "x"})
    assert info.value.key_path == "data_dir"


def test_long_bad_values_are_shortened_in_messages(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, f"[logging]\nlevel = '{'x' * 500}'"))
    assert len(str(info.value)) < 200


def test_relative_paths_resolve_against_data_dir() -> None:
    config = load_config(None, {"data_dir": "/srv/switch"})
    assert config.resolve_path(config.keys.dir) == Path("/srv/switch/keys")
    assert config.resolve_path("/etc/master.key") == Path("/etc/master.key")
    assert config.data_path == Path("/srv/switch")


def test_dump_then_load_gives_the_same_config(tmp_path: Path) -> None:
    config = Config()
    assert load_config(write(tmp_path, dump_config(config))) == config


text_values = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30)


@given(
    data_dir=text_values,
    key_file=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30),
    trace_path=text_values,
    port=st.integers(1, 65535),
    tpdu=st.booleans(),
    framing=st.sampled_from(["binary2", "bcd2", "ascii4"]),
    max_frame_bytes=st.integers(64, 9999),
    idle_timeout_s=st.floats(0.001, 86_400.0, allow_nan=False),
    threshold=st.integers(0, 10**15),
)
def test_round_trip_of_any_valid_config(
    data_dir: str,
    key_file: str,
    trace_path: str,
    port: int,
    tpdu: bool,
    framing: str,
    max_frame_bytes: int,
    idle_timeout_s: float,
    threshold: int,
) -> None:
    raw: dict[str, Any] = {
        "data_dir": data_dir,
        "listeners": [
            {"name": "l1", "port": port, "framing": framing, "tpdu": tpdu, "host": "0.0.0.0"},
        ],
        "limits": {"max_frame_bytes": max_frame_bytes},
        "timeouts": {"idle_timeout_s": idle_timeout_s},
        "ledger": {"review_threshold_minor": threshold, "timezone": "UTC"},
        "keys": {"master_key_file": key_file, "device_binding": [
            {"key_set_id": "FFFF987654", "file": trace_path},
            {"key_set_id": "ffff987655", "file": data_dir},
        ]},
        "trace": {"enabled": True, "path": trace_path, "masked": True},
    }
    config = parse_config(raw)
    text = dump_config(config)
    assert parse_config(tomllib.loads(text)) == config


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="iso-switch")
    config_cmd.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


def test_cli_config_show_prints_effective_toml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "[limits]\nmax_batch = 32\n")
    assert run_cli(["config", "show", "--config", str(path), "--data-dir", "/data"]) == 0
    shown = tomllib.loads(capsys.readouterr().out)
    assert shown["limits"]["max_batch"] == 32
    assert shown["data_dir"] == "/data"
    assert parse_config(shown) == load_config(path, {"data_dir": "/data"})


def test_cli_config_show_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["config", "show"]) == 0
    assert parse_config(tomllib.loads(capsys.readouterr().out)) == Config()


def test_cli_config_show_names_the_bad_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "[limits]\nmax_batch = 0\n")
    assert run_cli(["config", "show", "--config", str(path)]) == 1
    captured = capsys.readouterr()
    assert "limits.max_batch" in captured.err
    assert captured.out == ""


def test_cli_help_is_helpful(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        run_cli(["config", "show", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--config" in out
    assert "--data-dir" in out
    assert "TOML" in out


def test_readme_documents_every_key() -> None:
    readme = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text(
        encoding="utf-8")
    section = readme[readme.index("## Configuration") :]
    section = section[: section.index("\n## ", 1)]
    config = Config()
    for spec in dataclasses.fields(config):
        value = getattr(config, spec.name)
        if dataclasses.is_dataclass(value):
            names = [f"{spec.name}.{inner.name}" for inner in dataclasses.fields(value)]
        elif isinstance(value, tuple):
            # The item type, not an item: an array may be empty by default.
            (item_kind, _ellipsis) = typing.get_args(typing.get_type_hints(Config)[spec.name])
            names = [f"{spec.name}.{inner.name}" for inner in dataclasses.fields(item_kind)]
        else:
            names = [spec.name]
        for name in names:
            assert f"| `{name}` |" in section, name


def test_risk_rules_are_configuration_shown_by_config_show(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "[risk]\nvelocity_action = 'decline'\nvelocity_count = 64\n")
    assert run_cli(["config", "show", "--config", str(path)]) == 0
    shown = tomllib.loads(capsys.readouterr().out)["risk"]
    assert shown["velocity_action"] == "decline" and shown["velocity_count"] == 64
    assert shown["amount_action"] == "alert" and shown["blacklist_action"] == "decline"


def test_the_default_risk_rules_are_the_demo_rules() -> None:
    from iso_switch.processor import ProcessorConfig, config_from

    assert config_from(Config(), pan_hash_key=b"k" * 32).risk == ProcessorConfig().risk
    assert Config().risk == RiskConfig()


def test_a_reload_keeps_the_settings_that_need_a_restart() -> None:
    running = Config()
    loaded = parse_config({
        "demo": False, "data_dir": "/elsewhere",
        "listeners": [{"name": "other", "port": 1}],
        "limits": {"max_batch": 7},
        "ledger": {"worker": "thread", "review_threshold_minor": 5},
        "risk": {"velocity_action": "decline"},
        "timeouts": {"idle_timeout_s": 5},
    })
    plan = reload_plan(running, loaded)
    assert plan.changed == ("timeouts.idle_timeout_s", "ledger.review_threshold_minor",
                            "risk.velocity_action")
    assert plan.ignored == ("demo", "data_dir", "listeners", "limits.max_batch",
                            "ledger.worker")
    config = plan.config
    assert (config.demo, config.data_dir, config.listeners, config.limits, config.ledger.worker
            ) == (running.demo, running.data_dir, running.listeners, running.limits,
                  running.ledger.worker)
    assert config.ledger.review_threshold_minor == 5
    assert config.risk.velocity_action == "decline" and config.timeouts.idle_timeout_s == 5
    assert reload_plan(running, running) == type(plan)(running, (), ())
