"""The processor: decides each request in the order of docs/interface.md
section 3 and moves the money, exactly once, inside group-committed batches.

Not thread-safe: one writer thread calls :meth:`Processor.process_batch`.
Reference data (terminals, merchants, issuers, BIN routes, blacklists) is
cached in memory and reloaded when another process (the admin CLI) commits,
which ``PRAGMA data_version`` reveals. Everything else is read from the
store inside the batch's transaction, so a decision always sees the effects
of the requests before it, in the same batch or earlier ones.
"""

from __future__ import annotations

import logging
import secrets
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from iso_switch.acquirer import CODES_BY_CLASS, mac_required, terminal_allows
from iso_switch.codec.masking import mask_pan
from iso_switch.issuer import (
    STATE_RESPONSE,
    amount_fires,
    card_expired,
    pan_hash,
    pan_valid,
    pin_step,
    velocity_fires,
)
from iso_switch.ledger import (
    Account,
    AccountClosed,
    Entry,
    HoldState,
    InsufficientFunds,
    SqliteLedgerStore,
    TransferKind,
    TxnRow,
    parse_ts,
    ts,
)
from iso_switch.ledger.records import CardRow, MerchantRow, TerminalRow
from iso_switch.processor.fields import (
    ORIGINAL_CLASSES,
    REVERSAL_CLASSES,
    FormatError,
    Parsed,
    echo,
    make_key,
    parse_request,
    response_mti,
    valid_mmddhhmmss,
)
from iso_switch.processor.model import (
    CommitFailed,
    Outcome,
    PinHsm,
    ProcessorConfig,
    Request,
    utc_now,
)
from iso_switch.routing import ON_US_ISSUER, BinTable
from iso_switch.security.errors import SecurityError
from iso_switch.security.hsm import PinVerificationData
from iso_switch.security.ksn import parse_ksn
from iso_switch.security.replay import ReplayState, check_replay

LOG = logging.getLogger(__name__)

DEBIT_CODES = frozenset({"00", "01", "40"})
AMOUNT_CODES = frozenset({"00", "01", "20", "40"})
PIN_REQUIRED_CODES = frozenset({"01", "30", "31", "40"})
INQUIRY_CODES = frozenset({"30", "31"})
NETWORK_CODES = frozenset({"001", "002", "301"})
# Bounds on in-memory risk state: recent request times kept per card, and
# cards tracked before the whole map is dropped (velocity is best effort).
VELOCITY_TIMES_PER_CARD_MAX = 64
VELOCITY_CARDS_MAX = 100_000
RRN_SEQUENCE_MODULUS = 10**8
APPROVAL_CODE_MODULUS = 10**6
# Draws before giving up on a free code for a card's day (each collides with
# probability below 10**-4 at the daily limits, so 16 never run out).
APPROVAL_CODE_DRAWS_MAX = 16
# Remembered reversals (of originals not yet seen) held in memory as a
# negative filter; past this many the filter is off and every original
# looks its key up in the store, as without a filter.
REMEMBERED_FILTER_MAX = 1_000_000


def answer_0800(fields: Mapping[str, str]) -> dict[str, str]:
    """0810 for a network management request: sign-on (001), sign-off (002)
    and echo (301) are acknowledged (00); another DE70 is 12; a missing
    DE7, DE11 or DE70, a DE7 that is not MMDDhhmmss or a DE11 that is not
    6 digits is 30. Never MACed, never deduplicated."""
    f = fields
    response: dict[str, str] = {"t": "0810", **{k: f[k] for k in ("7", "11", "41", "70") if k in f}}
    if not all(f.get(k, "").strip() for k in ("7", "11", "70")) or not (
        valid_mmddhhmmss(f["7"]) and len(f["11"]) == 6 and f["11"].isascii()
        and f["11"].isdigit()
    ):
        response["39"] = "30"
    elif f["70"] not in NETWORK_CODES:
        response["39"] = "12"
    else:
        response["39"] = "00"
    return response


class _Unstored(Exception):
    """A decision that must not be stored under the key (30 / 63)."""

    def __init__(self, rc: str, decision: str) -> None:
        super().__init__(decision)
        self.rc = rc
        self.decision = decision


