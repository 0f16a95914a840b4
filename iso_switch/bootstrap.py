"""From a :class:`~iso_switch.config.Config` to the key store and HSM, the
same way in every process that opens them.

The switch, its ledger worker child, the load generator's provisioning and
trace replay must all find the same key store (or PIN verification data,
PAN hashes and trace seals would not match), and all must refuse the demo
keys outside demo mode. That is the job of this module, not of the server:
a tool that needs the switch's keys has no business importing the trio
shell. It sits above ``config`` and ``security`` and below ``server`` and
``cli``; ``security`` does not know configuration files, and ``config``
only describes settings and opens no key material.
"""

from __future__ import annotations

import os
from pathlib import Path

import structlog

from iso_switch.config import Config, ConfigError
from iso_switch.security import tr31
from iso_switch.security.demo import demo_keys_in
from iso_switch.security.errors import KeyUsageError, SecurityError
from iso_switch.security.hsm import SoftwareHsm
from iso_switch.security.keystore import MASTER_KEY_ENV, KeyStore, resolve_master_key

log = structlog.get_logger("iso_switch.server")
SECONDS_PER_HOUR = 3600


class DemoKeyRefused(SecurityError):
    """Outside demo mode the configuration names a demo key or the demo
    master key; the message names which (names and KCVs only)."""


def checkout_keys_dir() -> Path:
    """The demo key store shipped in the checkout's ``keys/``."""
    return Path(__file__).resolve().parents[1] / "keys"


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
    check_link_keys(config, store)
    hsm = SoftwareHsm(store, bdk_grace_s=config.keys.bdk_rotation_grace_h * SECONDS_PER_HOUR)
    if warn and hsm.uses_demo_keys:
        log.warning("running on DEMO keys (public test keys): never use with real cards",
                    store_dir=str(keys_dir_for(config)))
    return hsm


def check_link_keys(config: Config, store: KeyStore) -> None:
    """Every remote issuer's ``pin_key`` is a zone PIN key (usage P0) the
    switch may encrypt under, and its ``mac_key``, when set, a MAC key
    (usage M3) it may generate and verify with: a link would otherwise
    fail on its first PIN or MAC, long after the start. The
    :class:`ConfigError` names the key path and the key name only."""
    for index, issuer in enumerate(config.issuers):
        wanted: list[tuple[str, str, str, tuple[str, ...]]] = [
            ("pin_key", issuer.pin_key, tr31.USAGE_PIN_ENCRYPTION, (tr31.MODE_ENCRYPT,))]
        if issuer.mac_key:
            wanted.append(("mac_key", issuer.mac_key, tr31.USAGE_MAC_ISO9797_ALG3,
                           (tr31.MODE_GENERATE, tr31.MODE_VERIFY)))
        for key, name, usage, operations in wanted:
            path = f"issuers[{index}].{key}"
            if name not in store:
                raise ConfigError(path, f"no key {name!r} in the key store")
            try:
                for operation in operations:
                    tr31.require_use(store.header(name), (usage,), operation)
            except KeyUsageError as error:
                raise ConfigError(path, f"key {name!r}: {error}") from None


__all__ = ["DemoKeyRefused", "build_hsm", "check_link_keys", "checkout_keys_dir",
           "keys_dir_for"]
