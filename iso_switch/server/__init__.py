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

from iso_switch.acquirer.devices import BindingFileError, DeviceBindings, load_bindings
from iso_switch.config import Config
from iso_switch.processor import Processor, config_from, open_default
from iso_switch.security.demo import demo_keys_in, pan_hash_key
from iso_switch.security.errors import SecurityError
from iso_switch.security.hsm import SoftwareHsm
from iso_switch.security.keystore import MASTER_KEY_ENV, KeyStore, resolve_master_key
from iso_switch.server.app import Switch, checkout_keys_dir
from iso_switch.server.ledger_worker import InThreadLedger, LedgerWorker, SubprocessLedger

log = structlog.get_logger("iso_switch.server")


class DemoKeyRefused(SecurityError):
    """Outside demo mode the configuration names a demo key or the demo
    master key; the message names which (names and KCVs only)."""


def keys_dir_for(config: Config) -> Path:
    """``keys.dir`` resolved against ``data_dir``; in demo mode, when that is
    the default and absent, the demo key store shipped in the checkout."""
    resolved = config.resolve_path(config.keys.dir)
    if config.demo and not resolved.exists() and config.keys.dir == "keys":
        return checkout_keys_dir()
    return resolved


def build_hsm(config: Config, *, warn: bool = True) -> SoftwareHsm:
    """The software HSM on the configured key store. Outside demo mode the
    demo master key and every demo key are refused (:class:`DemoKeyRefused`):
    they are published, so anything they protect is as good as clear."""
    master_file = config.keys.master_key_file
    master = resolve_master_key(
        config.resolve_path(master_file) if master_file else None,
        # The configured variable name stands in for the default one.
        environ={MASTER_KEY_ENV: os.environ.get(config.keys.master_key_env, "")},
        allow_demo=config.demo,
    )
    if master.is_demo and not config.demo:
        raise DemoKeyRefused("the DEMO master key is refused outside demo mode "
                             f"(KCV {master.kcv}): set a master key of your own")
    store = KeyStore(keys_dir_for(config), master)
    if not config.demo:
        demo_keys = demo_keys_in(store)
        if demo_keys:
            raise DemoKeyRefused("demo keys are refused outside demo mode: "
                                 + ", ".join(demo_keys))
    hsm = SoftwareHsm(store)
    if warn and hsm.uses_demo_keys:
        log.warning("running on DEMO keys (public test keys): never use with real cards",
                    store_dir=str(keys_dir_for(config)))
    return hsm


def device_bindings_for(config: Config) -> DeviceBindings:
    """The configured device-to-terminal bindings (``keys.device_binding``),
    files resolved against the configuration's directory. Raises
    :class:`BindingFileError` naming the file that does not load."""
    return load_bindings((entry.key_set_id, config.resolve_path(entry.file))
                         for entry in config.keys.device_binding)


def open_processor(config: Config, hsm: SoftwareHsm) -> Processor:
    """The processor on the configured ledger, with the key store's PAN hash
    key; the demo data is seeded (insert-if-absent) in demo mode only."""
    key, key_kcv = pan_hash_key(hsm.key_store, config.keys.pan_hash_key)
    processor_config = config_from(config, pan_hash_key=key,
                                   device_bindings=device_bindings_for(config))
    return open_default(config.data_path, hsm, processor_config,
                        seed_demo_data=config.demo, pan_hash_kcv=key_kcv)


def build_switch(config: Config, *, handle_signals: bool = True) -> Switch:
    """The switch and its ledger worker (``ledger.worker``): a child process
    (the default: the processor gets a core of its own), or the writer
    thread, where the processor shares the switch's thread-safe HSM so the
    keys a KSN derives for its MAC are found again for its PIN."""
    hsm = build_hsm(config)
    ledger: LedgerWorker
    if config.ledger.worker == "process":
        # Checked here first, so a wrong PAN hash key or demo seed failure
        # is reported in full by serve instead of by the child's exit.
        open_processor(config, hsm).store.close()
        ledger = SubprocessLedger(config)
    else:
        ledger = InThreadLedger(open_processor(config, hsm))
    return Switch(config, ledger, hsm, handle_signals=handle_signals)


__all__ = ["BindingFileError", "DemoKeyRefused", "Switch", "build_hsm", "build_switch",
           "device_bindings_for", "keys_dir_for",
           "open_processor"]
