"""The issuer simulator's host logic, sans-I/O: one message in, one
:class:`Reply` out (what to send, after how long, how often, or to close).

It plays a remote issuer as the switch's issuer links see it (the issuer
side of docs/interface.md section 7):

- network management: ``0800`` sign-on / sign-off / echo answered ``0810``
  ``00`` echoing DE7, DE11 and DE70 (never MACed); ``0810`` answers to its
  own ``0800`` are handed back to the caller (:attr:`Reply.network_answer`);
- ``0100``/``0200`` (and repeats) decided against its own cards and
  accounts: card on file (``14``), expiry (``54``), state (``41``, ``43``,
  ``05``), PIN (DE52, ISO 9564 format 0 under its zone PIN key: ``55``, and
  ``75`` after three wrong tries), currency (``57``), amount (``13``),
  funds (``51``), transfers (``57``, ``12``, ``76``). Approved ``0100``
  holds, ``0200`` posts; balance inquiries answer DE54;
- advices ``0120``/``0220`` (+ repeats) acknowledged ``00``: a stand-in
  approval takes effect, a ``0220`` with DE90 completes its authorization;
  reversal advices ``0420``/``0421`` reverse in full or down to DE95's
  amount, ``25`` for an unknown original (remembered: a later original
  with that DE37 + DE41 is declined ``05``);
- repeats and advices it has seen get the answer they got, with no second
  effect; requests by DE11 + DE37 + DE41, advices by DE11 + DE7 + DE37 +
  DE41;
- with a zone MAC key: every request but ``0800`` must carry a valid
  retail MAC (else ``63``, nothing changes) and every answer but ``0810``
  is MACed;
- rules (first match wins) force a decision or disturb the transport.

Clear PINs exist only as the configuration's test data and a function's
local while a PIN block is checked; PANs leave this module masked.
"""

from __future__ import annotations

import enum
import itertools
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from iso_switch.acquirer.mac import (
    MacLayout,
    mac_field,
    mac_field_for_encoding,
    may_carry_mac,
    parse_mac,
)
from iso_switch.codec import Codec
from iso_switch.codec.masking import mask_pan
from iso_switch.codec.subfields import (
    Balance,
    SubfieldError,
    build_de54,
    de95_actual_amount,
    parse_de90,
)
from iso_switch.codes import ResponseCode, TxnType
from iso_switch.security.errors import PinBlockError
from iso_switch.security.mac import retail_mac, verify_retail_mac
from iso_switch.security.pinblock import FORMAT_0, decrypt_pin_block
from simulators._issuer_config import CardConfig, IssuerConfig, LinkKeys, Rule

RC = ResponseCode
#: Seen requests and advices, and transactions, remembered (oldest forgotten).
SEEN_MAX: Final = 100_000
TXNS_MAX: Final = 100_000
PIN_TRIES_MAX: Final = 3
NETWORK_CODES: Final = frozenset({"001", "002", "301"})
#: What a switch sends on an issuer link besides 08xx (with repeats).
ACCEPTED_MTIS: Final = frozenset({"0100", "0101", "0200", "0201", "0120", "0121", "0220",
                                  "0221", "0420", "0421"})
#: Fields echoed from a request into its answer when present.
ECHOED: Final = ("2", "3", "4", "7", "11", "12", "13", "32", "37", "41", "42", "49", "90",
                 "95", "102", "103")
REQUEST_MANDATORY: Final = ("2", "3", "4", "7", "11", "37", "41", "49")
ADVICE_MANDATORY: Final = ("2", "3", "4", "7", "11", "37", "41", "49")
REVERSAL_MANDATORY: Final = ("7", "11", "37", "41")
ALLOWED_TYPES: Final = {
    "01": frozenset({TxnType.PURCHASE, TxnType.CASH_WITHDRAWAL, TxnType.BALANCE_INQUIRY,
                     TxnType.BALANCE_INQUIRY_ALT}),
    "02": frozenset(TxnType),
}
PIN_REQUIRED: Final = frozenset({TxnType.CASH_WITHDRAWAL, TxnType.BALANCE_INQUIRY,
                                 TxnType.BALANCE_INQUIRY_ALT, TxnType.FUNDS_TRANSFER})
INQUIRIES: Final = frozenset({TxnType.BALANCE_INQUIRY, TxnType.BALANCE_INQUIRY_ALT})
DE38_MODULUS: Final = 1_000_000
STAN_MODULUS: Final = 1_000_000


