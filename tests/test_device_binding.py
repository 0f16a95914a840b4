"""Device-to-terminal binding per key set (interface section 4: the default
binds nothing): a bound key set's device may only send for its terminal."""

from __future__ import annotations

from pathlib import Path

import pytest

from iso_switch.acquirer.devices import (
    NO_BINDINGS,
    BindingFileError,
    DeviceBindings,
    load_bindings,
)
from iso_switch.config import ConfigError, load_config
from iso_switch.processor import ProcessorConfig
from iso_switch.security.ksn import parse_ksn
from iso_switch.server import device_bindings_for
from tests.helpers_ledger import ACCOUNT_RICH, Env, financial, ksn, make_env

DEMO_SET = "FFFF987654"


def _bindings_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bindings.csv"
    path.write_text(text, encoding="ascii")
    return path


def _env(tmp_path: Path, bindings: DeviceBindings) -> Env:
    return make_env(tmp_path, ProcessorConfig(synchronous="OFF", device_bindings=bindings))


def test_bindings_file_is_read_per_key_set(tmp_path: Path) -> None:
    path = _bindings_file(
        tmp_path, "# device,terminal\n3210e0, TERM0003\n\n4210E0,TERM0001 # lane 2\n")
    bindings = load_bindings([(DEMO_SET.lower(), path)])
    assert bindings.bound_key_sets == {DEMO_SET}
    assert bindings.allows(parse_ksn(ksn(7)), "TERM0003")
    assert not bindings.allows(parse_ksn(ksn(7)), "TERM0001")
    assert bindings.allows(parse_ksn(ksn(7, device=0x4210E0)), "TERM0001")
    assert not bindings.allows(parse_ksn(ksn(7, device=0x5210E0)), "TERM0003")
    other_set = parse_ksn("FFFF9876550000200001")
    assert bindings.allows(other_set, "ANYTHING")  # a key set not bound
    assert NO_BINDINGS.allows(parse_ksn(ksn(7)), "ANYTHING")


@pytest.mark.parametrize(("text", "problem"), [
    ("3210E0\n", ":1: expected"),
    ("3210E0,TERM0003\nXYZ,TERM0001\n", ":2: expected"),
    ("3210E1,TERM0003\n", "counter bits"),
    ("3210E0,TERM0003\n3210e0,TERM0001\n", "listed twice"),
    ("3210E0,TERMINAL-TOO-LONG\n", ":1: expected"),
])
def test_a_bad_bindings_file_is_refused_with_its_line(tmp_path: Path, text: str,
                                                      problem: str) -> None:
    path = _bindings_file(tmp_path, text)
    with pytest.raises(BindingFileError, match=problem):
        load_bindings([(DEMO_SET, path)])


def test_a_missing_file_and_a_doubled_key_set_are_refused(tmp_path: Path) -> None:
    with pytest.raises(BindingFileError, match="cannot be read"):
        load_bindings([(DEMO_SET, tmp_path / "absent.csv")])
    path = _bindings_file(tmp_path, "3210E0,TERM0003\n")
    with pytest.raises(BindingFileError, match="bound twice"):
        load_bindings([(DEMO_SET, path), (DEMO_SET.lower(), path)])


def test_a_bound_device_on_another_terminal_is_63_and_nothing_is_posted(tmp_path: Path) -> None:
    path = _bindings_file(tmp_path, "3210E0,TERM0001\n")
    env = _env(tmp_path, load_bindings([(DEMO_SET, path)]))
    before = env.balance(ACCOUNT_RICH)
    response = env.send(financial(env, pin="1234"))  # TERM0003, device 3210E0
    assert response["39"] == "63"
    assert env.balance(ACCOUNT_RICH) == before
    assert env.store.count_txns() == 0
    assert env.store.get_ksn_state(DEMO_SET + "3210E0") is None


def test_a_bound_device_on_its_terminal_and_unbound_sets_are_decided(tmp_path: Path) -> None:
    path = _bindings_file(tmp_path, "3210E0,TERM0003\n")
    env = _env(tmp_path, load_bindings([(DEMO_SET, path)]))
    assert env.send(financial(env, pin="1234"))["39"] == "00"
    unenrolled = dict(financial(env, pin="1234"), **{"62": ksn(40, device=0x7210E0)})
    assert env.send(unenrolled)["39"] == "63"
    assert env.store.count_txns() == 1


def test_the_demo_binds_nothing(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    for device in (0x3210E0, 0x4210E0):
        fields = dict(financial(env, pin="1234"), **{"62": ksn(3, device=device)})
        assert env.send(fields)["39"] == "00"


def test_bindings_come_from_the_configuration(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    _bindings_file(tmp_path / "data", "3210E0,TERM0001\n")
    config_file = tmp_path / "switch.toml"
    config_file.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        f'[[keys.device_binding]]\nkey_set_id = "{DEMO_SET}"\nfile = "bindings.csv"\n',
        encoding="utf-8")
    bindings = device_bindings_for(load_config(config_file))  # relative to data_dir
    assert not bindings.allows(parse_ksn(ksn(2)), "TERM0003")
    assert bindings.allows(parse_ksn(ksn(2)), "TERM0001")
    config_file.write_text('[[keys.device_binding]]\nkey_set_id = "FFFF98"\nfile = "b.csv"\n',
                           encoding="utf-8")
    with pytest.raises(ConfigError, match="key set identifier"):
        load_config(config_file)