@dataclass(slots=True)
class _Work:
    """Scratch state of one request's decision."""

    p: Parsed
    request: Request
    business_day: str
    rc: str = "00"
    card: CardRow | None = None
    state: str = "declined"
    debit: int | None = None
    credit: int | None = None
    hold_id: int | None = None
    effective: int = 0
    counts_daily: bool = False
    de54: str = ""
    orig_key: str = ""
    pan_masked: str = ""
    # A PIN block decoded under the KSN's keys: the KSN authenticated.
    pin_decoded: bool = False
    # (total, count) of the card's approved debits, read with its daily usage.
    usual: tuple[int, int] | None = None


class Processor:
    """Decides requests; see the module docstring. Single writer only."""

    def __init__(
        self,
        store: SqliteLedgerStore,
        hsm: PinHsm,
        config: ProcessorConfig | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.store = store
        self.hsm = hsm
        self.config = config or ProcessorConfig()
        self.clock = clock
        self.zone = ZoneInfo(self.config.timezone)
        self._data_version = -1
        self._seq = 0
        self._last_prune: datetime | None = None
        self._velocity: dict[int, deque[datetime]] = {}
        self._velocity_loaded = False
        epoch = datetime.fromtimestamp(0, self.zone)
        self._local_last: tuple[datetime | None, datetime] = (None, epoch)
        self.reload()

    # -- caches ------------------------------------------------------------

    def reload(self) -> None:
        """Re-read reference data (after an admin change)."""
        store = self.store
        self.terminals: dict[str, TerminalRow] = store.load_terminals()
        self.merchants: dict[str, MerchantRow] = store.load_merchants()
        self.issuers = store.load_issuers()
        self.bins = BinTable(store.load_routes())
        self.blacklist = store.load_blacklist()
        # A superset of the original keys in remembered_reversals: keys are
        # added when remembered and never dropped (a rolled back or pruned
        # one only costs a lookup); another process's commit reloads it.
        # None: too many to hold, look every original up.
        self._remembered: set[str] | None = store.remembered_orig_keys(REMEMBERED_FILTER_MAX)
        self._data_version = store.data_version()

    def _refresh(self) -> None:
        if self.store.data_version() != self._data_version:
            self.reload()

    # -- the batch -----------------------------------------------------------

    def process(self, request: Request) -> Outcome:
        return self.process_batch([request])[0]

    def process_batch(self, requests: Sequence[Request]) -> list[Outcome]:
        """Decide every request in order inside one transaction, commit
        (fsync), then return the outcomes. A request that fails unexpectedly
        rolls back to its savepoint and answers 96 with nothing posted. If
        the commit fails, :class:`CommitFailed` is raised and nothing of the
        batch is durable."""
        store = self.store
        try:
            self._refresh()
            store.begin()
        except Exception as exc:
            store.rollback()
            raise CommitFailed("could not open the batch transaction") from exc
        outcomes: list[Outcome] = []
        try:
            self._seq = max(self._seq, store.max_txn_seq())
            self._housekeeping(self.clock())
            if not self._velocity_loaded:
                self._load_velocity(self.clock())
            for request in requests:
                store.savepoint()
                try:
                    outcome = self._decide(request)
                    store.release()
                except Exception:
                    LOG.exception("request failed; answered 96")
                    store.rollback_to()
                    outcome = self._malfunction(request)
                outcomes.append(outcome)
            store.commit()
        except Exception as exc:
            store.rollback()
            raise CommitFailed("the batch did not commit") from exc
        return outcomes

    def recall(self, requests: Sequence[Request]) -> list[Outcome | None]:
        """Read back, without deciding or storing anything, what is stored
        for a batch a lost ledger process had: per request the answer a
        repeat of it gets (its stored decision), or None where nothing is
        stored for it (or it could not be shown: wrong MAC, other content)."""
        self._refresh()
        return [self._recalled(request) for request in requests]

    def _recalled(self, request: Request) -> Outcome | None:
        try:
            p = parse_request(request.fields, self.config.pan_hash_key)
        except FormatError:
            return None
        if _mac_refused(request, p.mti, self.terminals.get(p.terminal)):
            return None
        stored = self.store.get_txn(p.key)
        if stored is None or stored.content != p.content:
            return None
        return self._respond(request, p, stored, request.mac_status == "valid", "recalled")

    def network_management(self, request: Request) -> Outcome:
        response = answer_0800(request.fields)
        return Outcome(response, False, self._log(request.fields, response["39"], "network"))

    def _load_velocity(self, now: datetime) -> None:
        """The velocity rule counts in memory; on the first batch after a
        start (a restarted switch or ledger process) it takes the last
        window's debit requests from the journal, so a restart does not
        give every card a fresh count. What the journal cannot tell is left
        out: a debit that passed the rules and then failed to post (57 for
        a closed account, 96) counted in memory but is not reloaded."""
        since = now - self.config.risk.velocity_window
        for card_id, received_at in self.store.recent_debit_requests(since):
            self._recent_debits(card_id).append(parse_ts(received_at))
        self._velocity_loaded = True

    def _recent_debits(self, card_id: int) -> deque[datetime]:
        """The times of the card's latest debit requests (the velocity rule)."""
        recent = self._velocity.get(card_id)
        if recent is None:
            recent = self._velocity[card_id] = deque(maxlen=VELOCITY_TIMES_PER_CARD_MAX)
        return recent

    def _housekeeping(self, now: datetime) -> None:
        """Expire due holds, and prune old keys once per prune interval."""
        store = self.store
        store.savepoint()
        try:
            for hold_id in store.due_holds(now):
                self._expire_hold(hold_id, now)
            if self._last_prune is None or now - self._last_prune >= self.config.prune_interval:
                store.prune(now - self.config.retention)
                self._last_prune = now
            store.release()
        except Exception:
            LOG.exception("housekeeping failed; retried with the next batch")
            store.rollback_to()

    def _expire_hold(self, hold_id: int, now: datetime) -> None:
        store = self.store
        txn = store.txn_by_hold(hold_id)
        store.expire_holds([hold_id], now)
        if txn is None:
            return
        store.update_txn(txn.key, state="expired", effective_minor=0, hold_id=hold_id)
        if txn.counts_daily and txn.card_id is not None:
            store.add_daily_usage(txn.card_id, txn.business_day, -txn.effective_minor, -1)
        review = store.review_by_txn(txn.key)
        if review is not None and review[3] == "pending":
            store.set_review(review[0], "expired", hold_id, now)

    # -- one request -----------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _local(self, when: datetime) -> datetime:
        """``when`` in the switch's time zone; a request asks up to three
        times (RRN, business day, card expiry), so the last one is kept."""
        cached = self._local_last
        if cached[0] is when:
            return cached[1]
        local = when.astimezone(self.zone)
        self._local_last = (when, local)
        return local

    def _rrn(self, seq: int, when: datetime) -> str:
        local = self._local(when)
        year_day = local.toordinal() - date(local.year, 1, 1).toordinal() + 1
        return f"{local.year % 10}{year_day:03d}{seq % RRN_SEQUENCE_MODULUS:08d}"

    def _auth_code(self, card_id: int | None, business_day: str) -> str:
        """A random approval code (DE38), unique for the card on the business
        day: an approval code must not be guessable from the RRN, and one
        that repeats for a card could pass a forged completion as genuine."""
        for _ in range(APPROVAL_CODE_DRAWS_MAX):
            code = f"{secrets.randbelow(APPROVAL_CODE_MODULUS):06d}"
            if card_id is None or not self.store.auth_code_used(card_id, business_day, code):
                return code
        raise RuntimeError("no free approval code for the card today")  # ~never: 10**6 codes

    def _log(
        self, f: Mapping[str, str], rc: str, decision: str, pan_masked: str = ""
    ) -> dict[str, object]:
        amount = f.get("4", "")
        return {
            "mti": f.get("t", ""),
            "stan": f.get("11", ""),
            "terminal": f.get("41", ""),
            "processing_code": f.get("3", ""),
            "amount_minor": int(amount) if amount.isdigit() else None,
            "pan_masked": pan_masked,
            "rc": rc,
            "decision": decision,
        }

    def _plain(self, request: Request, rc: str, decision: str, pan_masked: str = "",
               mac_ok: bool = False) -> Outcome:
        """An answer that stores nothing: 30, 63, 94, 96."""
        fields = request.fields
        mti = fields.get("t", "")
        response = {"t": response_mti(mti), **echo(fields)}
        if mti[:2] in ("01", "02", "04"):
            response["37"] = self._rrn(self._next_seq(), request.received_at)
        response["39"] = rc
        return Outcome(
            response, mac_ok and rc not in ("30", "63"),
            self._log(fields, rc, decision, pan_masked),
        )

    def _malfunction(self, request: Request) -> Outcome:
        return self._plain(request, "96", "malfunction", mac_ok=request.mac_status == "valid")

    def _decide(self, request: Request) -> Outcome:
        fields = request.fields
        if fields.get("t", "") in ("0800", "0801"):
            return self.network_management(request)
        try:
            p = parse_request(fields, self.config.pan_hash_key)
        except FormatError:
            return self._plain(request, "30", "format")
        pan_masked = mask_pan(p.pan) if p.pan else ""
        terminal = self.terminals.get(p.terminal)
        if _mac_refused(request, p.mti, terminal):
            return self._plain(request, "63", "mac", pan_masked)
        mac_ok = request.mac_status == "valid"
        store = self.store
        stored = store.get_txn(p.key)
        if stored is not None:
            if stored.content != p.content:
                return self._plain(request, "94", "duplicate", pan_masked, mac_ok)
            return self._respond(request, p, stored, mac_ok, "stored")
        work = _Work(p, request, self._business_day(request.received_at), pan_masked=pan_masked)
        replay: tuple[str, ReplayState] | None = None
        remembered = p.cls in ORIGINAL_CLASSES and self._maybe_remembered(p.key) and (
            store.remembered_reversal(p.key) is not None
        )
        if p.ksn is not None:
            try:
                ksn = parse_ksn(p.ksn)
            except SecurityError:
                return self._plain(request, "63", "ksn", pan_masked)
            if not self.config.device_bindings.allows(ksn, p.terminal):
                return self._plain(request, "63", "device-binding", pan_masked)
            previous = store.get_ksn_state(ksn.device_key)
            accepted, state = check_replay(
                None if previous is None else ReplayState.from_tuple(previous), ksn.counter
            )
            if accepted:
                replay = (ksn.device_key, state)
            if not accepted and not remembered:
                return self._plain(request, "63", "replay", pan_masked)
        try:
            if remembered:
                work.rc, work.state = "05", "reversed-before-arrival"
            else:
                self._business(work, terminal)
        except _Unstored as unstored:
            return self._plain(request, unstored.rc, unstored.decision, pan_masked)
        txn = self._store_decision(work)
        # Only a KSN that authenticated (a valid MAC, or a PIN block that
        # decoded under its keys) moves the device's replay state, so that
        # made-up KSNs on a MAC-optional terminal cannot grow the table.
        if replay is not None and (mac_ok or work.pin_decoded):
            device, state = replay
            store.put_ksn_state(device, *state.to_tuple(), request.received_at)
        return self._respond(request, p, txn, mac_ok, "new")

    def _maybe_remembered(self, key: str) -> bool:
        """False only when no reversal of ``key`` can be remembered (the
        filter saves one lookup per original)."""
        return self._remembered is None or key in self._remembered

    def _business_day(self, moment: datetime) -> str:
        return self._local(moment).date().isoformat()

    def _store_decision(self, w: _Work) -> TxnRow:
        p, seq = w.p, self._next_seq()
        card = w.card
        txn = TxnRow(
            key=p.key, content=p.content, mti=p.mti, rc=w.rc,
            rrn=self._rrn(seq, w.request.received_at),
            auth_code=self._auth_code(None if card is None else card.id, w.business_day)
            if w.rc == "00" else "",
            de54=w.de54, created_at=ts(w.request.received_at), terminal=p.terminal,
            stan=p.stan, pan_masked=w.pan_masked, card_id=None if card is None else card.id,
            code=p.code, amount_minor=p.amount_minor or 0, currency=p.currency or 0,
            debit_account_id=w.debit, credit_account_id=w.credit, hold_id=w.hold_id,
            state=w.state, effective_minor=w.effective, business_day=w.business_day,
            counts_daily=w.counts_daily, orig_key=w.orig_key, seq=seq,
        )
        self.store.insert_txn(txn)
        return txn

    def _respond(self, request: Request, p: Parsed, txn: TxnRow, mac_ok: bool,
                 decision: str) -> Outcome:
        response = {"t": response_mti(p.mti), **echo(request.fields), "37": txn.rrn}
        if txn.rc == "00":
            response["38"] = txn.auth_code
        response["39"] = txn.rc
        if txn.de54:
            response["54"] = txn.de54
        return Outcome(response, mac_ok, self._log(request.fields, txn.rc, decision,
                                                   txn.pan_masked))

    # -- business rules ----------------------------------------------------------

    def _business(self, w: _Work, terminal: TerminalRow | None) -> None:
        p = w.p
        merchant = self.merchants.get(p.merchant)
        if terminal is None or merchant is None or terminal.merchant_id != merchant.id:
            w.rc = "03"
            return
        if p.cls in REVERSAL_CLASSES:
            self._reversal(w)
            return
        code = p.code2
        if not terminal_allows(terminal, code):
            w.rc = "58"
            return
        if code not in CODES_BY_CLASS[p.cls]:
            w.rc = "12"
            return
        if p.cls == "022":
            self._completion(w)
            return
        self._original(w, terminal, merchant)

    def _card(self, w: _Work) -> CardRow | None:
        """Card step up to state: 14, 15, 91, 14, 54, 41/43. Sets w.rc."""
        p = w.p
        if not pan_valid(p.pan):
            w.rc = "14"
            return None
        issuer_id = self.bins.issuer_for(p.pan)
        if issuer_id is None:
            w.rc = "15"
            return None
        issuer = self.issuers.get(issuer_id)
        if issuer is None or not issuer.available or issuer_id != ON_US_ISSUER:
            w.rc = "91"
            return None
        card = self.store.cached_card_by_hash(pan_hash(self.config.pan_hash_key, p.pan))
        if card is None:
            w.rc = "14"
            return None
        w.card = card
        if card_expired(card.expiry, p.expiry, self._local(w.request.received_at)):
            w.rc = "54"
        elif card.state != "active":
            w.rc = STATE_RESPONSE.get(card.state, "57")
        return card

    def _pin(self, w: _Work, card: CardRow) -> None:
        p = w.p
        required = p.code2 in PIN_REQUIRED_CODES
        present = p.pin_block is not None
        verified: bool | None = None
        if present and not card.pin_blocked:
            assert p.pin_block is not None and p.ksn is not None
            zone = w.request.pin_zone
            try:
                if zone is not None:  # rewrapped at the edge: one long-lived key
                    verified = self.hsm.verify_zone_pin(zone, p.pan, _pvd(card))
                else:
                    verified = self.hsm.verify_pin(p.ksn, p.pin_block, p.pan, _pvd(card))
            except SecurityError as exc:
                raise _Unstored("63", "pin-key") from exc
            w.pin_decoded = verified is not None
        outcome = pin_step(card, required, present, verified)
        if (outcome.tries, outcome.blocked) != (card.pin_tries, card.pin_blocked):
            self.store.set_pin_tries(card.id, outcome.tries, outcome.blocked)
        if outcome.rc:
            w.rc = outcome.rc

    def _original(self, w: _Work, terminal: TerminalRow, merchant: MerchantRow) -> None:
        p, store, config = w.p, self.store, self.config
        card = self._card(w)
        if card is None or w.rc != "00":
            return
        self._pin(w, card)
        if w.rc != "00":
            return
        account = store.get_account(card.account_id)
        if p.currency != account.currency:
            w.rc = "57"
            return
        code, amount = p.code2, p.amount_minor or 0
        if code in AMOUNT_CODES and amount <= 0:
            w.rc = "13"
            return
        # Section 6: "5000.00 per transaction" limits every amount (refunds
        # too); only the daily limits are restricted to approved debits.
        if code in AMOUNT_CODES and amount > card.limit_txn_minor:
            w.rc = "61"
            return
        debit = code in DEBIT_CODES
        if debit:
            used_minor, used_count, *usual = store.card_usage(card.id, w.business_day)
            w.usual = (usual[0], usual[1])
            if used_minor + amount > card.limit_day_minor:
                w.rc = "61"
                return
            if used_count + 1 > card.limit_day_count:
                w.rc = "65"
                return
        source: Account = account
        dest: Account | None = None
        if code == "40":
            if p.source_account:
                chosen = store.account_by_number(p.source_account)
                if chosen is None or not store.card_owns_account(card.id, chosen.id):
                    w.rc = "57"
                    return
                source = chosen
            dest = store.account_by_number(p.dest_account)
            if dest is None or dest.closed:
                w.rc = "76"
                return
            if dest.id == source.id:
                w.rc = "12"
                return
            if dest.currency != source.currency or source.currency != p.currency:
                w.rc = "57"
                return
        if source.closed:
            w.rc = "57"
            return
        if debit and source.available_balance_minor < amount:
            w.rc = "51"
            return
        referred = code == "40" and amount > config.review_threshold_minor
        if not referred and self._risk(w, card, terminal, merchant, source, dest):
            w.rc = "05"
            return
        try:
            self._apply(w, card, merchant, source, dest, referred)
        except InsufficientFunds:
            w.rc, w.state, w.hold_id = "51", "declined", None
        except AccountClosed:
            w.rc, w.state, w.hold_id = "57", "declined", None

    def _apply(self, w: _Work, card: CardRow, merchant: MerchantRow, source: Account,
               dest: Account | None, referred: bool) -> None:
        p, store = w.p, self.store
        code, amount, now = p.code2, p.amount_minor or 0, w.request.received_at
        currency = source.currency
        if code in INQUIRY_CODES:
            w.state = "inquiry"
            w.de54 = _balances(p.code[2:4] or "00", source)
            return
        if code == "20":
            w.debit, w.credit = merchant.settlement_account_id, source.id
        elif code == "40":
            assert dest is not None
            w.debit, w.credit = source.id, dest.id
        else:
            w.debit = source.id
            w.credit = merchant.settlement_account_id if code == "00" else merchant.cash_account_id
        expires = now + self.config.hold_expiry
        if p.cls == "010" or referred:
            w.hold_id = store.hold(w.debit, w.credit, amount, currency, expires, p.key, now)
            w.state = "referred" if referred else "held"
        else:
            store.transfer(w.debit, w.credit, amount, currency, p.key, now)
            w.state = "posted"
        w.effective = amount
        if code in DEBIT_CODES:
            w.counts_daily = True
            store.add_daily_usage(card.id, w.business_day, amount, 1)
        if referred:
            assert w.hold_id is not None
            store.add_review(p.key, w.hold_id, now)
            w.rc = "01"

    def _risk(self, w: _Work, card: CardRow, terminal: TerminalRow, merchant: MerchantRow,
              source: Account, dest: Account | None) -> bool:
        """Blacklists and risk rules; stores an alert per rule that fires.
        True when one that fired declines (05)."""
        p, rules, now = w.p, self.config.risk, w.request.received_at
        fired: list[tuple[str, str, str]] = []
        listed = self.blacklist
        if listed:
            checks = [("pan", card.pan_hash.hex()), ("account", source.number),
                      ("terminal", terminal.id), ("merchant", merchant.id)]
            if dest is not None:
                checks.append(("account", dest.number))
            for kind, value in checks:
                if (kind, value) in listed:
                    fired.append(("blacklist", rules.blacklist_action, f"{kind} is blacklisted"))
        if p.code2 in DEBIT_CODES:
            recent = self._recent_debits(card.id)
            if velocity_fires(list(recent), now, rules):
                fired.append(("velocity", rules.velocity_action,
                              f"more than {rules.velocity_count} requests within "
                              f"{int(rules.velocity_window.total_seconds())} s"))
            recent.append(now)
            if len(self._velocity) > VELOCITY_CARDS_MAX:
                self._velocity.clear()
            total, count = w.usual if w.usual is not None else self.store.usual_debit(card.id)
            if amount_fires(p.amount_minor or 0, total, count, rules):
                fired.append(("amount", rules.amount_action,
                              f"amount above {rules.amount_factor}x the card's average"))
        for rule, action, detail in fired:
            self.store.add_alert(now, rule, action, p.key, w.pan_masked, detail)
        return any(action == "decline" for _, action, _ in fired)

    def _completion(self, w: _Work) -> None:
        p, store = w.p, self.store
        if not pan_valid(p.pan):
            w.rc = "14"
            return
        original = p.original
        assert original is not None
        orig_key = make_key("010", p.terminal_id, original.stan, original.transmitted,
                            original.acquirer)
        w.orig_key = orig_key
        auth = store.get_txn(orig_key) if original.mti in ("0100", "0101") else None
        hold = store.get_hold(auth.hold_id) if auth and auth.hold_id else None
        if (auth is None or auth.state != "held" or hold is None
                or hold.state != HoldState.PENDING or hold.expires_at <= w.request.received_at):
            w.rc = "25"
            return
        card = store.card_by_hash(pan_hash(self.config.pan_hash_key, p.pan))
        w.card = card
        if (card is None or card.id != auth.card_id or p.code2 != auth.code[:2]
                or p.currency != auth.currency):
            w.rc = "12"
            return
        amount = p.amount_minor or 0
        if amount <= 0 or amount > hold.amount_minor:
            w.rc = "13"
            return
        now = w.request.received_at
        store.post_hold(hold.id, amount, p.key, now)
        released = hold.amount_minor - amount
        if released and auth.counts_daily and auth.card_id is not None:
            store.add_daily_usage(auth.card_id, auth.business_day, -released, 0)
        store.update_txn(orig_key, state="completed", effective_minor=amount, hold_id=hold.id,
                         orig_key=p.key)
        w.state, w.effective, w.hold_id = "completion", amount, hold.id
        w.debit, w.credit = hold.debit_account_id, hold.credit_account_id

    def _reversal(self, w: _Work) -> None:
        p, store, now = w.p, self.store, w.request.received_at
        original = p.original
        assert original is not None
        orig_cls = {"0100": "010", "0101": "010", "0200": "020", "0201": "020", "0220": "022",
                    "0221": "022"}.get(original.mti)
        if orig_cls is None:
            w.rc = "12"
            return
        orig_key = make_key(orig_cls, p.terminal_id, original.stan, original.transmitted,
                            original.acquirer)
        w.orig_key, w.state = orig_key, "reversal"
        orig = store.get_txn(orig_key)
        if orig is None:
            store.remember_reversal(orig_key, p.key, now)
            if self._remembered is not None:
                self._remembered.add(orig_key)
                if len(self._remembered) > REMEMBERED_FILTER_MAX:
                    self._remembered = None
            w.state = "reversal-remembered"
            return
        if not w.pan_masked:
            w.pan_masked = orig.pan_masked
        if p.pan:
            card = store.card_by_hash(pan_hash(self.config.pan_hash_key, p.pan))
            w.card = card
            # Two PANs not on file both have no card id: the masked PAN
            # still tells them apart (section 3: DE2 differs -> 12).
            if ((None if card is None else card.id) != orig.card_id
                    or mask_pan(p.pan) != orig.pan_masked):
                w.rc = "12"
                return
        elif orig.card_id is not None:
            w.card = store.get_card(orig.card_id)
        if ((p.code and p.code != orig.code)
                or (p.amount_minor is not None and p.amount_minor != orig.amount_minor)
                or (p.currency is not None and p.currency != orig.currency)):
            w.rc = "12"
            return
        actual = p.actual_minor or 0
        if actual > orig.amount_minor:
            w.rc = "13"
            return
        target = store.get_txn(orig.orig_key) if orig.state == "completion" else orig
        if target is None or target.state not in ("held", "referred", "posted", "completed"):
            return
        delta = target.effective_minor - actual
        if delta <= 0:
            return
        hold_id = target.hold_id
        if target.state in ("held", "referred"):
            hold = store.get_hold(target.hold_id) if target.hold_id else None
            if hold is None or hold.state != HoldState.PENDING:
                return
            if actual == 0:
                store.void_hold(hold.id, p.key, now)
            else:
                hold_id = store.move([
                    Entry(TransferKind.VOID_PENDING, pending_id=hold.id, ref=p.key),
                    Entry(TransferKind.PENDING, hold.debit_account_id, hold.credit_account_id,
                          actual, hold.currency, expires_at=hold.expires_at, ref=p.key),
                ], now)[1]
            if target.state == "referred":
                review = store.review_by_txn(target.key)
                if review is not None:
                    store.set_review(review[0], "reversed" if actual == 0 else review[3],
                                     hold_id or 0, now)
        else:
            assert target.debit_account_id is not None and target.credit_account_id is not None
            try:
                store.transfer(target.credit_account_id, target.debit_account_id, delta,
                               target.currency, p.key, now)
            except InsufficientFunds:
                w.rc = "51"
                return
        new_state = "reversed" if actual == 0 else target.state
        store.update_txn(target.key, state=new_state, effective_minor=actual,
                         hold_id=hold_id if actual else target.hold_id)
        if target.counts_daily and target.card_id is not None:
            store.add_daily_usage(target.card_id, target.business_day, -delta,
                                  -1 if actual == 0 else 0)
        w.effective = delta
        w.debit, w.credit = target.credit_account_id, target.debit_account_id

    # -- review queue --------------------------------------------------------------

    def decide_review(self, review_id: int, approve: bool) -> str:
        """Approve (post the held transfer) or decline (release it) a referred
        transfer, in its own transaction. Idempotent: deciding again the same
        way reports the earlier decision. Returns a short message; raises
        :class:`ValueError` when the review cannot be decided."""
        store, now = self.store, self.clock()
        with store.write():
            review = store.get_review(review_id)
            if review is None:
                raise ValueError("no such review")
            _, txn_key, hold_id, state = review
            wanted = "approved" if approve else "declined"
            if state == wanted:
                return f"review {review_id} was already {wanted}"
            if state != "pending":
                raise ValueError(f"review {review_id} is {state}")
            txn = store.get_txn(txn_key)
            hold = store.get_hold(hold_id)
            if txn is None or hold is None or hold.state != HoldState.PENDING:
                raise ValueError(f"review {review_id} has no pending hold")
            if hold.expires_at <= now:
                self._expire_hold(hold_id, now)
                return f"review {review_id} expired before it was decided"
            if approve:
                store.post_hold(hold_id, hold.amount_minor, f"review {review_id}", now)
                store.update_txn(txn_key, state="posted", effective_minor=hold.amount_minor,
                                 hold_id=hold_id)
            else:
                store.void_hold(hold_id, f"review {review_id}", now)
                store.update_txn(txn_key, state="review-declined", effective_minor=0,
                                 hold_id=hold_id)
                if txn.counts_daily and txn.card_id is not None:
                    store.add_daily_usage(txn.card_id, txn.business_day,
                                          -txn.effective_minor, -1)
            store.set_review(review_id, wanted, hold_id, now)
        return f"review {review_id} {wanted}"


def _mac_refused(request: Request, mti: str, terminal: TerminalRow | None) -> bool:
    """A wrong MAC, or none where the terminal or the MTI needs one (63)."""
    return request.mac_status == "invalid" or (
        mac_required(terminal, mti) and request.mac_status != "valid"
    )


def _pvd(card: CardRow) -> PinVerificationData:
    return PinVerificationData(card.pvd_method, card.pvd_pvki, card.pvd_value, card.pvd_key_name)


def _balances(account_type: str, account: Account) -> str:
    """DE54: per balance, account type 2 + amount type 2 (01 ledger, 02
    available) + currency 3 + C/D + amount 12."""
    parts = []
    for amount_type, value in (("01", account.ledger_balance_minor),
                               ("02", account.available_balance_minor)):
        sign = "C" if value >= 0 else "D"
        parts.append(f"{account_type}{amount_type}{account.currency:03d}{sign}{abs(value):012d}")
    return "".join(parts)
