"""No clear PIN, PIN block, key or full PAN in any log line, exception
message or repr the security package produces, and no trio import.

The test drives every path that can log or fail (good and bad MACs and
PINs, malformed KSNs, tampered key blocks, a wrong master key, the keys
CLI) with distinctive secrets, captures everything, and searches it."""

from __future__ import annotations

import argparse
import logging
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from iso_switch.cli import keys_cmd
from iso_switch.security import (
    MASTER_KEY_ENV,
    KeyStore,
    MasterKey,
    SecurityError,
    SoftwareHsm,
    dukpt,
    mac,
    parse_ksn,
    pinblock,
    tr31,
)
from iso_switch.security.keystore import KeyInfo

PAN = "4761739001010010"
PIN = "739182"
KSN = "FFFF9876543210E00011"


def forms(secret: bytes) -> list[str]:
    return [secret.hex().upper(), secret.hex().lower(), repr(secret)[2:-1]]


def test_nothing_secret_reaches_logs_reprs_or_errors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bdk = secrets.token_bytes(16)
    master_key = secrets.token_bytes(32)
    master = MasterKey(master_key, "test")
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []

    store = KeyStore(tmp_path / "keys", master, create=True)
    store.add("bdk", bdk, "B0", "T", "X", key_set_id="FFFF987654")
    store.generate("pvk", "V2", "T", 16, "C")
    store.generate("kek", "K0", "T", 16, "B")
    hsm = SoftwareHsm(store)
    pvk = store.key_for("pvk", ("V2",), tr31.MODE_GENERATE)
    kek = store.key_for("kek", ("K0",), tr31.MODE_ENCRYPT)

    transaction_key = dukpt.derive_transaction_key(bdk, KSN)
    keys = dukpt.DukptKeys.from_transaction_key(transaction_key)
    clear_block = pinblock.encode_iso0(PIN, PAN)
    block = pinblock.encrypt_pin_block(keys.pin, PIN, PAN, 0)
    message = b"0200" + PAN.encode() + b"rest of the message"
    request_mac = mac.retail_mac(keys.mac_request, message)
    verification = hsm.make_pin_verification_data(PAN, PIN)

    assert hsm.verify_request_mac(KSN, message, request_mac)
    assert not hsm.verify_request_mac(KSN, message + b"x", request_mac)
    assert hsm.verify_pin(KSN, block, PAN, verification)
    assert not hsm.verify_pin(KSN, bytes(8), PAN, verification)
    hsm.generate_response_mac(KSN, message)

    def fail(func: object, *args: object) -> None:
        try:
            func(*args)  # type: ignore[operator]
        except (SecurityError, ValueError) as exc:
            seen.append(str(exc))
            seen.append(repr(exc))
        else:
            raise AssertionError("expected an error")

    fail(pinblock.decrypt_pin_block, keys.pin, block, "4761739001010028", 0)
    fail(pinblock.decrypt_pin_block, secrets.token_bytes(16), block, PAN, 0)
    fail(pinblock.decode_iso0, bytes(8), PAN)
    fail(pinblock.encode_iso0, PIN + "x", PAN)
    fail(pinblock.translate_pin_block, keys.pin, block, 0, kek, 1, PAN)
    fail(hsm.generate_response_mac, "FFFF0000003210E00011", message)
    fail(parse_ksn, "FFFF9876543210EFFFFF")
    exported = tr31.wrap(kek, tr31.KeyBlockHeader("B", "P0", "T", "E"), keys.pin)
    fail(tr31.unwrap, kek, exported[:-1] + ("0" if exported[-1] != "0" else "1"))
    fail(tr31.unwrap, secrets.token_bytes(16), exported)
    fail(KeyStore, tmp_path / "keys", MasterKey(secrets.token_bytes(32), "wrong"))
    fail(store.key_for, "pvk", ("M3",), tr31.MODE_GENERATE)
    fail(MasterKey.from_hex, "zz" + master_key.hex(), "env")

    seen += [repr(obj) for obj in (hsm, store, master, keys, dukpt.DukptDeriver(bdk),
                                   store.info("bdk"), store.header("pvk"), verification,
                                   parse_ksn(KSN))]
    seen += [str(obj) for obj in (master, store, keys)]

    parser = argparse.ArgumentParser()
    keys_cmd.register(parser.add_subparsers(dest="command"))
    monkeypatch.setenv(MASTER_KEY_ENV, master_key.hex())
    for argv in (["keys", "list"], ["keys", "rotate", "pvk"], ["keys", "generate", "pvk",
                                                                 "--usage", "V2"]):
        args = parser.parse_args([*argv, "--keys-dir", str(tmp_path / "keys")])
        args.func(args)
    captured = capsys.readouterr()
    seen += [captured.out, captured.err]
    seen += [record.getMessage() for record in caplog.records]
    seen += [str(record.args) for record in caplog.records]

    text = "\n".join(seen)
    assert "KeyInfo(" in text and "MasterKey(" in text  # the reprs were captured
    forbidden = [PAN, PIN]
    for secret in (bdk, pvk, kek, master_key, transaction_key, keys.pin,
                   keys.mac_request, keys.mac_response, clear_block, block):
        forbidden += forms(secret)
    for item in forbidden:
        assert item not in text, "a secret reached a log line, error or repr"
    assert all(field.name != "key" for field in KeyInfo.__dataclass_fields__.values())


def test_security_package_does_not_import_trio() -> None:
    code = (
        "import sys, iso_switch.security, iso_switch.security.hsm, iso_switch.cli.keys_cmd; "
        "assert 'trio' not in sys.modules, 'trio imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
