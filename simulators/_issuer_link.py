"""What a switch sends an issuer host, built without a switch (sans-I/O).

:class:`LinkPeer` plays the switch's side of an issuer link (the messages
of docs/interface.md section 7) so the issuer simulator can be driven
directly: ``0800`` network management, forwarded ``0100``/``0200`` with
DE32 (the institution id), DE37 and a PIN block in ISO 9564 format 0 under
the zone PIN key, advices (``0120``/``0220``, completions with DE90) and
reversal advices (``0420`` with DE90 and DE95), repeats, each MACed under
the zone MAC key (retail MAC over the message through the byte before
DE64/DE128, the rules of :mod:`iso_switch.acquirer.mac`). It is what the
simulator's tests and walk-through use; the switch's own link code is a
separate implementation.

The keys come in clear from a key store (:meth:`LinkPeer.from_key_store`);
a :class:`LinkPeer` never shows them, and never shows a PIN.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Final

from iso_switch.acquirer.mac import (
    MacLayout,
    mac_field,
    mac_field_for_encoding,
    may_carry_mac,
    parse_mac,
)
from iso_switch.codec import Codec
from iso_switch.codec.subfields import OriginalData, ReplacementAmounts
from iso_switch.security import tr31
from iso_switch.security.keystore import KeyStore
from iso_switch.security.mac import retail_mac, verify_retail_mac
from iso_switch.security.pinblock import FORMAT_0, encrypt_pin_block
from simulators._device import amount_field, codec_for

DEFAULT_INSTITUTION_ID: Final = "00000099901"
DEFAULT_TERMINAL: Final = "TERM0001"
DEFAULT_MERCHANT: Final = "MERCHANT0000001"
STAN_MODULUS: Final = 1_000_000
RRN_MODULUS: Final = 10**12
# POS entry mode: magnetic stripe, terminal accepts PINs.
POS_ENTRY_MODE: Final = "021"


class LinkPeer:
    """The switch's side of one issuer link: builds and seals messages,
    checks the MACs of answers. STANs (DE11) and RRNs (DE37) count up."""

    def __init__(self, dialect: str = "ascii87-hex", *, pin_key: bytes | None = None,
                 mac_key: bytes | None = None, terminal_id: str = DEFAULT_TERMINAL,
                 merchant_id: str = DEFAULT_MERCHANT,
                 institution_id: str = DEFAULT_INSTITUTION_ID, currency: str = "156",
                 first_number: int = 1, clock: Callable[[], datetime] | None = None) -> None:
        self.codec: Codec = codec_for(dialect)
        self._layout = MacLayout.of(self.codec)
        self._pin_key = pin_key
        self._mac_key = mac_key
        self.terminal_id = terminal_id
        self.merchant_id = merchant_id
        self.institution_id = institution_id
        self.currency = currency
        self._numbers = itertools.count(first_number)
        self._clock = clock or (lambda: datetime.now(UTC))

    def __repr__(self) -> str:
        return (f"LinkPeer(terminal={self.terminal_id!r}, pin_key={self._pin_key is not None}, "
                f"mac_key={self._mac_key is not None})")

    @classmethod
    def from_key_store(cls, store: KeyStore, pin_key: str = "", mac_key: str = "",
                       **kwargs: object) -> LinkPeer:
        """A peer with the named zone PIN key (encrypt) and zone MAC key."""
        pin = (store.key_for(pin_key, (tr31.USAGE_PIN_ENCRYPTION,), tr31.MODE_ENCRYPT)
               if pin_key else None)
        mac = (store.key_for(mac_key, (tr31.USAGE_MAC_ISO9797_ALG3,), tr31.MODE_GENERATE)
               if mac_key else None)
        return cls(pin_key=pin, mac_key=mac, **kwargs)  # type: ignore[arg-type]

    def _next(self) -> int:
        return next(self._numbers)

    def _now(self) -> str:
        return self._clock().strftime("%m%d%H%M%S")

    # -- building ----------------------------------------------------------------

    def network(self, code: str) -> dict[str, str]:
        """An ``0800``: ``001`` sign-on, ``002`` sign-off, ``301`` echo."""
        return {"t": "0800", "7": self._now(), "11": f"{self._next() % STAN_MODULUS:06d}",
                "70": code}

    def request(self, mti: str, pan: str, processing_code: str, amount_minor: int, *,
                pin: str | None = None, expiry: str | None = None,
                extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """A forwarded ``0100``/``0200`` as section 7.2 lists its fields."""
        number = self._next()
        now = self._clock()
        fields = {
            "t": mti, "2": pan, "3": processing_code, "4": amount_field(amount_minor),
            "7": now.strftime("%m%d%H%M%S"), "11": f"{number % STAN_MODULUS:06d}",
            "12": now.strftime("%H%M%S"), "13": now.strftime("%m%d"), "22": POS_ENTRY_MODE,
            "32": self.institution_id, "37": f"{number % RRN_MODULUS:012d}",
            "41": self.terminal_id, "42": self.merchant_id, "49": self.currency,
        }
        if expiry is not None:
            fields["14"] = expiry
        if pin is not None:
            if self._pin_key is None:
                raise ValueError("this peer has no zone PIN key")
            fields["52"] = encrypt_pin_block(self._pin_key, pin, pan, FORMAT_0).hex().upper()
        fields.update(extra or {})
        return fields

    def repeat(self, fields: Mapping[str, str]) -> dict[str, str]:
        """The repeat of a request or advice: same fields, last MTI digit 1."""
        return {**fields, "t": fields["t"][:3] + "1"}

    def advice(self, request: Mapping[str, str], approval_code: str) -> dict[str, str]:
        """A stand-in advice (``0120`` for an ``0100``, ``0220`` for an
        ``0200``): the request's fields, its DE11, DE38, DE39 ``00``, no DE90."""
        fields = {k: v for k, v in request.items() if k not in ("52", "64", "128")}
        fields.update({"t": request["t"][:2] + "20", "38": approval_code, "39": "00"})
        return fields

    def completion(self, authorization: Mapping[str, str], amount_minor: int,
                   approval_code: str) -> dict[str, str]:
        """A ``0220`` completing ``authorization``: the final amount, a
        fresh DE11 and DE37, the authorization's DE38, DE90 naming it."""
        number = self._next()
        fields = {k: v for k, v in authorization.items() if k not in ("52", "64", "128")}
        fields.update({
            "t": "0220", "4": amount_field(amount_minor), "7": self._now(),
            "11": f"{number % STAN_MODULUS:06d}", "37": f"{number % RRN_MODULUS:012d}",
            "38": approval_code, "39": "00", "90": self.de90_of(authorization),
        })
        return fields

    def reversal_advice(self, first: Mapping[str, str],
                        actual_amount_minor: int | None = None) -> dict[str, str]:
        """A ``0420`` for the transaction whose first message was ``first``:
        fresh DE7 and DE11, its DE37, DE90 naming it, DE95 when partial."""
        fields = {k: first[k] for k in ("2", "3", "4", "32", "37", "41", "42", "49")
                  if k in first}
        fields.update({"t": "0420", "7": self._now(),
                       "11": f"{self._next() % STAN_MODULUS:06d}", "90": self.de90_of(first)})
        if actual_amount_minor is not None:
            fields["95"] = ReplacementAmounts(actual_amount_minor).to_text()
        return fields

    def de90_of(self, first: Mapping[str, str]) -> str:
        """DE90: the first message's MTI + DE11 + DE7 + institution id + zeros."""
        return OriginalData.from_parts(first["t"], first["11"], first["7"],
                                       self.institution_id).to_text()

    # -- sealing and checking ----------------------------------------------------------

    def seal(self, fields: Mapping[str, str], *, mac: bool = True) -> bytes:
        """The message's bytes, MACed under the zone MAC key when the peer
        has one (``0800`` never)."""
        out = {k: v for k, v in fields.items() if k not in ("p", "1", "64", "128")}
        if not mac or self._mac_key is None or not may_carry_mac(out["t"]):
            return self.codec.encode(out)
        name = mac_field_for_encoding(out)
        head = self._layout.head(out, name)
        return head + self._layout.tail(name, retail_mac(self._mac_key, head))

    def answer_mac_ok(self, raw: bytes) -> bool | None:
        """Whether an answer's MAC verifies; ``None`` when it carries none."""
        fields = self.codec.decode(raw)
        name = mac_field(fields)
        value = fields.get(name)
        if value is None:
            return None
        covered = self._layout.covered(raw, name)
        tag = parse_mac(value)
        if self._mac_key is None or covered is None or tag is None:
            return False
        return verify_retail_mac(self._mac_key, covered, tag)


__all__ = ["DEFAULT_INSTITUTION_ID", "LinkPeer"]
