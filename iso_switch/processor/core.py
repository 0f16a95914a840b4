"""The processor: decides each request in the order of docs/interface.md
section 3 and moves the money, exactly once, inside group-committed batches.

Per request it does four things, in order: load the facts, run the decision
chain (:mod:`iso_switch.processor.chain`, the order of checks as one
sequence of pure checks), apply the postings the decision calls for, and
store the decision. The steps before the chain (format, MAC, duplicate, a
remembered reversal, KSN replay) are :meth:`Processor._decide`'s, since
their answers (30, 63, 94, a stored decision) are not all stored.
Completions and reversals are matched to their originals in
:mod:`iso_switch.processor.originals`.

Not thread-safe: one writer thread calls :meth:`Processor.process_batch`.
Reference data (terminals, merchants, issuers, BIN routes, blacklists) is
cached in memory and reloaded when another process (the admin CLI) commits,
which the store's ``reference_version()`` token reveals. Everything else is read from the
store inside the batch's transaction, so a decision always sees the effects
of the requests before it, in the same batch or earlier ones.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import secrets
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from iso_switch.acquirer.mac import check_mac, request_verdict
from iso_switch.codec.masking import mask_pan
from iso_switch.codec.subfields import (
    AMOUNT_TYPE_AVAILABLE,
    AMOUNT_TYPE_LEDGER,
    Balance,
    build_de54,
)
from iso_switch.codes import ResponseCode, TxnState, TxnType
from iso_switch.issuer import VELOCITY_COUNT_MAX, pan_hash
from iso_switch.issuer.checks import DEBIT_TYPES, INQUIRY_TYPES
from iso_switch.ledger import (
    Account,
    AccountClosed,
    Entry,
    HoldState,
    InsufficientFunds,
    LedgerStore,
    TransferKind,
    TxnRow,
    parse_ts,
    ts,
)
from iso_switch.ledger.records import CardRow, MerchantRow, TerminalRow
from iso_switch.processor import chain
from iso_switch.processor.chain import Facts
from iso_switch.processor.fields import (
    ORIGINAL_CLASSES,
    REVERSAL_CLASSES,
    FormatError,
    Parsed,
    echo,
    parse_request,
    plain_response,
    response_mti,
)
from iso_switch.processor.model import (
    CommitFailed,
    Outcome,
    PinHsm,
    ProcessorConfig,
    Request,
    utc_now,
)
from iso_switch.processor.originals import (
    HOLD_STATES,
    REVERSIBLE_STATES,
    authorization_key,
    check_authorization_open,
    check_completion_matches,
    check_reversal_matches,
    original_key,
)
from iso_switch.protocol.session import answer_network_management
from iso_switch.routing import BinTable
from iso_switch.security.errors import SecurityError
from iso_switch.security.ksn import parse_ksn
from iso_switch.security.replay import ReplayState, check_replay

LOG = logging.getLogger(__name__)

#: Answers never stored under the key (interface section 3): they must not
#: block the genuine request that follows.
UNSTORED = frozenset({ResponseCode.FORMAT_ERROR, ResponseCode.SECURITY_VIOLATION})
#: DE3 digits 3-4 (the account type) when DE3 is absent: the default account.
DEFAULT_ACCOUNT_TYPE = "00"
#: MTI classes (first two digits) whose responses carry DE37.
# Bounds on in-memory risk state: recent request times kept per card, and
# cards tracked before the whole map is dropped (velocity is best effort).
VELOCITY_TIMES_PER_CARD_MAX = VELOCITY_COUNT_MAX
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


class ReviewState(enum.StrEnum):
    """Where a referred transfer's review stands (the ledger keeps it)."""

    PENDING = "pending"
    APPROVED = "approved"
    DECLINED = "declined"
    EXPIRED = "expired"
    REVERSED = "reversed"


