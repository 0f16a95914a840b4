"""Payment security: PIN blocks, DUKPT, MACs, PIN verification, TR-31 key
blocks, the wrapped key store and the :class:`Hsm` interface.

Pure except for :class:`KeyStore`, which reads and writes ``keys/``. Never
imports trio. The public API is re-exported here; modules underneath are
free to change.
"""

from iso_switch.security.errors import (
    KeyBlockError,
    KeyStoreError,
    KeyUsageError,
    KsnError,
    MacError,
    PinBlockError,
    SecurityError,
)
from iso_switch.security.hsm import (
    PIN_METHOD_IBM3624,
    PIN_METHOD_PVV,
    Hsm,
    PinVerificationData,
    SoftwareHsm,
)
from iso_switch.security.keystore import (
    DEMO_MASTER_KEY,
    MASTER_KEY_ENV,
    KeyInfo,
    KeyStore,
    MasterKey,
    resolve_master_key,
)
from iso_switch.security.ksn import AesKsn, Ksn, parse_aes_ksn, parse_ksn
from iso_switch.security.pinverify import PIN_TRIES_MAX, PinTryDecision, decide_pin_try
from iso_switch.security.replay import (
    REPLAY_WINDOW_COUNTERS,
    ReplayState,
    ReplayWindow,
    check_replay,
)
from iso_switch.security.sealing import CardholderSealer, SealError

__all__ = [
    "DEMO_MASTER_KEY",
    "MASTER_KEY_ENV",
    "PIN_METHOD_IBM3624",
    "PIN_METHOD_PVV",
    "PIN_TRIES_MAX",
    "REPLAY_WINDOW_COUNTERS",
    "AesKsn",
    "CardholderSealer",
    "Hsm",
    "KeyBlockError",
    "KeyInfo",
    "KeyStore",
    "KeyStoreError",
    "KeyUsageError",
    "Ksn",
    "KsnError",
    "MacError",
    "MasterKey",
    "PinBlockError",
    "PinTryDecision",
    "PinVerificationData",
    "ReplayState",
    "ReplayWindow",
    "SealError",
    "SecurityError",
    "SoftwareHsm",
    "check_replay",
    "decide_pin_try",
    "parse_aes_ksn",
    "parse_ksn",
    "resolve_master_key",
]
