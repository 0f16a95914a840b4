"""Which keys are demo keys, and which key hashes PANs.

Demo mode (see the docs' interface page) may run on the key store shipped in
the checkout, wrapped under the published demo master key. Everywhere else
those keys are as good as public, so the switch refuses them at start. A key
is a demo key when its name starts with ``demo-`` or its key check value is
one of the published demo values below: a demo key imported under another
name is still caught by its KCV.
"""

from __future__ import annotations

from iso_switch.security.errors import KeyStoreError
from iso_switch.security.keystore import KeyStore
from iso_switch.security.tr31 import USAGE_HMAC

DEMO_KEY_PREFIX = "demo-"

#: KCV -> name of every demo key the project publishes (the files in the
#: checkout's ``keys/`` and the demo link keys of the issuer-link spec).
DEMO_KEY_KCVS: dict[str, str] = {
    "08D7B4": "demo-bdk (the public ANSI X9.24 test BDK)",
    "BAABE7": "demo-kek",
    "826ADF": "demo-mac",
    "0FFFD5F3AE": "demo-pan-hash",
    "0D4558": "demo-pvk",
    "37A044": "demo-pvk-ibm3624",
    "76B4F7B35F": "demo-trace",
    "058EBD": "demo-zpk",
    "D4BE7B": "demo-zpk-bank-b",
    "0031A8": "demo-zak-bank-b",
}


def demo_keys_in(store: KeyStore) -> list[str]:
    """Names (with KCV) of the store's keys that are demo keys, rotated BDKs
    included (one may still be in its grace period)."""
    found = []
    for info in store.list_keys():
        if info.name.startswith(DEMO_KEY_PREFIX) or info.kcv in DEMO_KEY_KCVS:
            found.append(f"{info.name} (KCV {info.kcv})")
    for bdk in store.retired_bdks():
        if bdk.name.startswith(DEMO_KEY_PREFIX) or bdk.kcv in DEMO_KEY_KCVS:
            found.append(f"{bdk.name} version {bdk.key_version}, rotated (KCV {bdk.kcv})")
    return found


def pan_hash_key_name(store: KeyStore, configured: str = "") -> str:
    """The key that hashes PANs for card lookup: ``configured`` when given,
    else the store's only HMAC (usage M7) key. Several or none is an error
    naming what to configure, so a store never silently hashes under the
    wrong key (every card on file would stop matching)."""
    if configured:
        return configured
    names = store.names_with_usage(USAGE_HMAC)
    if len(names) != 1:
        found = ", ".join(names) if names else "none"
        raise KeyStoreError(
            "set keys.pan_hash_key: the PAN hash key is the key store's one HMAC (usage M7) "
            f"key, and it holds {found}; generate one with "
            "'iso-switch keys generate pan-hash --usage M7 --algorithm H --length 32'")
    return names[0]


def pan_hash_key(store: KeyStore, configured: str = "") -> tuple[bytes, str]:
    """The PAN hash key's bytes and its KCV (the ledger records the KCV)."""
    name = pan_hash_key_name(store, configured)
    key = store.key_for(name, (USAGE_HMAC,), "G")
    return key, store.info(name).kcv


__all__ = ["DEMO_KEY_KCVS", "DEMO_KEY_PREFIX", "demo_keys_in", "pan_hash_key",
           "pan_hash_key_name"]
