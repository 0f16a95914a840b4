"""One simulated POS terminal device: builds and seals requests (sans-I/O).

A :class:`TerminalDevice` is what sits on a shop counter: a terminal ID and
merchant ID, a STAN counter, and a TDES DUKPT key (ANSI X9.24-1) injected
from a base derivation key. It builds every request of docs/interface.md
section 3 as a pyiso8583-style field dict and *seals* it: a fresh KSN in
DE62, the PIN block in DE52 (ISO 9564 format 0 under the DUKPT PIN key) and
the retail MAC (ISO 9797-1 algorithm 3, padding 1, MAC-request key) over the
encoded bytes. All of it comes from ``iso_switch.security``, the same code
the switch runs; the test suite checks the switch against ``psec`` instead,
so the two sides are not one implementation agreeing with itself.

Nothing here touches a socket, a file or the clock except through the
``clock`` argument, so it is cheap to test and fast enough for the load
generator: the DUKPT keys come from a :class:`DukptDeriver` whose prefix
cache makes a device's next counter cost one key-generation step.

Secrets: the BDK, PINs, PIN blocks and working keys never appear in a repr,
an exception or anything printed. A :class:`Sealed` message's repr shows
its size and KSN only.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final

from iso_switch.acquirer.mac import (
    KSN_FIELD,
    MAC_FIELDS,
    MacLayout,
    mac_field,
    mac_field_for_encoding,
    may_carry_mac,
    parse_mac,
)
from iso_switch.codec import Codec, load_spec
from iso_switch.codec.subfields import OriginalData, ReplacementAmounts
from iso_switch.security.dukpt import DukptDeriver, DukptKeys
from iso_switch.security.keystore import KeyStore
from iso_switch.security.ksn import (
    TDES_COUNTER_BITS,
    TDES_COUNTER_MASK,
    TDES_COUNTER_ONE_BITS_MAX,
    check_tdes_counter,
)
from iso_switch.security.mac import retail_mac
from iso_switch.security.pinblock import FORMAT_0, encrypt_pin_block

#: The public ANSI X9.24 test BDK of docs/interface.md section 6 (demo only).
DEMO_BDK_HEX: Final = "0123456789ABCDEFFEDCBA9876543210"
#: Key set FFFF987654 + device 3210E (+ the counter's top bit, 0): the
#: demo KSN prefix; device ``index`` i adds i to the 19-bit device id.
DEMO_KSN_PREFIX: Final = "FFFF9876543210E"
DEMO_MERCHANT: Final = "MERCHANT0000001"
DEFAULT_TERMINAL: Final = "TERM0003"
DEFAULT_DIALECT: Final = "ascii87-hex"
DEMO_CURRENCY: Final = "156"
# POS entry mode: 02 magnetic stripe read, 1 terminal can accept PINs.
DEFAULT_POS_ENTRY_MODE: Final = "021"

KSN_HEX_CHARS: Final = 20
KSN_PREFIX_HEX_CHARS: Final = 15
KEY_SET_HEX_CHARS: Final = 10
DEVICE_ID_BITS: Final = 19
DEVICES_MAX: Final = 1 << DEVICE_ID_BITS
STAN_MIN: Final = 1
STAN_MAX: Final = 999_999
AMOUNT_DIGITS: Final = 12
AMOUNT_MINOR_MAX: Final = 10**AMOUNT_DIGITS - 1
#: Derivers shared by the devices of one process, per BDK (one entry per
#: BDK; a load run has one).
_DERIVERS_MAX: Final = 16
#: Cached DUKPT prefixes per deriver: about 20 per active device.
DERIVER_CACHE_ENTRIES: Final = 65_536

# Fields a repeat or a re-seal drops: they are computed again per message.
_SEAL_FIELDS: Final = ("52", KSN_FIELD, *MAC_FIELDS)
# Request MTI (first three digits) -> its repeat's last digit.
_REPEATABLE: Final = frozenset({"010", "020", "022", "040", "042"})


class MacVerdict(StrEnum):
    """What the response's MAC says; the value is what a person reads."""

    OK = "MAC ok"
    BAD = "MAC BAD"
    ABSENT = "no MAC"