@dataclass(frozen=True, slots=True)
class Decision:
    """What a request came to, as the processor stores it: the response
    code and the ledger's side of it. Built once per request, by the code
    that decided it, and handed to :meth:`Processor._store_decision`."""

    rc: ResponseCode
    state: TxnState = TxnState.DECLINED
    card: CardRow | None = None
    pan_masked: str = ""
    debit: int | None = None
    credit: int | None = None
    hold_id: int | None = None
    effective: int = 0
    counts_daily: bool = False
    de54: str = ""
    orig_key: str = ""
    # A PIN block decoded under the KSN's keys: the KSN authenticated.
    pin_decoded: bool = False


class Processor:
    """Decides requests; see the module docstring. Single writer only."""

    def __init__(
        self,
        store: LedgerStore,
        hsm: PinHsm,
        config: ProcessorConfig | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.store = store
        self.hsm = hsm
        self.config = config or ProcessorConfig()
        self.clock = clock
        self.zone = ZoneInfo(self.config.timezone)
        self._reference_version: object = None
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
        self._reference_version = store.reference_version()

    def reconfigure(self, hsm: PinHsm, config: ProcessorConfig) -> list[str]:
        """Install a reloaded HSM and configuration and re-read the reference
        data whatever its version (SIGHUP), so a change made by any means is
        picked up. Between batches only. Returns the names of the reference
        tables that changed. The time zone is fixed at start (the business
        day and the cached local times depend on it)."""
        assert config.timezone == self.config.timezone, "the time zone needs a restart"
        before = self._reference_tables()
        running = self.hsm, self.config
        self.hsm, self.config = hsm, config
        try:
            self.reload()
        except BaseException:
            self.hsm, self.config = running
            raise
        after = self._reference_tables()
        return [name for name, table in before.items() if after[name] != table]

    def _reference_tables(self) -> dict[str, object]:
        return {"terminals": self.terminals, "merchants": self.merchants,
                "issuers": self.issuers, "bin_routes": self.bins, "blacklist": self.blacklist}

    def _refresh(self) -> None:
        if self.store.reference_version() != self._reference_version:
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
                store.begin_request()
                try:
                    outcome = self._decide(request)
                    store.end_request()
                except Exception:
                    LOG.exception("request failed; answered 96")
                    store.undo_request()
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
        """The 0810 the server answers too (never MACed, never stored)."""
        response = answer_network_management(request.fields)
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
            self.recent_debits(card_id).append(parse_ts(received_at))
        self._velocity_loaded = True

    def recent_debits(self, card_id: int) -> deque[datetime]:
        """The times of the card's latest debit requests (the velocity rule)."""
        recent = self._velocity.get(card_id)
        if recent is None:
            recent = self._velocity[card_id] = deque(maxlen=VELOCITY_TIMES_PER_CARD_MAX)
        return recent

    def _count_debit(self, card_id: int, now: datetime) -> None:
        """One more debit request on the card for the velocity rule (best
        effort: past ``VELOCITY_CARDS_MAX`` cards the counts start over)."""
        self.recent_debits(card_id).append(now)
        if len(self._velocity) > VELOCITY_CARDS_MAX:
            self._velocity.clear()

    def _housekeeping(self, now: datetime) -> None:
        """Expire due holds, and prune old keys once per prune interval."""
        store = self.store
        store.begin_request()
        try:
            for hold_id in store.due_holds(now):
                self._expire_hold(hold_id, now)
            if self._last_prune is None or now - self._last_prune >= self.config.prune_interval:
                store.prune(now - self.config.retention)
                self._last_prune = now
            store.end_request()
        except Exception:
            LOG.exception("housekeeping failed; retried with the next batch")
            store.undo_request()

    def _expire_hold(self, hold_id: int, now: datetime) -> None:
        store = self.store
        txn = store.txn_by_hold(hold_id)
        store.expire_holds([hold_id], now)
        if txn is None:
            return
        store.update_txn(txn.key, state=TxnState.EXPIRED, effective_minor=0, hold_id=hold_id)
        if txn.counts_daily and txn.card_id is not None:
            store.add_daily_usage(txn.card_id, txn.business_day, -txn.effective_minor, -1)
        review = store.review_by_txn(txn.key)
        if review is not None and review[3] == ReviewState.PENDING:
            store.set_review(review[0], ReviewState.EXPIRED, hold_id, now)

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

    def _plain(self, request: Request, rc: ResponseCode, decision: str, pan_masked: str = "",
               mac_ok: bool = False) -> Outcome:
        """An answer that stores nothing: 30, 63, 94, 96."""
        fields = request.fields
        response = plain_response(fields, str(rc),
                                  lambda: self._rrn(self._next_seq(), request.received_at))
        return Outcome(
            response, mac_ok and rc not in UNSTORED,
            self._log(fields, str(rc), decision, pan_masked),
        )

    def _malfunction(self, request: Request) -> Outcome:
        return self._plain(request, ResponseCode.SYSTEM_MALFUNCTION, "malfunction",
                           mac_ok=request.mac_status == "valid")

    def _decide(self, request: Request) -> Outcome:
        """The steps before the chain (format, MAC, duplicate, a remembered
        reversal, KSN replay), then the decision, stored with the KSN."""
        fields = request.fields
        if fields.get("t", "") in ("0800", "0801"):
            return self.network_management(request)
        try:
            p = parse_request(fields, self.config.pan_hash_key)
        except FormatError:
            return self._plain(request, ResponseCode.FORMAT_ERROR, "format")
        pan_masked = mask_pan(p.pan) if p.pan else ""
        terminal = self.terminals.get(p.terminal)
        if _mac_refused(request, p.mti, terminal):
            return self._plain(request, ResponseCode.SECURITY_VIOLATION, "mac", pan_masked)
        mac_ok = request.mac_status == "valid"
        stored = self.store.get_txn(p.key)
        if stored is not None:
            if stored.content != p.content:
                return self._plain(request, ResponseCode.DUPLICATE_TRANSMISSION, "duplicate",
                                   pan_masked, mac_ok)
            return self._respond(request, p, stored, mac_ok, "stored")
        remembered = p.cls in ORIGINAL_CLASSES and self._maybe_remembered(p.key) and (
            self.store.remembered_reversal(p.key) is not None
        )
        refused, replay = self._replay(p, remembered)
        if refused:
            return self._plain(request, ResponseCode.SECURITY_VIOLATION, refused, pan_masked)
        if remembered:
            decision = Decision(ResponseCode.DO_NOT_HONOUR, TxnState.REVERSED_BEFORE_ARRIVAL,
                                pan_masked=pan_masked)
        else:
            decision = self._business(request, p, terminal, pan_masked)
        if decision.rc in UNSTORED:  # only the PIN step's: a PIN key that failed
            return self._plain(request, decision.rc, "pin-key", pan_masked)
        txn = self._store_decision(request, p, decision)
        # Only a KSN that authenticated (a valid MAC, or a PIN block that
        # decoded under its keys) moves the device's replay state, so that
        # made-up KSNs on a MAC-optional terminal cannot grow the table.
        if replay is not None and (mac_ok or decision.pin_decoded):
            device, state = replay
            self.store.put_ksn_state(device, *state.to_tuple(), request.received_at)
        return self._respond(request, p, txn, mac_ok, "new")

    def _replay(self, p: Parsed,
                remembered: bool) -> tuple[str, tuple[str, ReplayState] | None]:
        """The KSN step: the reason for a 63 ("" when none) and the device's
        replay state to store with an authenticated decision. A request
        whose reversal is remembered is declined 05 even when replayed."""
        if p.ksn is None:
            return "", None
        try:
            ksn = parse_ksn(p.ksn)
        except SecurityError:
            return "ksn", None
        if not self.config.device_bindings.allows(ksn, p.terminal):
            return "device-binding", None
        previous = self.store.get_ksn_state(ksn.device_key)
        accepted, state = check_replay(
            None if previous is None else ReplayState.from_tuple(previous), ksn.counter
        )
        if accepted:
            return "", (ksn.device_key, state)
        return ("" if remembered else "replay"), None

    def _maybe_remembered(self, key: str) -> bool:
        """False only when no reversal of ``key`` can be remembered (the
        filter saves one lookup per original)."""
        return self._remembered is None or key in self._remembered

    def _business_day(self, moment: datetime) -> str:
        return self._local(moment).date().isoformat()

    def _store_decision(self, request: Request, p: Parsed, d: Decision) -> TxnRow:
        seq, now = self._next_seq(), request.received_at
        business_day = self._business_day(now)
        card_id = None if d.card is None else d.card.id
        approved = d.rc is ResponseCode.APPROVED
        txn = TxnRow(
            key=p.key, content=p.content, mti=p.mti, rc=str(d.rc), rrn=self._rrn(seq, now),
            auth_code=self._auth_code(card_id, business_day) if approved else "",
            de54=d.de54, created_at=ts(now), terminal=p.terminal, stan=p.stan,
            pan_masked=d.pan_masked, card_id=card_id, code=p.code,
            amount_minor=p.amount_minor or 0, currency=p.currency or 0,
            debit_account_id=d.debit, credit_account_id=d.credit, hold_id=d.hold_id,
            state=str(d.state), effective_minor=d.effective, business_day=business_day,
            counts_daily=d.counts_daily, orig_key=d.orig_key, seq=seq,
        )
        self.store.insert_txn(txn)
        return txn

    def _respond(self, request: Request, p: Parsed, txn: TxnRow, mac_ok: bool,
                 decision: str) -> Outcome:
        response = {"t": response_mti(p.mti), **echo(request.fields), "37": txn.rrn}
        if txn.rc == ResponseCode.APPROVED:
            response["38"] = txn.auth_code
        response["39"] = txn.rc
        if txn.de54:
            response["54"] = txn.de54
        return Outcome(response, mac_ok, self._log(request.fields, txn.rc, decision,
                                                   txn.pan_masked))

    # -- the decision ---------------------------------------------------------------

    def _business(self, request: Request, p: Parsed, terminal: TerminalRow | None,
                  pan_masked: str) -> Decision:
        """Load the facts, run the chain for the request's class, then
        apply the postings its answer calls for."""
        now = request.received_at
        f = Facts(p, p.code2, self, now, self._local(now), self._business_day(now),
                  request.pin_zone, terminal, self.merchants.get(p.merchant))
        if p.cls in REVERSAL_CLASSES:
            rc = chain.run(chain.REVERSAL_FRONT, f)
            return self._reversal(f, pan_masked) if rc is None else Decision(
                rc, pan_masked=pan_masked)
        if p.cls == "022":
            rc = chain.run(chain.COMPLETION_FRONT, f)
            return self._completion(f, pan_masked) if rc is None else Decision(
                rc, pan_masked=pan_masked)
        rc = chain.run(chain.FRONT, f)
        if rc is None:
            # The seam: FRONT routed the card. A remote issuer's answer
            # (forwarded from here) takes the place of the on-us issuer's.
            rc = self._on_us_issuer(f)
        return self._conclude(f, rc, pan_masked)

    def _on_us_issuer(self, f: Facts) -> ResponseCode | None:
        """The on-us issuer's answer: the card's facts from the ledger, the
        issuer's part of the chain, and what its steps found, recorded."""
        self._load_card_facts(f)
        rc = chain.run(chain.ISSUER, f)
        self._record_findings(f)
        return rc

    def _conclude(self, f: Facts, rc: ResponseCode | None, pan_masked: str) -> Decision:
        """The decision on an original, whoever answered: approved (None)
        or referred (01) posts; any other code declines, posting nothing."""
        if rc is None or rc is ResponseCode.REFER_TO_ISSUER:
            return self._post(f, pan_masked, referred=rc is not None)
        return Decision(rc, card=f.card, pan_masked=pan_masked, pin_decoded=f.pin_decoded)

    def _load_card_facts(self, f: Facts) -> None:
        """The card and its accounts from the ledger, and for a refund on a
        capped terminal the terminal's refunds of the day, for the issuer part."""
        p, store = f.p, self.store
        card = f.card = store.cached_card_by_hash(pan_hash(self.config.pan_hash_key, p.pan))
        if card is None:
            return
        f.account = f.source = store.get_account(card.account_id)
        code = f.txn_type
        if code in DEBIT_TYPES:
            used_minor, used_count, usual_minor, usual_count = store.card_usage(
                card.id, f.business_day)
            f.used, f.usual = (used_minor, used_count), (usual_minor, usual_count)
        terminal = f.terminal
        if code == TxnType.REFUND and terminal and terminal.refund_day_minor is not None:
            f.refunded_minor = store.terminal_refunds(terminal.id, f.business_day)
        if code == TxnType.FUNDS_TRANSFER:
            if p.source_account:
                chosen = store.account_by_number(p.source_account)
                f.source_owned = chosen is not None and store.card_owns_account(card.id,
                                                                                chosen.id)
                if chosen is not None:
                    f.source = chosen
            f.dest = store.account_by_number(p.dest_account)

    def _record_findings(self, f: Facts) -> None:
        """What the chain's steps found: the PIN tries, the risk alerts, the
        velocity count."""
        card = f.card
        if card is None:
            return
        outcome = f.pin
        if outcome is not None and (outcome.tries, outcome.blocked) != (card.pin_tries,
                                                                         card.pin_blocked):
            self.store.set_pin_tries(card.id, outcome.tries, outcome.blocked)
        if f.debit_counted:
            self._count_debit(card.id, f.now)
        for alert in f.alerts:
            self.store.add_alert(f.now, alert.rule, alert.action, f.p.key,
                                 mask_pan(f.p.pan), alert.detail)

    def _post(self, f: Facts, pan_masked: str, *, referred: bool) -> Decision:
        """The postings of an approved (or referred) original: a balance, a
        hold (authorizations and referred transfers) or a transfer."""
        p, store, card, merchant = f.p, self.store, f.card, f.merchant
        source = f.source
        assert card is not None and merchant is not None and source is not None
        code, amount, now = f.txn_type, p.amount_minor or 0, f.now
        if code in INQUIRY_TYPES:
            return Decision(ResponseCode.APPROVED, TxnState.INQUIRY, card, pan_masked,
                            de54=_balances(p.code[2:4] or DEFAULT_ACCOUNT_TYPE, source),
                            pin_decoded=f.pin_decoded)
        debit, credit = _parties(code, source, f.dest, merchant)
        hold_id = None
        try:
            if p.cls == "010" or referred:
                hold_id = store.hold(debit, credit, amount, source.currency,
                                     now + self.config.hold_expiry, p.key, now)
                state = TxnState.REFERRED if referred else TxnState.HELD
            else:
                store.transfer(debit, credit, amount, source.currency, p.key, now)
                state = TxnState.POSTED
        except (InsufficientFunds, AccountClosed) as exc:
            rc = (ResponseCode.INSUFFICIENT_FUNDS if isinstance(exc, InsufficientFunds)
                  else ResponseCode.NOT_PERMITTED_TO_CARDHOLDER)
            return Decision(rc, TxnState.DECLINED, card, pan_masked, debit, credit,
                            pin_decoded=f.pin_decoded)
        counts_daily = code in DEBIT_TYPES
        if counts_daily:
            store.add_daily_usage(card.id, f.business_day, amount, 1)
        elif code == TxnType.REFUND:  # counted capped or not: a cap set later sees the day
            store.add_terminal_refunds(p.terminal, f.business_day, amount)
        if referred:
            assert hold_id is not None
            store.add_review(p.key, hold_id, now)
        rc = ResponseCode.REFER_TO_ISSUER if referred else ResponseCode.APPROVED
        return Decision(rc, state, card, pan_masked, debit, credit, hold_id, amount,
                        counts_daily, pin_decoded=f.pin_decoded)

    # -- completions and reversals --------------------------------------------------

    def _completion(self, f: Facts, pan_masked: str) -> Decision:
        """A completion: match its authorization, then post the held amount
        (the rest of the hold is released)."""
        p, store, now = f.p, self.store, f.now
        orig_key, names_auth = authorization_key(p)
        auth = store.get_txn(orig_key) if names_auth else None
        hold = store.get_hold(auth.hold_id) if auth and auth.hold_id else None
        rc = check_authorization_open(auth, None if hold is None else hold.state,
                                      None if hold is None else hold.expires_at, now)
        if rc is not None:
            return Decision(rc, pan_masked=pan_masked, orig_key=orig_key)
        assert auth is not None and hold is not None
        card = store.card_by_hash(pan_hash(self.config.pan_hash_key, p.pan))
        rc = check_completion_matches(p, auth, None if card is None else card.id,
                                      hold.amount_minor)
        if rc is not None:
            return Decision(rc, card=card, pan_masked=pan_masked, orig_key=orig_key)
        amount = p.amount_minor or 0
        store.post_hold(hold.id, amount, p.key, now)
        released = hold.amount_minor - amount
        if released and auth.counts_daily and auth.card_id is not None:
            store.add_daily_usage(auth.card_id, auth.business_day, -released, 0)
        store.update_txn(orig_key, state=TxnState.COMPLETED, effective_minor=amount,
                         hold_id=hold.id, orig_key=p.key)
        return Decision(ResponseCode.APPROVED, TxnState.COMPLETION, card, pan_masked,
                        hold.debit_account_id, hold.credit_account_id, hold.id, amount,
                        orig_key=orig_key)

    def _reversal(self, f: Facts, pan_masked: str) -> Decision:
        """A reversal: match its original (remember it when the original
        has not arrived), then give back the original's money."""
        p, store = f.p, self.store
        orig_key = original_key(p)
        if orig_key is None:
            return Decision(ResponseCode.INVALID_TRANSACTION, pan_masked=pan_masked)
        orig = store.get_txn(orig_key)
        if orig is None:
            self._remember_reversal(orig_key, p.key, f.now)
            return Decision(ResponseCode.APPROVED, TxnState.REVERSAL_REMEMBERED,
                            pan_masked=pan_masked, orig_key=orig_key)
        pan_masked = pan_masked or orig.pan_masked
        card: CardRow | None = None
        if p.pan:
            card = store.card_by_hash(pan_hash(self.config.pan_hash_key, p.pan))
        elif orig.card_id is not None:
            card = store.get_card(orig.card_id)
        decided = Decision(ResponseCode.APPROVED, TxnState.REVERSAL, card, pan_masked,
                           orig_key=orig_key)
        rc = check_reversal_matches(p, orig, None if card is None else card.id)
        if rc is not None:
            return dataclasses.replace(decided, rc=rc)
        target = store.get_txn(orig.orig_key) if orig.state == TxnState.COMPLETION else orig
        if target is None or target.state not in REVERSIBLE_STATES:
            return decided
        return self._reverse(f, target, decided)

    def _remember_reversal(self, orig_key: str, key: str, now: datetime) -> None:
        """A reversal whose original has not arrived: the original will be
        declined (05) when it does."""
        self.store.remember_reversal(orig_key, key, now)
        if self._remembered is not None:
            self._remembered.add(orig_key)
            if len(self._remembered) > REMEMBERED_FILTER_MAX:
                self._remembered = None

    def _reverse(self, f: Facts, target: TxnRow, decided: Decision) -> Decision:
        """Give back ``target``'s money down to the actual amount (DE95, else
        zero): shrink or void its hold, or transfer the difference back."""
        p, store, now = f.p, self.store, f.now
        actual = p.actual_minor or 0
        delta = target.effective_minor - actual
        if delta <= 0:
            return decided
        hold_id = target.hold_id
        if target.state in HOLD_STATES:
            moved = self._reverse_hold(p, target, actual, now)
            if moved is None:
                return decided
            hold_id = moved
        else:
            assert target.debit_account_id is not None and target.credit_account_id is not None
            try:
                store.transfer(target.credit_account_id, target.debit_account_id, delta,
                               target.currency, p.key, now)
            except InsufficientFunds:
                return dataclasses.replace(decided, rc=ResponseCode.INSUFFICIENT_FUNDS)
        new_state = TxnState.REVERSED if actual == 0 else target.state
        store.update_txn(target.key, state=new_state, effective_minor=actual,
                         hold_id=hold_id if actual else target.hold_id)
        if target.counts_daily and target.card_id is not None:
            store.add_daily_usage(target.card_id, target.business_day, -delta,
                                  -1 if actual == 0 else 0)
        elif target.code[:2] == TxnType.REFUND:
            store.add_terminal_refunds(target.terminal, target.business_day, -delta)
        return dataclasses.replace(decided, effective=delta, debit=target.credit_account_id,
                                   credit=target.debit_account_id)

    def _reverse_hold(self, p: Parsed, target: TxnRow, actual: int,
                      now: datetime) -> int | None:
        """Void the original's hold, or replace it by one of the actual
        amount; the hold id the original keeps, or None when its hold is no
        longer pending (nothing to give back)."""
        store = self.store
        hold = store.get_hold(target.hold_id) if target.hold_id else None
        if hold is None or hold.state != HoldState.PENDING:
            return None
        hold_id = target.hold_id
        if actual == 0:
            store.void_hold(hold.id, p.key, now)
        else:
            hold_id = store.move([
                Entry(TransferKind.VOID_PENDING, pending_id=hold.id, ref=p.key),
                Entry(TransferKind.PENDING, hold.debit_account_id, hold.credit_account_id,
                      actual, hold.currency, expires_at=hold.expires_at, ref=p.key),
            ], now)[1]
        if target.state == TxnState.REFERRED:
            review = store.review_by_txn(target.key)
            if review is not None:
                store.set_review(review[0], ReviewState.REVERSED if actual == 0 else review[3],
                                 hold_id or 0, now)
        return hold_id

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
            wanted = ReviewState.APPROVED if approve else ReviewState.DECLINED
            if state == wanted:
                return f"review {review_id} was already {wanted}"
            if state != ReviewState.PENDING:
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
                store.update_txn(txn_key, state=TxnState.POSTED, effective_minor=hold.amount_minor,
                                 hold_id=hold_id)
            else:
                store.void_hold(hold_id, f"review {review_id}", now)
                store.update_txn(txn_key, state=TxnState.REVIEW_DECLINED, effective_minor=0,
                                 hold_id=hold_id)
                if txn.counts_daily and txn.card_id is not None:
                    store.add_daily_usage(txn.card_id, txn.business_day,
                                          -txn.effective_minor, -1)
            store.set_review(review_id, wanted, hold_id, now)
        return f"review {review_id} {wanted}"


def _mac_refused(request: Request, mti: str, terminal: TerminalRow | None) -> bool:
    """A wrong MAC, or none where the terminal or the MTI needs one (63)."""
    return check_mac(request_verdict(request.mac_status, terminal, mti)) is not None


def _parties(code: str, source: Account, dest: Account | None,
             merchant: MerchantRow) -> tuple[int, int]:
    """The accounts an original debits and credits: a refund pays the card
    from the merchant's settlement account; a transfer moves from source to
    destination; a purchase pays the settlement account and a withdrawal the
    cash clearing account."""
    if code == TxnType.REFUND:
        return merchant.settlement_account_id, source.id
    if code == TxnType.FUNDS_TRANSFER:
        assert dest is not None
        return source.id, dest.id
    if code == TxnType.PURCHASE:
        return source.id, merchant.settlement_account_id
    return source.id, merchant.cash_account_id


def _balances(account_type: str, account: Account) -> str:
    """DE54 of a balance inquiry: the ledger then the available balance."""
    currency = f"{account.currency:03d}"
    return build_de54((
        Balance(account_type, AMOUNT_TYPE_LEDGER, currency, account.ledger_balance_minor),
        Balance(account_type, AMOUNT_TYPE_AVAILABLE, currency, account.available_balance_minor),
    ))
