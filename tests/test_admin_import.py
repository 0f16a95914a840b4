"""Card import (``iso_switch.admin``, ``iso-switch cards import``): the JSON
Lines format, no PIN at rest, one audited transaction, idempotence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iso_switch.admin import CardImport, CardImportError, import_cards, parse_card_lines
from iso_switch.bootstrap import checkout_keys_dir
from iso_switch.cli import admin_cmd, main
from iso_switch.processor import open_store
from iso_switch.security.hsm import SoftwareHsm
from iso_switch.security.keystore import KeyStore, resolve_master_key
from simulators._provision import load_card_pan

PAN = load_card_pan(0)
OTHER_PAN = load_card_pan(1)


def _line(**overrides: object) -> str:
    record: dict[str, object] = {"pan": PAN, "expiry": "3012", "account": "6222028800000000"}
    record.update(overrides)
    return json.dumps({k: v for k, v in record.items() if v is not None})


def _demo_hsm() -> SoftwareHsm:
    return SoftwareHsm(KeyStore(checkout_keys_dir(), resolve_master_key(None, allow_demo=True)))


def test_a_line_with_only_the_required_keys_takes_the_defaults() -> None:
    (card,) = parse_card_lines(["", _line(), "  "])
    assert card == CardImport(pan=PAN, expiry="3012", account="6222028800000000")
    assert card.state == "active" and card.opening_minor == 0 and card.limit_day_count is None
    assert PAN not in repr(card)


@pytest.mark.parametrize(("line", "names"), [
    (_line(pin="1234"), "no PIN"),
    (_line(colour="red"), "unknown key(s): colour"),
    (_line(**{PAN: 1}), "unknown key(s)"),
    (_line(account=None), "missing key(s): account"),
    (_line(pan="4761738000000008"), "pan:"),
    (_line(expiry="3013"), "expiry:"),
    (_line(account="6222 0288"), "account:"),
    (_line(state="gone"), "state:"),
    (_line(opening_minor=-1), "opening_minor:"),
    (_line(limit_day_count=True), "limit_day_count: not an integer"),
    (_line(expiry=3012), "expiry: not a string"),
    ("[1, 2]", "not a JSON object"),
    ('{"pan": "' + PAN, "not a JSON object"),
    (" " * 5000, "longer than"),
])
def test_a_bad_line_is_named_by_number_and_field_never_by_value(line: str, names: str) -> None:
    with pytest.raises(CardImportError) as caught:
        list(parse_card_lines([_line(pan=OTHER_PAN), line]))
    message = str(caught.value)
    assert message.startswith("line 2: ") and names in message
    assert PAN not in message and "4761738000000008" not in message


def test_the_import_is_audited_idempotent_and_keeps_no_clear_pan(tmp_path: Path) -> None:
    hsm = _demo_hsm()
    cards = [CardImport(pan=PAN, expiry="3012", account="6222028800000000",
                        opening_minor=12_345, limit_day_count=99),
             CardImport(pan=OTHER_PAN, expiry="3012", account="6222028800000000")]
    first = import_cards(tmp_path, hsm, cards, pin="4321", actor="tester")
    again = import_cards(tmp_path, hsm, cards, pin="4321", actor="tester")
    assert (first.created, first.existing) == (2, 0)
    assert (again.created, again.existing) == (0, 2)
    store = open_store(tmp_path)
    try:
        account = store.account_by_number("6222028800000000")
        assert account is not None and account.ledger_balance_minor == 12_345
        listed = store.list_cards()
        assert [c.limit_day_count for c in listed] == [99, 20]
        assert all(c.pvd_method == "pvv" and c.account_id == account.id for c in listed)
        entries = store.list_audit(10, "card.import")
        assert [(e.actor, e.target) for e in entries] == [
            ("tester", "476173******0014"), ("tester", "476173******0006")]
        assert entries[1].after["account_created"] and not entries[0].after["account_created"]
        assert store.check_invariants() == []
    finally:
        store.close()
    for path in tmp_path.glob("ledger.sqlite3*"):  # the WAL too
        assert PAN.encode() not in path.read_bytes()


def test_a_bad_card_or_pin_imports_nothing(tmp_path: Path) -> None:
    lines = [_line(), _line(pan=OTHER_PAN, state="gone")]
    with pytest.raises(CardImportError, match="line 2"):
        import_cards(tmp_path, _demo_hsm(), parse_card_lines(lines), pin="1234")
    with pytest.raises(CardImportError, match="PIN"):
        import_cards(tmp_path, _demo_hsm(), parse_card_lines(lines[:1]), pin="12")
    store = open_store(tmp_path)
    try:
        assert store.list_cards() == [] and store.list_audit(10) == []
    finally:
        store.close()


def test_cli_cards_import_reads_the_pin_from_the_environment(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    card_file = tmp_path / "cards.jsonl"
    card_file.write_text(_line() + "\n" + _line(pan=OTHER_PAN, account="6222028800000001") + "\n")
    card_file.chmod(0o600)
    monkeypatch.setenv(admin_cmd.PIN_ENV, "1234")
    argv = ["cards", "import", str(card_file), "--data-dir", str(tmp_path / "var"),
            "--keys-dir", str(checkout_keys_dir()), "--demo"]
    assert main(argv) == 0
    assert "2 created, 0 already on file" in capsys.readouterr().out
    assert main(argv) == 0
    assert "0 created, 2 already on file" in capsys.readouterr().out
    card_file.write_text(_line(pin="1234") + "\n")
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "no PIN" in out and "nothing imported" in out and PAN not in out
    assert main(["cards", "import", str(tmp_path / "absent.jsonl"), *argv[3:]]) == 1


def test_cli_cards_import_help_documents_the_format(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["cards", "import", "--help"])
    out = capsys.readouterr().out
    for word in ('"pan"', '"expiry"', '"account"', "opening_minor", "limit_day_count",
                 "no PIN", admin_cmd.PIN_ENV, "card.import"):
        assert word in out


def test_the_documented_example_is_a_valid_card() -> None:
    text = admin_cmd.CARDS_IMPORT_EPILOG
    example = text[text.index("{"):text.index("}") + 1].replace("\n", " ")
    (card,) = parse_card_lines([example])
    assert card.opening_minor == 100_000_000_000 and card.limit_day_count == 10**9