class DeviceError(ValueError):
    """The caller asked for something a device cannot do (bad amount, KSN
    prefix, STAN range, exhausted key space). Never carries key material,
    a PIN or a full PAN."""


@dataclass(frozen=True, slots=True)
class Sealed:
    """One request ready to send: its bytes, the fields it was built from
    (DE52 and the MAC included) and the KSN it was sealed under (``None``
    when it carries neither PIN nor MAC).

    The repr shows the MTI, size and KSN only: the fields hold a PAN and a
    PIN block.
    """

    raw: bytes
    fields: Mapping[str, str] = field(repr=False)
    ksn: str | None
    mac: bool

    def __repr__(self) -> str:
        mti = self.fields.get("t", "?")
        return f"Sealed({mti}, <{len(self.raw)} bytes>, ksn={self.ksn}, mac={self.mac})"

    @property
    def mti(self) -> str:
        return self.fields["t"]

    @property
    def stan(self) -> str:
        return self.fields.get("11", "")


def _next_counter(counter: int) -> int:
    """The next counter an originator may use after ``counter``: skips
    counters with more than ten one-bits (X9.24-1 A.2), exactly as
    :class:`~iso_switch.security.dukpt.TerminalDukpt` does."""
    nxt = counter + 1
    while nxt.bit_count() > TDES_COUNTER_ONE_BITS_MAX:
        nxt += nxt & -nxt
    return nxt


def device_initial_ksn(ksn_prefix: str, index: int) -> str:
    """The initial KSN (counter 0) of device ``index`` under a 15-hex KSN
    prefix: the prefix's device id plus ``index``, so N devices of one run
    get N distinct device ids (and so separate replay state on the switch)."""
    if len(ksn_prefix) != KSN_PREFIX_HEX_CHARS:
        raise DeviceError(f"a KSN prefix is {KSN_PREFIX_HEX_CHARS} hex characters")
    try:
        base = int(ksn_prefix + "0" * (KSN_HEX_CHARS - KSN_PREFIX_HEX_CHARS), 16)
    except ValueError:
        raise DeviceError("a KSN prefix is hex") from None
    if not 0 <= index < DEVICES_MAX:
        raise DeviceError(f"device index must be 0..{DEVICES_MAX - 1}")
    device_field = (base >> TDES_COUNTER_BITS) & (DEVICES_MAX - 1)
    if device_field + index >= DEVICES_MAX:
        raise DeviceError("device index overflows the prefix's device id")
    value = (base & ~TDES_COUNTER_MASK) + (index << TDES_COUNTER_BITS)
    return f"{value:0{KSN_HEX_CHARS}X}"


_derivers: dict[bytes, DukptDeriver] = {}


def _deriver_for(bdk: bytes) -> DukptDeriver:
    # Keyed by a digest, not the BDK itself, so the dict's keys are no key.
    slot = hashlib.sha256(bdk).digest()
    deriver = _derivers.get(slot)
    if deriver is None:
        if len(_derivers) >= _DERIVERS_MAX:
            _derivers.clear()
        deriver = _derivers[slot] = DukptDeriver(bdk, DERIVER_CACHE_ENTRIES)
    return deriver


_codecs: dict[str, Codec] = {}


def codec_for(dialect: str) -> Codec:
    """One shared :class:`Codec` per dialect name (compiled layouts are
    learned once per process)."""
    codec = _codecs.get(dialect)
    if codec is None:
        codec = _codecs[dialect] = Codec(load_spec(dialect))
    return codec