class Effect(enum.StrEnum):
    """What an approved transaction did to the accounts (and undoes on reversal)."""

    HOLD = "hold"  # available balance reduced (authorization)
    DEBIT = "debit"  # purchase, withdrawal, completion
    CREDIT = "credit"  # refund
    TRANSFER = "transfer"  # source debited, destination credited
    NONE = "none"  # balance inquiry, declines


@dataclass(slots=True)
class Account:
    number: str
    currency: str
    balance_minor: int
    held_minor: int = 0

    @property
    def available_minor(self) -> int:
        return self.balance_minor - self.held_minor


@dataclass(slots=True)
class Txn:
    """One transaction the issuer knows, by DE37 + DE41 and by its first
    message (MTI + DE11 + DE7, what DE90 names)."""

    ref: tuple[str, str]
    first: tuple[str, str, str]
    effect: Effect
    account: str
    amount_minor: int
    approved: bool
    in_force_minor: int = 0  # the amount still held / posted
    to_account: str = ""
    approval_code: str = ""


@dataclass(frozen=True, slots=True)
class Reply:
    """What the transport does with one incoming message: send ``raw``
    (``None``: nothing) ``times`` times after ``delay_s``, then close when
    ``close``. ``network_answer`` is an ``0810`` to the simulator's own
    ``0800``. ``note`` is a log text with no PAN."""

    raw: bytes | None = field(default=None, repr=False)
    delay_s: float = 0.0
    times: int = 1
    close: bool = False
    network_answer: Mapping[str, str] | None = field(default=None, repr=False)
    note: str = ""


def response_mti(mti: str) -> str:
    """The answer's MTI: function digit + 1, repeat digit dropped (0421 -> 0430)."""
    return mti[:2] + str(int(mti[2]) + 1) + "0"


def base_mti(mti: str) -> str:
    return mti[:3] + "0"


