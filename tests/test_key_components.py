"""Key import by components: two or three clear components, each checked
against its KCV before it is combined (XOR), split knowledge enforced
(no component alike another, none that cancel out), the combined key's KCV
printed and in the audit log, and no component anywhere afterwards."""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path

import pytest

from iso_switch.cli import keys_cmd
from iso_switch.ledger.audit import os_user
from iso_switch.processor import open_store
from iso_switch.security import MASTER_KEY_ENV, KeyStore, MasterKey
from iso_switch.security.components import ComponentError, combine_components, odd_parity
from iso_switch.security.kcv import kcv
from tests.test_security_keystore import run_cli


def xor(*parts: bytes) -> bytes:
    value = 0
    for part in parts:
        value ^= int.from_bytes(part, "big")
    return value.to_bytes(len(parts[0]), "big")


def component(length: int = 16, algorithm: str = "T") -> bytes:
    raw = secrets.token_bytes(length)
    return odd_parity(raw) if algorithm == "T" else raw


def forms(secret: bytes) -> list[str]:
    return [secret.hex(), secret.hex().upper()]


# --- combining ---------------------------------------------------------------------


@pytest.mark.parametrize("count", [2, 3])
@pytest.mark.parametrize(("algorithm", "length"), [("T", 16), ("T", 24), ("A", 16), ("A", 32)])
def test_components_xor_into_the_key(count: int, algorithm: str, length: int) -> None:
    parts = [component(length, algorithm) for _ in range(count)]
    key = combine_components(parts, [kcv(p, algorithm) for p in parts], algorithm)
    if algorithm == "T":
        assert key == odd_parity(xor(*parts))
        assert all(b.bit_count() % 2 == 1 for b in key)  # odd parity, as X9.24 wants
    else:
        assert key == xor(*parts)
    assert kcv(key, algorithm) == kcv(xor(*parts), algorithm)  # parity leaves the KCV


def test_a_wrong_kcv_names_its_component_and_never_its_value() -> None:
    parts = [component() for _ in range(3)]
    kcvs = [kcv(p, "T") for p in parts]
    for wrong in range(3):
        bad = list(kcvs)
        bad[wrong] = kcv(component(), "T")
        with pytest.raises(ComponentError, match=f"component {wrong + 1} does not match") as err:
            combine_components(parts, bad, "T")
        for part in parts:
            assert not any(form in str(err.value) for form in forms(part))
    assert combine_components(parts, [k.lower() for k in kcvs], "T")  # KCVs in either case


def test_components_that_are_not_split_knowledge_are_refused() -> None:
    one, two = component(), component()

    def combine(*parts: bytes) -> bytes:
        return combine_components(list(parts), [kcv(p, "T") for p in parts], "T")

    with pytest.raises(ComponentError, match="components 1 and 2 are alike"):
        combine(one, one)
    # parity bits are not key bits: a copy with other parity is the same component
    with pytest.raises(ComponentError, match="alike"):
        combine(one, bytes(b ^ 1 for b in one))
    with pytest.raises(ComponentError, match="components 1 and 3 are alike"):
        combine(one, two, one)  # the key would be component 2
    with pytest.raises(ComponentError, match="cancel out"):
        combine(one, two, xor(one, two))  # XORs to zero
    with pytest.raises(ComponentError, match="no key bits"):
        combine(one, bytes(16))
    single_des = odd_parity(secrets.token_bytes(8)) * 2
    with pytest.raises(ComponentError, match="single DES"):
        combine(one, xor(one, single_des))
    with pytest.raises(ComponentError, match="2 or 3"):
        combine(one)
    with pytest.raises(ComponentError, match="component 2 has 8 bytes"):
        combine(one, one[:8])
    with pytest.raises(ComponentError, match="TDES"):
        combine_components([one, two], [kcv(one, "H"), kcv(two, "H")], "H")


# --- the CLI -----------------------------------------------------------------------


@pytest.fixture
def ceremony(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, MasterKey]:
    """A key store and a ledger (for the audit log) under ``tmp_path``."""
    master_hex = secrets.token_hex(32)
    monkeypatch.setenv(MASTER_KEY_ENV, master_hex)
    master = MasterKey.from_hex(master_hex, "test")
    monkeypatch.delenv(keys_cmd.DATA_DIR_ENV, raising=False)
    data_dir = tmp_path / "var"
    open_store(data_dir).close()
    return data_dir / "keys", data_dir, master


def audit(data_dir: Path) -> list[dict[str, object]]:
    store = open_store(data_dir)
    try:
        return [{"actor": e.actor, "action": e.action, "target": e.target,
                 "before": e.before, "after": e.after} for e in store.list_audit()]
    finally:
        store.close()


def everything_written(root: Path) -> str:
    return "\n".join(p.read_bytes().hex() + p.read_bytes().decode("latin-1")
                     for p in root.rglob("*") if p.is_file())