def amount_field(amount_minor: int) -> str:
    """DE4: an amount in minor units, 12 digits."""
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
        raise DeviceError("an amount is an integer number of minor units")
    if not 0 <= amount_minor <= AMOUNT_MINOR_MAX:
        raise DeviceError(f"an amount is 0..{AMOUNT_MINOR_MAX} minor units")
    return f"{amount_minor:0{AMOUNT_DIGITS}d}"


def de90_of(original: Mapping[str, str]) -> str:
    """DE90 naming ``original`` (a request's fields): MTI + DE11 + DE7 +
    DE32 zero-filled + forwarding id zeros (docs/interface.md section 3)."""
    return OriginalData.from_parts(original["t"], original["11"], original["7"],
                                   original.get("32")).to_text()


@functools.lru_cache(maxsize=_DERIVERS_MAX)
def mac_layout_for(codec: Codec) -> MacLayout:
    """Where ``codec``'s dialect writes a MAC: the switch's own rules
    (:mod:`iso_switch.acquirer.mac`), learned once per codec."""
    return MacLayout.of(codec)


def pan_of(fields: Mapping[str, str]) -> str | None:
    """The PAN of DE2, or of DE35 (before its separator)."""
    if "2" in fields:
        return fields["2"]
    track2 = fields.get("35")
    if track2 is None:
        return None
    for separator in ("=", "D", "d"):
        if separator in track2:
            return track2.split(separator, 1)[0]
    return track2


