"""The trio TCP server: the only package that imports trio.

``build_switch(config)`` assembles a switch from a :class:`~iso_switch.config.Config`:
the key store and software HSM, the SQLite ledger under ``data_dir`` (demo
data seeded on first start) and the listeners. ``await switch.run()`` serves
until SIGINT/SIGTERM or ``switch.shutdown()``.
"""

from __future__ import annotations

import os
from pathlib import Path

import structlog

from iso_switch.config import Config
from iso_switch.processor import config_from, open_default
from iso_switch.security.hsm import SoftwareHsm
from iso_switch.security.keystore import MASTER_KEY_ENV, KeyStore, resolve_master_key
from iso_switch.server.app import Switch, checkout_keys_dir
from iso_switch.server.ledger_worker import InThreadLedger, LedgerWorker, SubprocessLedger

log = structlog.get_logger("iso_switch.server")


def keys_dir_for(config: Config) -> Path:
    """``keys.dir`` resolved against ``data_dir``; when that is the default
    and absent, the demo key store shipped in the checkout's ``keys/``."""
    resolved = config.resolve_path(config.keys.dir)
    if not resolved.exists() and config.keys.dir == "keys":
        return checkout_keys_dir()
    return resolved


def build_hsm(config: Config, *, warn: bool = True) -> SoftwareHsm:
    master_file = config.keys.master_key_file
    master = resolve_master_key(
        config.resolve_path(master_file) if master_file else None,
        # The configured variable name stands in for the default one.
        environ={MASTER_KEY_ENV: os.environ.get(config.keys.master_key_env, "")},
        allow_demo=True,
    )
    store = KeyStore(keys_dir_for(config), master)
    hsm = SoftwareHsm(store)
    if warn and hsm.uses_demo_keys:
        log.warning("running on DEMO keys (public test keys): never use with real cards",
                    store_dir=str(keys_dir_for(config)))
    return hsm


def build_switch(config: Config, *, handle_signals: bool = True) -> Switch:
    """The switch and its ledger worker (``ledger.worker``): a child process
    (the default: the processor gets a core of its own), or the writer
    thread, where the processor shares the switch's thread-safe HSM so the
    keys a KSN derives for its MAC are found again for its PIN."""
    hsm = build_hsm(config)
    ledger: LedgerWorker
    if config.ledger.worker == "process":
        ledger = SubprocessLedger(config)
    else:
        ledger = InThreadLedger(open_default(config.data_path, hsm, config_from(config)))
    return Switch(config, ledger, hsm, handle_signals=handle_signals)


__all__ = ["Switch", "build_hsm", "build_switch", "keys_dir_for"]
