"""The trio TCP server: the only package that imports trio.

``build_switch(config)`` assembles a switch from a :class:`~iso_switch.config.Config`:
the key store and software HSM (:mod:`iso_switch.bootstrap`), the SQLite
ledger under ``data_dir`` (demo data seeded on first start; the remote
issuers' BINs checked against its route table) and the listeners. ``await switch.run()`` serves
until SIGINT/SIGTERM or ``switch.shutdown()``.
"""

from __future__ import annotations

from collections.abc import Callable

from iso_switch.acquirer.devices import BindingFileError, DeviceBindings, load_bindings
from iso_switch.bootstrap import build_hsm
from iso_switch.config import Config, ConfigError, check_issuer_routes
from iso_switch.processor import Processor, config_from, open_default
from iso_switch.security.demo import pan_hash_key
from iso_switch.security.hsm import Hsm, SoftwareHsm
from iso_switch.server.app import Switch
from iso_switch.server.ledger_worker import InThreadLedger, LedgerWorker, SubprocessLedger
from iso_switch.server.reload import PreparedReload, prepare_reload


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


def build_switch(config: Config, *, handle_signals: bool = True,
                 load: Callable[[], Config] | None = None) -> Switch:
    """The switch and its ledger worker (``ledger.worker``): a child process
    (the default: the processor gets a core of its own), or the writer
    thread, where the processor shares the switch's thread-safe HSM so the
    keys a KSN derives for its MAC are found again for its PIN. ``load``
    reads the configuration again for a reload (SIGHUP); without it a
    reload keeps ``config`` and re-reads the key store and reference data."""
    hsm = build_hsm(config)
    # Opened here in either case, so a wrong PAN hash key, a demo seed
    # failure or an issuer route that collides with the ledger's is
    # reported in full by serve instead of by the child's exit.
    processor = open_processor(config, hsm)
    try:
        check_issuer_routes(config, processor.store.load_routes())
    except ConfigError:
        processor.store.close()
        raise
    ledger: LedgerWorker
    if config.ledger.worker == "process":
        processor.store.close()
        ledger = SubprocessLedger(config)
    else:
        ledger = InThreadLedger(processor)
    load_again = load if load is not None else (lambda: config)

    def reloader(running: Config, running_hsm: Hsm) -> PreparedReload:
        assert isinstance(running_hsm, SoftwareHsm), "build_switch made a SoftwareHsm"
        return prepare_reload(load_again, running, running_hsm)

    return Switch(config, ledger, hsm, handle_signals=handle_signals, reloader=reloader)


__all__ = ["BindingFileError", "Switch", "build_switch", "device_bindings_for",
           "open_processor"]