def test_two_components_from_the_environment(
        ceremony: tuple[Path, Path, MasterKey], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    keys_dir, data_dir, master = ceremony
    parts = [component(), component()]
    for number, part in enumerate(parts, 1):
        monkeypatch.setenv(f"COMPONENT_{number}", " ".join(
            part.hex().upper()[i:i + 4] for i in range(0, 32, 4)))  # grouped as on a form
    argv = ["keys", "import", "zpk-bank-c", "--components", "2", "--usage", "P0",
            "--component-env", "COMPONENT_1", "--component-env", "COMPONENT_2",
            "--component-kcv", kcv(parts[0], "T"), "--component-kcv", kcv(parts[1], "T"),
            "--keys-dir", str(keys_dir), "--data-dir", str(data_dir)]
    with caplog.at_level(logging.DEBUG):
        assert run_cli(argv) == 0
    combined_kcv = kcv(xor(*parts), "T")
    out = capsys.readouterr()
    assert f"combined key's KCV is {combined_kcv}" in out.out
    store = KeyStore(keys_dir, master)
    assert store.key_for("zpk-bank-c", ("P0",), "E") == odd_parity(xor(*parts))
    assert store.info("zpk-bank-c").kcv == combined_kcv
    [entry] = audit(data_dir)
    assert (entry["actor"], entry["action"], entry["target"]) == (
        os_user(), "key.import", "zpk-bank-c")
    after = entry["after"]
    assert isinstance(after, dict)
    assert after["kcv"] == combined_kcv and after["source"] == "2 components"
    assert after["component_kcvs"] == [kcv(p, "T") for p in parts]
    seen = "\n".join([out.out, out.err, json.dumps(entry), caplog.text,
                      everything_written(data_dir)])
    for secret in [*parts, odd_parity(xor(*parts)), xor(*parts)]:
        for form in forms(secret):
            assert form not in seen, "a component or the key reached output, log or disk"


def test_three_components_from_files_with_prompted_kcvs(
        ceremony: tuple[Path, Path, MasterKey], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    keys_dir, data_dir, master = ceremony
    parts = [component(16, "A"), component(16, "A"), component(16, "A")]
    files = []
    for number, part in enumerate(parts, 1):
        path = tmp_path / f"component-{number}.hex"
        path.write_text(part.hex() + "\n")
        path.chmod(0o600)
        files += ["--component-file", str(path)]
    answers = iter(kcv(p, "A") for p in parts)
    monkeypatch.setattr("builtins.input", lambda prompt: next(answers))
    assert run_cli(["keys", "import", "mac-aes-c", "--components", "3", "--usage", "M6",
                    "--algorithm", "A", *files, "--keys-dir", str(keys_dir)]) == 0
    assert KeyStore(keys_dir, master).key_for("mac-aes-c", ("M6",), "G") == xor(*parts)
    out = capsys.readouterr()
    assert "not recorded" not in out.err  # the ledger beside the key store was found
    assert [e["action"] for e in audit(data_dir)] == ["key.import"]
    (tmp_path / "component-2.hex").chmod(0o644)
    answers = iter(kcv(p, "A") for p in parts)
    assert run_cli(["keys", "import", "other", "--components", "3", "--usage", "M6",
                    "--algorithm", "A", *files, "--keys-dir", str(keys_dir)]) == 1
    assert "component 2: its file is readable by others" in capsys.readouterr().err


def test_prompted_components_stop_at_the_first_wrong_kcv(
        ceremony: tuple[Path, Path, MasterKey], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    keys_dir, data_dir, _ = ceremony
    parts = [component(), component(), component()]
    entered: list[str] = []
    secrets_in = iter(p.hex() for p in parts)
    kcvs_in = iter([kcv(parts[0], "T"), kcv(parts[0], "T"), kcv(parts[2], "T")])

    def read_secret(prompt: str) -> str:
        entered.append(prompt)
        return next(secrets_in)

    monkeypatch.setattr(keys_cmd, "_read_secret", read_secret)
    monkeypatch.setattr("builtins.input", lambda prompt: next(kcvs_in))
    argv = ["keys", "import", "bdk-c", "--components", "3", "--usage", "B0",
            "--key-set-id", "ABCDEF0001", "--keys-dir", str(keys_dir)]
    assert run_cli(argv) == 1
    err = capsys.readouterr().err
    assert "component 2 does not match its KCV" in err and "nothing was changed" in err
    assert len(entered) == 2  # component 3 was never asked for
    assert not (keys_dir / "bdk-c.tr31").exists()
    assert audit(data_dir) == []
    for part in parts:
        assert not any(form in err for form in forms(part))


def test_identical_components_are_refused_by_the_cli(
        ceremony: tuple[Path, Path, MasterKey], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    keys_dir, data_dir, _ = ceremony
    part = component()
    monkeypatch.setenv("C1", part.hex())
    monkeypatch.setenv("C2", part.hex())
    assert run_cli(["keys", "import", "k", "--components", "2", "--usage", "P0",
                    "--component-env", "C1", "--component-env", "C2",
                    "--component-kcv", kcv(part, "T"), "--component-kcv", kcv(part, "T"),
                    "--keys-dir", str(keys_dir)]) == 1
    assert "components 1 and 2 are alike" in capsys.readouterr().err
    assert audit(data_dir) == []


def test_without_a_terminal_components_are_not_prompted_for(
        ceremony: tuple[Path, Path, MasterKey], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    keys_dir, _, _ = ceremony
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert run_cli(["keys", "import", "k", "--components", "2", "--usage", "P0",
                    "--keys-dir", str(keys_dir)]) == 1
    assert "no terminal" in capsys.readouterr().err


def test_generate_and_rotate_are_in_the_audit_log(
        ceremony: tuple[Path, Path, MasterKey], capsys: pytest.CaptureFixture[str]) -> None:
    keys_dir, data_dir, _ = ceremony
    d = ["--keys-dir", str(keys_dir), "--data-dir", str(data_dir)]
    assert run_cli(["keys", "generate", "mac", "--usage", "M3", *d]) == 0
    assert run_cli(["keys", "rotate", "mac", *d]) == 0
    entries = audit(data_dir)
    assert [e["action"] for e in entries] == ["key.rotate", "key.generate"]
    rotate = entries[0]
    assert isinstance(rotate["before"], dict) and isinstance(rotate["after"], dict)
    assert (rotate["before"]["version"], rotate["after"]["version"]) == ("00", "01")
    assert rotate["before"]["kcv"] != rotate["after"]["kcv"]
