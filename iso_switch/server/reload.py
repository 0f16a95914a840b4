"""Reloading a running switch (SIGHUP): the configuration file, the key
store, the risk rules and the ledger's reference data, without a restart.

A reload is prepared in full before anything changes: the file is read
again (:func:`~iso_switch.config.reload_plan` keeps every restart-only
setting as it runs), the key store opened and checked (demo keys outside
demo mode, keys that do not unwrap), the PAN hash key compared with the
running one and the device binding files read. Anything that fails leaves
the running switch as it is, and the reason is logged (never key material).
Then the ledger side installs its part between two batches
(:func:`reload_processor`, in the writer thread or the ledger process),
and only after it succeeded does the front swap its HSM and configuration.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass

from iso_switch.acquirer.devices import BindingFileError
from iso_switch.bootstrap import build_hsm
from iso_switch.config import Config, ConfigError, ReloadPlan, reload_plan
from iso_switch.processor import Processor, ProcessorConfig, config_from
from iso_switch.security.demo import pan_hash_key
from iso_switch.security.errors import SecurityError
from iso_switch.security.hsm import SoftwareHsm


class ReloadRefused(Exception):
    """A reload the switch does not apply; the message says why, without
    key material."""


@dataclass(frozen=True, slots=True)
class PreparedReload:
    """Everything a reload installs, checked: the plan, the new HSM and the
    key names it adds, removes or changes (a different check value)."""

    plan: ReloadPlan
    hsm: SoftwareHsm
    keys_added: tuple[str, ...]
    keys_removed: tuple[str, ...]
    keys_changed: tuple[str, ...]


def processor_config_for(config: Config, hsm: SoftwareHsm,
                         running_pan_hash_key: bytes) -> ProcessorConfig:
    """The processor configuration of a reloaded ``config``. The PAN hash
    key cannot change: every card on file is found by its hash."""
    from iso_switch.server import device_bindings_for

    key, _kcv = pan_hash_key(hsm.key_store, config.keys.pan_hash_key)
    if not hmac.compare_digest(key, running_pan_hash_key):
        raise ReloadRefused("the PAN hash key differs from the one the ledger's cards are "
                            "hashed under; it cannot change")
    return config_from(config, pan_hash_key=key, device_bindings=device_bindings_for(config))


def reload_processor(processor: Processor, config: Config | None,
                     hsm: SoftwareHsm | None) -> list[str]:
    """Between batches, where the processor runs: install the reloaded HSM
    and configuration (``None``: keep them) and re-read the reference data.
    Returns the reference tables that changed."""
    if config is None or hsm is None:
        return processor.reconfigure(processor.hsm, processor.config)
    processor_config = processor_config_for(config, hsm, processor.config.pan_hash_key)
    return processor.reconfigure(hsm, processor_config)


def prepare_reload(load: Callable[[], Config], running: Config,
                   running_hsm: SoftwareHsm) -> PreparedReload:
    """Read and check everything a reload needs (blocking: file reads and
    key unwrapping; run it off the trio thread). Raises when the reload must
    be refused."""
    plan = reload_plan(running, load())
    hsm = build_hsm(plan.config, warn=False)
    running_key, _kcv = pan_hash_key(running_hsm.key_store, running.keys.pan_hash_key)
    processor_config_for(plan.config, hsm, running_key)  # refused here, not half applied
    old = {info.name: info.kcv for info in running_hsm.list_keys()}
    new = {info.name: info.kcv for info in hsm.list_keys()}
    return PreparedReload(
        plan, hsm,
        keys_added=tuple(sorted(new.keys() - old.keys())),
        keys_removed=tuple(sorted(old.keys() - new.keys())),
        keys_changed=tuple(sorted(name for name in new.keys() & old.keys()
                                  if new[name] != old[name])),
    )


def refusal_reason(error: BaseException) -> str:
    """Why a reload was refused, for the log: the message of the errors that
    are written to carry no secret, the type name of anything else."""
    if isinstance(error, ConfigError | SecurityError | BindingFileError | ReloadRefused):
        return str(error)
    if isinstance(error, OSError):
        return f"{type(error).__name__}: {error.strerror}"
    return type(error).__name__


__all__ = ["PreparedReload", "ReloadRefused", "prepare_reload", "processor_config_for",
           "refusal_reason", "reload_processor"]