class TerminalDevice:
    """One DUKPT device at one terminal: builds, seals and checks messages.

    Several devices may share a terminal ID (a load run puts many on
    TERM0001); give each its own ``stan_range`` so that two devices never
    send the same key (MTI class + DE41 + DE11 + DE7). ``counter`` is the
    last DUKPT counter this device used (0 for a fresh device); the next
    message uses the next valid one. ``clock`` returns an aware UTC time
    (DE7 is UTC; DE12/DE13 are written in the same UTC clock, as the demo
    terminals do).

    Not thread-safe; cheap to create (the DUKPT deriver is shared per BDK).
    """

    def __init__(
        self,
        *,
        terminal_id: str = DEFAULT_TERMINAL,
        merchant_id: str = DEMO_MERCHANT,
        dialect: str = DEFAULT_DIALECT,
        bdk: bytes | str = DEMO_BDK_HEX,
        ksn_prefix: str = DEMO_KSN_PREFIX,
        device_index: int = 0,
        counter: int = 0,
        stan_range: tuple[int, int] = (STAN_MIN, STAN_MAX),
        stan: int | None = None,
        currency: str = DEMO_CURRENCY,
        acquirer_id: str | None = None,
        pos_entry_mode: str = DEFAULT_POS_ENTRY_MODE,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        key = bytes.fromhex(bdk) if isinstance(bdk, str) else bdk
        if len(key) != 16:
            raise DeviceError("a TDES BDK has 16 bytes (32 hex characters)")
        first, last = stan_range
        if not STAN_MIN <= first <= last <= STAN_MAX:
            raise DeviceError(f"a STAN range lies within {STAN_MIN}..{STAN_MAX}")
        if stan is not None and not first <= stan <= last:
            raise DeviceError("the starting STAN lies outside the STAN range")
        if counter < 0 or counter > TDES_COUNTER_MASK:
            raise DeviceError("a DUKPT counter is 0..2^21-1")
        self.terminal_id = terminal_id
        self.merchant_id = merchant_id
        self.dialect = dialect
        self.codec = codec_for(dialect)
        self.currency = currency
        self.acquirer_id = acquirer_id
        self.pos_entry_mode = pos_entry_mode
        self.initial_ksn = device_initial_ksn(ksn_prefix, device_index)
        self._ksn_base = int(self.initial_ksn, 16)
        self._deriver = _deriver_for(key)
        self._counter = counter
        self._stan_range = (first, last)
        self._stan = (stan if stan is not None else first) - 1
        self._clock = clock or (lambda: datetime.now(UTC))

    @classmethod
    def from_key_store(cls, store: KeyStore, *, ksn_prefix: str = DEMO_KSN_PREFIX,
                       **options: object) -> TerminalDevice:
        """A device whose BDK is the key store's BDK for the prefix's key set
        (what the switch itself would pick)."""
        bdk = store.bdk_for_key_set(ksn_prefix[:KEY_SET_HEX_CHARS].upper())
        if bdk is None:
            raise DeviceError("the key store holds no BDK for this key set")
        return cls(bdk=bdk, ksn_prefix=ksn_prefix, **options)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return (f"TerminalDevice({self.terminal_id}, ksn={self.initial_ksn[:-5]}..., "
                f"counter={self._counter}, stan={self._stan})")

    # -- counters -------------------------------------------------------------

    @property
    def counter(self) -> int:
        """The last DUKPT counter used (persist it to avoid KSN replays)."""
        return self._counter

    @property
    def last_stan(self) -> int:
        """The last STAN handed out (``range start - 1`` before the first)."""
        return self._stan

    def next_stan(self) -> str:
        """The next DE11 of this device's range, wrapping within it."""
        first, last = self._stan_range
        self._stan = self._stan + 1 if first <= self._stan < last else first
        return f"{self._stan:06d}"

    def next_ksn(self) -> str:
        """Advance the DUKPT counter and return the new KSN."""
        counter = _next_counter(self._counter)
        try:
            check_tdes_counter(counter)
        except ValueError:
            raise DeviceError("this device's DUKPT key space is used up") from None
        self._counter = counter
        return f"{self._ksn_base | counter:0{KSN_HEX_CHARS}X}"

    def keys_for(self, ksn: str) -> DukptKeys:
        """The working keys of one of this BDK's KSNs."""
        return self._deriver.keys(ksn)

    # -- building -------------------------------------------------------------

    def _times(self) -> dict[str, str]:
        now = self._clock()
        return {"7": now.strftime("%m%d%H%M%S"), "12": now.strftime("%H%M%S"),
                "13": now.strftime("%m%d")}

    def _card_request(self, mti: str, code: str, amount_minor: int, pan: str | None,
                      track2: str | None, expiry: str | None,
                      extra: Mapping[str, str]) -> dict[str, str]:
        if pan is None and track2 is None:
            raise DeviceError("a card request needs a PAN or track 2 data")
        fields: dict[str, str] = {"t": mti}
        if pan is not None:
            fields["2"] = pan
        fields["3"] = code
        fields["4"] = amount_field(amount_minor)
        fields.update(self._times())
        fields["11"] = self.next_stan()
        if expiry is not None:
            fields["14"] = expiry
        fields["22"] = self.pos_entry_mode
        if self.acquirer_id is not None:
            fields["32"] = self.acquirer_id
        if track2 is not None:
            fields["35"] = track2
        fields["41"] = self.terminal_id
        fields["42"] = self.merchant_id
        fields["49"] = self.currency
        fields.update(extra)
        return fields

    def purchase(self, pan: str | None, amount_minor: int, *, expiry: str | None = None,
                 track2: str | None = None, account_type: str = "00",
                 **extra: str) -> dict[str, str]:
        """0200 purchase (processing code 00)."""
        return self._card_request("0200", f"00{account_type}00", amount_minor, pan, track2,
                                  expiry, extra)

    def authorization(self, pan: str | None, amount_minor: int, *, expiry: str | None = None,
                      track2: str | None = None, code: str = "000000",
                      **extra: str) -> dict[str, str]:
        """0100 authorization: places a hold, completed later by a 0220."""
        return self._card_request("0100", code, amount_minor, pan, track2, expiry, extra)

    def withdrawal(self, pan: str | None, amount_minor: int, *, expiry: str | None = None,
                   track2: str | None = None, account_type: str = "00",
                   **extra: str) -> dict[str, str]:
        """0200 cash withdrawal (processing code 01; needs a PIN)."""
        return self._card_request("0200", f"01{account_type}00", amount_minor, pan, track2,
                                  expiry, extra)

    def refund(self, pan: str | None, amount_minor: int, *, expiry: str | None = None,
               track2: str | None = None, **extra: str) -> dict[str, str]:
        """0200 refund (processing code 20): credits the card."""
        return self._card_request("0200", "200000", amount_minor, pan, track2, expiry, extra)

    def balance_inquiry(self, pan: str | None, *, expiry: str | None = None,
                        track2: str | None = None, code: str = "30",
                        account_type: str = "00", **extra: str) -> dict[str, str]:
        """0200 balance inquiry (processing code 30 or 31; needs a PIN;
        the answer carries DE54). DE4 is zero."""
        if code not in ("30", "31"):
            raise DeviceError("a balance inquiry's processing code is 30 or 31")
        return self._card_request("0200", f"{code}{account_type}00", 0, pan, track2, expiry,
                                  extra)

    def transfer(self, pan: str | None, amount_minor: int, to_account: str, *,
                 from_account: str | None = None, expiry: str | None = None,
                 track2: str | None = None, **extra: str) -> dict[str, str]:
        """0200 funds transfer (processing code 40; needs a PIN): from the
        card's account (or DE102 when given) to DE103."""
        accounts = {"103": to_account}
        if from_account is not None:
            accounts["102"] = from_account
        accounts.update(extra)
        return self._card_request("0200", "400000", amount_minor, pan, track2, expiry,
                                  accounts)

    def completion(self, original: Mapping[str, str], amount_minor: int | None = None,
                   **extra: str) -> dict[str, str]:
        """0220 completion advice of the 0100 ``original`` (its fields):
        DE90 names it; DE4 is the final amount (default: the held one)."""
        if original.get("t", "")[:3] != "010":
            raise DeviceError("a completion completes an 0100 authorization")
        return self._follow_up("0220", original, amount_minor, with_times=True, extra=extra)

    def reversal(self, original: Mapping[str, str], *, advice: bool = False,
                 actual_amount_minor: int | None = None, **extra: str) -> dict[str, str]:
        """0400 reversal request (0420 advice with ``advice``) of
        ``original``; ``actual_amount_minor`` reverses partially down to it
        (DE95)."""
        mti = "0420" if advice else "0400"
        fields = self._follow_up(mti, original, None, with_times=False, extra=extra)
        if actual_amount_minor is not None:
            amount_field(actual_amount_minor)
            fields["95"] = ReplacementAmounts(actual_amount_minor).to_text()
        return fields

    def _follow_up(self, mti: str, original: Mapping[str, str], amount_minor: int | None,
                   *, with_times: bool, extra: Mapping[str, str]) -> dict[str, str]:
        fields: dict[str, str] = {"t": mti}
        for name in ("2", "3"):
            if name in original:
                fields[name] = original[name]
        fields["4"] = amount_field(amount_minor) if amount_minor is not None else original["4"]
        times = self._times()
        fields["7"] = times["7"]
        fields["11"] = self.next_stan()
        if with_times:
            fields["12"] = times["12"]
            fields["13"] = times["13"]
        if "32" in original:
            fields["32"] = original["32"]
        if "2" not in original and "35" in original:
            fields["35"] = original["35"]
        fields["41"] = original.get("41", self.terminal_id)
        fields["42"] = original.get("42", self.merchant_id)
        fields["49"] = original.get("49", self.currency)
        fields["90"] = de90_of(original)
        fields.update(extra)
        return fields

    def repeat(self, original: Mapping[str, str]) -> dict[str, str]:
        """The acquirer repeat (0101/0201/0221/0401/0421) of a request:
        same fields, DE7/DE11/DE12/DE13 kept, PIN block, KSN and MAC dropped
        (seal it again: a repeat carries a fresh KSN and MAC)."""
        mti = original.get("t", "")
        if mti[:3] not in _REPEATABLE:
            raise DeviceError("only 0100, 0200, 0220, 0400 and 0420 have repeats")
        fields = {k: v for k, v in original.items() if k not in _SEAL_FIELDS}
        fields["t"] = mti[:3] + "1"
        return fields

    def network(self, code: str) -> dict[str, str]:
        """0800 network management: ``001`` sign-on, ``002`` sign-off,
        ``301`` echo. Never MACed (docs/interface.md section 4)."""
        return {"t": "0800", "7": self._times()["7"], "11": self.next_stan(), "70": code,
                "41": self.terminal_id}

    def sign_on(self) -> dict[str, str]:
        return self.network("001")

    def sign_off(self) -> dict[str, str]:
        return self.network("002")

    def echo(self) -> dict[str, str]:
        return self.network("301")

    # -- sealing --------------------------------------------------------------

    def seal_message(self, fields: Mapping[str, str], pin: str | None = None,
                     mac: bool = True) -> Sealed:
        """Encode ``fields`` for this device's dialect. With a ``pin`` or
        ``mac`` (0800 is never MACed) take the next KSN into DE62, add DE52
        (format 0 PIN block under the PIN key) and the retail MAC in DE64 or
        DE128 over the encoded bytes before it (MAC-request key)."""
        out = {k: v for k, v in fields.items() if k not in _SEAL_FIELDS}
        mac = mac and may_carry_mac(out.get("t", ""))
        if pin is None and not mac:
            return Sealed(self.codec.encode(out), out, None, False)
        ksn = self.next_ksn()
        keys = self._deriver.keys(ksn)
        out[KSN_FIELD] = ksn
        if pin is not None:
            pan = pan_of(out)
            if pan is None:
                raise DeviceError("a PIN block needs the PAN (DE2 or DE35)")
            out["52"] = encrypt_pin_block(keys.pin, pin, pan, FORMAT_0).hex().upper()
        if not mac:
            return Sealed(self.codec.encode(out), out, ksn, False)
        layout = mac_layout_for(self.codec)
        name = mac_field_for_encoding(out)
        head = layout.head(out, name)
        tag = retail_mac(keys.mac_request, head, 1)
        out[name] = tag.hex().upper()
        return Sealed(head + layout.tail(name, tag), out, ksn, True)

    def seal(self, fields: Mapping[str, str], pin: str | None = None, mac: bool = True) -> bytes:
        """:meth:`seal_message`, returning only the bytes to send."""
        return self.seal_message(fields, pin, mac).raw

    def verify_response_mac(self, raw_response: bytes, request_ksn: str | None,
                            fields: Mapping[str, str] | None = None) -> MacVerdict:
        """Check the response's DE64/DE128 under the MAC-response key of the
        request's KSN. ``fields`` saves a decode when the caller has them."""
        return verify_response_mac(self.codec, self._deriver, raw_response, request_ksn,
                                   fields)


def verify_response_mac(codec: Codec, deriver: DukptDeriver, raw_response: bytes,
                        request_ksn: str | None,
                        fields: Mapping[str, str] | None = None) -> MacVerdict:
    """The verdict on a response's MAC, in the field and over the bytes the
    switch's rules name (:mod:`iso_switch.acquirer.mac`), under the
    MAC-response key of the request's KSN (constant-time comparison)."""
    decoded = codec.decode(raw_response) if fields is None else fields
    name = mac_field(decoded)
    value = decoded.get(name)
    if value is None:
        return MacVerdict.ABSENT
    covered = mac_layout_for(codec).covered(raw_response, name)
    received = parse_mac(value)
    if request_ksn is None or covered is None or received is None:
        return MacVerdict.BAD
    try:
        keys = deriver.keys(request_ksn)
    except ValueError:
        return MacVerdict.BAD
    expected = retail_mac(keys.mac_response, covered, 1)
    return MacVerdict.OK if hmac.compare_digest(expected, received) else MacVerdict.BAD