class IssuerHost:
    """The simulated issuer's state and decisions (one per simulator)."""

    def __init__(self, config: IssuerConfig, keys: LinkKeys, codec: Codec, *,
                 clock: Callable[[], datetime] | None = None,
                 recorder: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.config = config
        self._keys = keys
        self.codec = codec
        self._layout = MacLayout.of(codec)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._recorder = recorder or (lambda entry: None)
        self.cards: dict[str, CardConfig] = {c.pan: c for c in config.cards}
        self.accounts: dict[str, Account] = {}
        for card in config.cards:
            self.accounts.setdefault(card.account, Account(card.account, card.currency,
                                                           card.balance_minor))
        self._pin_tries: dict[str, int] = {}
        self._seen: OrderedDict[tuple[str, ...], dict[str, str]] = OrderedDict()
        self._txns: OrderedDict[tuple[str, str], Txn] = OrderedDict()
        self._by_first: dict[tuple[str, str, str, str], tuple[str, str]] = {}
        self._reversed_unknown: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._approval_codes = itertools.count(1)
        self._stans = itertools.count(1)
        self.duplicates = 0

    def __repr__(self) -> str:
        return (f"IssuerHost(id={self.config.id!r}, cards={len(self.cards)}, "
                f"txns={len(self._txns)})")

    # -- entry points -----------------------------------------------------------

    def handle(self, message: bytes) -> Reply:
        """Decide one message (a whole frame's payload). Raises the codec's
        :class:`~iso_switch.codec.CodecError` for bytes that do not decode:
        the transport closes that connection."""
        fields = self.codec.decode(message)
        mti = fields.get("t", "")
        if mti == "0800":
            return self._network(fields)
        if mti == "0810":
            return Reply(network_answer=fields, note="0810 to our 0800")
        if mti not in ACCEPTED_MTIS:
            return Reply(note=f"MTI {mti} ignored")
        return self._financial(fields, message)

    def network_request(self, code: str) -> tuple[dict[str, str], bytes]:
        """An ``0800`` of the simulator's own (``301`` echo, ``002``
        sign-off, ``001`` sign-on) with a fresh DE11; never MACed."""
        stan = f"{next(self._stans) % STAN_MODULUS or 1:06d}"
        fields = {"t": "0800", "7": self._clock().strftime("%m%d%H%M%S"), "11": stan,
                  "70": code}
        return fields, self.codec.encode(fields)

    def account_of(self, pan: str) -> Account:
        """The account behind a card (tests reconcile balances with it)."""
        return self.accounts[self.cards[pan].account]

    # -- network management -----------------------------------------------------

    def _network(self, fields: Mapping[str, str]) -> Reply:
        answer = {k: fields[k] for k in ("7", "11", "41", "70") if k in fields}
        answer["t"] = "0810"
        if "11" not in fields or "70" not in fields:
            answer["39"] = RC.FORMAT_ERROR
        elif fields["70"] in NETWORK_CODES:
            answer["39"] = RC.APPROVED
        else:
            answer["39"] = RC.INVALID_TRANSACTION
        return Reply(raw=self.codec.encode(answer), note=f"0800 {fields.get('70', '?')}")

    # -- 01xx / 02xx / 04xx -----------------------------------------------------

    def _financial(self, fields: dict[str, str], message: bytes) -> Reply:
        mti = fields["t"]
        if not self._mac_ok(fields, message):
            answer = self._answer(fields, RC.SECURITY_VIOLATION)
            self._record("declined", fields, answer)
            return Reply(raw=self._encode(answer), note=f"{mti} bad or missing MAC: 63")
        seen_key = self._seen_key(fields)
        stored = self._seen.get(seen_key)
        if stored is not None:
            self.duplicates += 1
            return Reply(raw=self._encode({**stored, "t": response_mti(mti)}),
                         note=f"{mti} seen before: same answer, no effect")
        rule = self._rule_for(fields)
        answer = self._decide(fields, rule)
        self._remember(seen_key, answer)
        return self._reply(answer, rule, mti)

    def _seen_key(self, fields: Mapping[str, str]) -> tuple[str, ...]:
        mti = fields["t"]
        parts = (mti[:3], fields.get("11", ""), fields.get("37", ""), fields.get("41", ""))
        if mti[2] == "0":  # requests: an original and its repeat share DE11+DE37+DE41
            return parts
        return (*parts, fields.get("7", ""))

    def _remember(self, key: tuple[str, ...], answer: dict[str, str]) -> None:
        if answer.get("39") == RC.FORMAT_ERROR:
            return  # a malformed message never blocks the genuine one
        self._seen[key] = answer
        if len(self._seen) > SEEN_MAX:
            self._seen.popitem(last=False)

    def _rule_for(self, fields: Mapping[str, str]) -> Rule | None:
        amount = fields.get("4", "")
        amount_minor = int(amount) if amount.isascii() and amount.isdigit() else None
        pan = fields.get("2", "")
        for rule in self.config.rules:
            if rule.matches(fields["t"], pan, amount_minor):
                return rule
        return None

    def _reply(self, answer: dict[str, str], rule: Rule | None, mti: str) -> Reply:
        note = f"{mti} answered {answer.get('39')}"
        if rule is None or rule.action in ("approve", "decline"):
            return Reply(raw=self._encode(answer), note=note)
        action = rule.action
        if action == "delay":
            return Reply(raw=self._encode(answer), delay_s=rule.delay_ms / 1000,
                         note=f"{note} after {rule.delay_ms} ms")
        if action == "drop":
            return Reply(note=f"{mti} decided {answer.get('39')}, answer dropped (rule)")
        if action == "close":
            return Reply(close=True, note=f"{mti} decided {answer.get('39')}, closing (rule)")
        if action == "bad_mac":
            return Reply(raw=self._encode(answer, bad_mac=True), note=f"{note} with a bad MAC")
        return Reply(raw=self._encode(answer), times=2, note=f"{note} twice")

    def _decide(self, fields: dict[str, str], rule: Rule | None) -> dict[str, str]:
        mti = fields["t"]
        if mti[:2] == "04":
            return self._reversal(fields, rule)
        if mti[2] == "2":
            return self._advice(fields, rule)
        return self._request(fields, rule)

    # -- MACs ---------------------------------------------------------------------

    def _mac_ok(self, fields: Mapping[str, str], message: bytes) -> bool:
        key = self._keys.mac_key
        if key is None:
            return True
        name = mac_field(fields)
        value = fields.get(name)
        covered = self._layout.covered(message, name)
        tag = parse_mac(value) if value is not None else None
        return tag is not None and covered is not None and verify_retail_mac(key, covered, tag)

    def _encode(self, answer: Mapping[str, str], *, bad_mac: bool = False) -> bytes:
        fields = {k: v for k, v in answer.items() if k not in ("p", "1", "64", "128")}
        key = self._keys.mac_key
        if key is None or not may_carry_mac(fields["t"]):
            return self.codec.encode(fields)
        name = mac_field_for_encoding(fields)
        head = self._layout.head(fields, name)
        tag = retail_mac(key, head)
        if bad_mac:
            tag = tag[:-1] + bytes((tag[-1] ^ 0x01,))
        return head + self._layout.tail(name, tag)

    # -- answers and the record ---------------------------------------------------

    def _answer(self, fields: Mapping[str, str], rc: str, approval_code: str = "",
                **extra: str) -> dict[str, str]:
        answer = {k: fields[k] for k in ECHOED if k in fields}
        answer["t"] = response_mti(fields["t"])
        if approval_code:
            answer["38"] = approval_code
        answer["39"] = str(rc)
        answer.update(extra)
        return answer

    def _approval_code(self) -> str:
        return f"{next(self._approval_codes) % DE38_MODULUS:06d}"

    def _record(self, event: str, fields: Mapping[str, str], answer: Mapping[str, str],
                **extra: Any) -> None:
        amount = fields.get("4", "")
        entry: dict[str, Any] = {
            "time": self._clock().isoformat(timespec="milliseconds"), "event": event,
            "mti": fields.get("t", ""), "pan": mask_pan(fields.get("2", "")),
            "de37": fields.get("37", ""), "de41": fields.get("41", ""),
            "de11": fields.get("11", ""), "de3": fields.get("3", ""),
            "amount_minor": int(amount) if amount.isascii() and amount.isdigit() else None,
            "de39": answer.get("39", ""), "de38": answer.get("38", ""),
        }
        entry.update(extra)
        self._recorder(entry)

    # -- 0100 / 0200 ----------------------------------------------------------------

    def _request(self, fields: dict[str, str], rule: Rule | None) -> dict[str, str]:
        if any(k not in fields for k in REQUEST_MANDATORY):
            answer = self._answer(fields, RC.FORMAT_ERROR)
            self._record("declined", fields, answer)
            return answer
        ref = (fields["37"], fields["41"])
        if ref in self._reversed_unknown:
            rc: str = RC.DO_NOT_HONOUR  # reversed before it arrived
        elif rule is not None and rule.action == "decline":
            rc = rule.code
        elif rule is not None and rule.action == "approve":
            rc = RC.APPROVED
        else:
            rc = self._check(fields)
        return self._conclude(fields, rc)

    def _conclude(self, fields: dict[str, str], rc: str) -> dict[str, str]:
        """Apply an approval's effect (or none), keep the transaction, answer."""
        kind = fields["3"][:2]
        card = self.cards.get(fields["2"])
        approved = rc == RC.APPROVED
        code = self._approval_code() if approved else ""
        extra: dict[str, str] = {}
        txn = _txn_of(fields, Effect.NONE, card.account if card else "", approved, code)
        if approved and card is not None:
            if kind in INQUIRIES:
                extra["54"] = self._balances(fields, self.accounts[card.account])
            else:
                txn.effect = _effect_for(fields["t"], kind)
                self._apply(txn, txn.amount_minor)
        self._keep(txn)
        answer = self._answer(fields, rc, code, **extra)
        self._record("approved" if approved else "declined", fields, answer)
        return answer

    def _check(self, fields: Mapping[str, str]) -> str:
        """The issuer's checks of a 0100/0200, in order; ``00`` when all pass."""
        kind = fields["3"][:2]
        if kind not in ALLOWED_TYPES[fields["t"][:2]]:
            return RC.INVALID_TRANSACTION
        card = self.cards.get(fields["2"])
        if card is None:
            return RC.INVALID_CARD_NUMBER
        if card.expiry < self._clock().strftime("%y%m"):
            return RC.EXPIRED_CARD
        state_rc = {"lost": RC.LOST_CARD, "stolen": RC.STOLEN_CARD,
                    "blocked": RC.DO_NOT_HONOUR}.get(card.state)
        if state_rc is not None:
            return state_rc
        pin_rc = self._check_pin(card, fields.get("52"), kind in PIN_REQUIRED)
        if pin_rc is not None:
            return pin_rc
        account = self.accounts[card.account]
        if fields["49"] != account.currency:
            return RC.NOT_PERMITTED_TO_CARDHOLDER
        return self._check_amount(fields, kind, account, card)

    def _check_amount(self, fields: Mapping[str, str], kind: str, account: Account,
                      card: CardConfig) -> str:
        if kind in INQUIRIES:
            return RC.APPROVED
        amount = _amount(fields)
        if amount <= 0:
            return RC.INVALID_AMOUNT
        if kind == TxnType.FUNDS_TRANSFER:
            source = fields.get("102", card.account)
            target = self.accounts.get(fields.get("103", ""))
            if source != card.account:
                return RC.NOT_PERMITTED_TO_CARDHOLDER
            if target is None or target.currency != account.currency:
                return RC.DESTINATION_ACCOUNT_INVALID
            if target.number == source:
                return RC.INVALID_TRANSACTION
        if kind != TxnType.REFUND and amount > account.available_minor:
            return RC.INSUFFICIENT_FUNDS
        return RC.APPROVED

    def _check_pin(self, card: CardConfig, block_hex: str | None, required: bool) -> str | None:
        """``None`` when the PIN step passes; ``55`` or ``75`` otherwise."""
        tries = self._pin_tries.get(card.pan, 0)
        if block_hex is None:
            if not required:
                return None
            return RC.PIN_TRIES_EXCEEDED if tries >= PIN_TRIES_MAX else RC.INCORRECT_PIN
        if tries >= PIN_TRIES_MAX:
            return RC.PIN_TRIES_EXCEEDED
        key = self._keys.pin_key
        if key is None:
            return RC.INCORRECT_PIN  # no zone PIN key: a PIN cannot be verified
        try:
            correct = decrypt_pin_block(key, bytes.fromhex(block_hex), card.pan,
                                        FORMAT_0) == card.pin
        except (PinBlockError, ValueError):
            return RC.INCORRECT_PIN  # not a format 0 block: not a try
        if correct:
            self._pin_tries.pop(card.pan, None)
            return None
        self._pin_tries[card.pan] = tries + 1
        return RC.INCORRECT_PIN

    def _balances(self, fields: Mapping[str, str], account: Account) -> str:
        account_type = fields["3"][2:4] or "00"
        return build_de54([
            Balance(account_type, "01", account.currency, account.balance_minor),
            Balance(account_type, "02", account.currency, account.available_minor),
        ])

    # -- effects ----------------------------------------------------------------------

    def _apply(self, txn: Txn, amount_minor: int) -> None:
        """Put ``amount_minor`` more of ``txn`` in force (negative: undo)."""
        account = self.accounts.get(txn.account)
        if account is None or txn.effect is Effect.NONE:
            return
        if txn.effect is Effect.HOLD:
            account.held_minor += amount_minor
        elif txn.effect is Effect.DEBIT:
            account.balance_minor -= amount_minor
        elif txn.effect is Effect.CREDIT:
            account.balance_minor += amount_minor
        else:
            account.balance_minor -= amount_minor
            target = self.accounts.get(txn.to_account)
            if target is not None:  # a forced transfer may name no account of ours
                target.balance_minor += amount_minor
        txn.in_force_minor += amount_minor

    def _take_effect(self, txn: Txn) -> None:
        """An advised approval: its whole amount in force, and kept."""
        self._apply(txn, txn.amount_minor)
        self._keep(txn)

    def _keep(self, txn: Txn) -> None:
        self._txns[txn.ref] = txn
        mti, stan, sent = txn.first
        self._by_first[(base_mti(mti), stan, sent, txn.ref[1])] = txn.ref
        if len(self._txns) > TXNS_MAX:
            old = self._txns.popitem(last=False)[1]
            self._by_first.pop((base_mti(old.first[0]), old.first[1], old.first[2],
                                old.ref[1]), None)

    def _find(self, fields: Mapping[str, str]) -> Txn | None:
        """The transaction an advice or reversal names: by DE37 + DE41, else
        by DE90 (the first message's MTI + DE11 + DE7) + DE41."""
        txn = self._txns.get((fields.get("37", ""), fields.get("41", "")))
        if txn is not None or "90" not in fields:
            return txn
        try:
            original = parse_de90(fields["90"])
        except SubfieldError:
            return None
        ref = self._by_first.get((base_mti(original.mti), original.stan, original.transmitted,
                                  fields.get("41", "")))
        return None if ref is None else self._txns.get(ref)

    # -- advices ------------------------------------------------------------------------

    def _refused(self, fields: Mapping[str, str], mandatory: tuple[str, ...],
                 rule: Rule | None, event: str) -> dict[str, str] | None:
        """An advice's answer when it is malformed (``30``) or a decline
        rule refuses it (its code, recorded as ``event``); else ``None``."""
        if any(k not in fields for k in mandatory):
            return self._answer(fields, RC.FORMAT_ERROR)
        if rule is not None and rule.action == "decline":
            answer = self._answer(fields, rule.code)
            self._record(event, fields, answer)
            return answer
        return None

    def _advice(self, fields: dict[str, str], rule: Rule | None) -> dict[str, str]:
        refused = self._refused(fields, ADVICE_MANDATORY, rule, "advice-refused")
        if refused is not None:
            return refused
        if fields["t"][1] == "2" and "90" in fields:
            return self._completion(fields)
        known = self._txns.get((fields["37"], fields["41"]))
        card = self.cards.get(fields["2"])
        if known is not None and known.approved:
            pass  # its approval is already in force here
        elif card is not None:
            self._take_effect(_txn_of(fields, _effect_for(fields["t"], fields["3"][:2]),
                                      card.account))
        answer = self._answer(fields, RC.APPROVED)
        self._record("advised", fields, answer, de38=fields.get("38", ""))
        return answer

    def _completion(self, fields: dict[str, str]) -> dict[str, str]:
        """A ``0220`` naming its authorization in DE90: the hold goes, the
        final amount (DE4) is posted. Acknowledged even when the
        authorization is unknown here (the sale happened)."""
        auth = self._find({"90": fields["90"], "41": fields["41"]})
        if auth is not None and auth.effect is Effect.HOLD:
            self._apply(auth, -auth.in_force_minor)
        card = self.cards.get(fields["2"])
        if card is not None:
            self._take_effect(_txn_of(fields, Effect.DEBIT, card.account))
        answer = self._answer(fields, RC.APPROVED)
        self._record("completed", fields, answer, de38=fields.get("38", ""),
                     authorization_known=auth is not None)
        return answer

    # -- reversal advices -------------------------------------------------------------

    def _reversal(self, fields: dict[str, str], rule: Rule | None) -> dict[str, str]:
        refused = self._refused(fields, REVERSAL_MANDATORY, rule, "reversal-refused")
        if refused is not None:
            return refused
        txn = self._find(fields)
        if txn is None:
            self._reversed_unknown[(fields["37"], fields["41"])] = None
            if len(self._reversed_unknown) > SEEN_MAX:
                self._reversed_unknown.popitem(last=False)
            answer = self._answer(fields, RC.ORIGINAL_NOT_FOUND)
            self._record("reversal-unknown", fields, answer)
            return answer
        target = 0  # in full, or down to DE95's actual amount
        if "95" in fields:
            try:
                target = de95_actual_amount(fields["95"])
            except SubfieldError:
                return self._answer(fields, RC.FORMAT_ERROR)
        if target > txn.amount_minor:
            answer = self._answer(fields, RC.INVALID_AMOUNT)
            self._record("reversal-refused", fields, answer)
            return answer
        reversed_minor = max(0, txn.in_force_minor - target) if txn.approved else 0
        if reversed_minor:
            self._apply(txn, -reversed_minor)
        answer = self._answer(fields, RC.APPROVED)
        self._record("reversed", fields, answer, reversed_minor=reversed_minor,
                     in_force_minor=txn.in_force_minor)
        return answer


def _txn_of(fields: Mapping[str, str], effect: Effect, account: str, approved: bool = True,
            approval_code: str | None = None) -> Txn:
    """The transaction a message starts, known by its DE37 + DE41 and by
    its own MTI + DE11 + DE7 (what a later DE90 names)."""
    return Txn(ref=(fields["37"], fields["41"]), first=(fields["t"], fields["11"], fields["7"]),
               effect=effect, account=account, amount_minor=_amount(fields), approved=approved,
               to_account=fields.get("103", ""),
               approval_code=fields.get("38", "") if approval_code is None else approval_code)


def _amount(fields: Mapping[str, str]) -> int:
    """DE4 in minor units; 0 when absent or not digits."""
    amount = fields.get("4", "")
    return int(amount) if amount.isascii() and amount.isdigit() else 0


def _effect_for(mti: str, kind: str) -> Effect:
    if kind in INQUIRIES:
        return Effect.NONE
    if mti[:2] == "01":
        return Effect.HOLD
    if kind == TxnType.REFUND:
        return Effect.CREDIT
    if kind == TxnType.FUNDS_TRANSFER:
        return Effect.TRANSFER
    return Effect.DEBIT


__all__ = ["Account", "Effect", "IssuerHost", "Reply", "Txn", "base_mti", "response_mti"]
