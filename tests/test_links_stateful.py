"""A hypothesis state machine drives one :class:`IssuerLink` with events in
any order and compares every output with a small model of interface
section 7.1: which connections exist in which state, which requests are
outstanding where, which end how, when reconnects happen.

Echoes are left out here (the echo interval is beyond any run): the unit
tests and the seeded simulation cover them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from iso_switch.links import (
    ANSWER_MTI,
    AUTHORISATION_MTIS,
    Answered,
    Close,
    CloseReason,
    Connect,
    ConnId,
    ConnState,
    IssuerDown,
    IssuerLink,
    IssuerUp,
    LinkConfig,
    Output,
    RequestHandle,
    Send,
    StandIn,
    StandInReason,
    Unmatched,
    UnmatchedWhy,
)

from .links_helpers import Stans, answer_to, de7, sign_on_answer

TIMEOUT_S = 4.0
_FIRST_S, _MAX_S = 1.0, 30.0
_CARRYING = (ConnState.READY, ConnState.DRAINING)


@dataclass
class ModelReq:
    conn: ConnId
    fields: dict[str, str]
    deadline_s: float


@dataclass
class ModelSlot:
    endpoint: str
    state: ConnState = ConnState.CONNECTING
    conn: ConnId | None = None
    deadline_s: float | None = TIMEOUT_S
    reconnect_at_s: float | None = None
    backoff_s: float = _FIRST_S
    sign_on: Send | None = None
    signed_off: bool = False
    outstanding: dict[RequestHandle, ModelReq] = field(default_factory=dict)


@dataclass
class Expected:
    """What one call should output, by kind (the order within a kind aside)."""

    connects: list[str] = field(default_factory=list)
    closes: set[tuple[ConnId, CloseReason]] = field(default_factory=set)
    stand_ins: set[tuple[RequestHandle, StandInReason]] = field(default_factory=set)
    sends: list[tuple[ConnId, str, str]] = field(default_factory=list)
    answered: set[RequestHandle] = field(default_factory=set)
    unmatched: list[UnmatchedWhy] = field(default_factory=list)


class LinkModelMachine(RuleBasedStateMachine):
    # --- set-up --------------------------------------------------------------

    @initialize(count=st.integers(1, 3), max_outstanding=st.integers(1, 6),
                per_connection=st.integers(1, 4))
    def start(self, count: int, max_outstanding: int, per_connection: int) -> None:
        self.config = LinkConfig("bank-m", tuple(f"e{i}:1" for i in range(count)),
                                 timeout_s=TIMEOUT_S, echo_interval_s=1e9,
                                 max_outstanding=max_outstanding,
                                 max_outstanding_per_connection=per_connection)
        self.link = IssuerLink(self.config, Stans(), de7)
        self.now = 0.0
        self.slots = [ModelSlot(endpoint) for endpoint in self.config.endpoints]
        self.up = False
        self.shutdown_at: float | None = None
        self.marked_down = False
        self.last_pick = -1
        self.rrn = 0
        self.ended: Counter[RequestHandle] = Counter()
        self.handles: set[RequestHandle] = set()
        self.timed_out: list[tuple[ConnId, dict[str, str]]] = []
        out = self.link.start(0.0)
        self.compare(out, Expected(connects=list(self.config.endpoints)))

    # --- comparing the link's outputs with the model's -------------------------

    def compare(self, out: list[Output], exp: Expected, up_before: bool | None = None) -> None:
        was_up = self.up if up_before is None else up_before
        self.up = any(m.state is ConnState.READY for m in self.slots)
        connects = [o for o in out if isinstance(o, Connect)]
        assert [c.endpoint for c in connects] == exp.connects
        for connect in connects:
            slot = next(m for m in self.slots if m.endpoint == connect.endpoint)
            slot.conn = connect.conn
        assert {(o.conn, o.reason) for o in out if isinstance(o, Close)} == exp.closes
        stand_ins = {(o.handle, o.reason) for o in out if isinstance(o, StandIn)}
        assert stand_ins == exp.stand_ins
        answered = {o.handle for o in out if isinstance(o, Answered)}
        assert answered == exp.answered
        self.ended.update([h for h, _ in stand_ins] + list(answered))
        sends = [(o.conn, o.fields["t"], o.fields.get("70", "")) for o in out
                 if isinstance(o, Send) and o.fields["t"] in ("0800", "0810")]
        assert sorted(sends) == sorted(exp.sends)
        assert [o.why for o in out if isinstance(o, Unmatched)] == exp.unmatched
        ups = [o for o in out if isinstance(o, IssuerUp | IssuerDown)]
        assert ups == ([] if self.up == was_up else
                       [IssuerUp("bank-m") if self.up else IssuerDown("bank-m")])

    def close(self, slot: ModelSlot, reason: CloseReason | None, exp: Expected) -> None:
        assert slot.conn is not None
        if reason is not None:
            exp.closes.add((slot.conn, reason))
        exp.stand_ins |= {(h, StandInReason.CONNECTION_CLOSED) for h in slot.outstanding}
        slot.outstanding.clear()
        slot.conn, slot.sign_on, slot.signed_off = None, None, False
        if self.shutdown_at is not None:
            slot.state = ConnState.CLOSED
            return
        slot.state = ConnState.DISCONNECTED
        slot.reconnect_at_s = self.now + slot.backoff_s
        slot.backoff_s = min(slot.backoff_s * 2, _MAX_S)

    def finish_drain(self, slot: ModelSlot, exp: Expected) -> None:
        if slot.signed_off:
            self.close(slot, CloseReason.ISSUER_SIGNED_OFF, exp)
            return
        assert slot.conn is not None
        exp.sends.append((slot.conn, "0800", "002"))
        self.close(slot, CloseReason.SHUTDOWN, exp)

    def slot_of(self, index: int) -> ModelSlot:
        return self.slots[index % len(self.slots)]

    # --- connections -------------------------------------------------------------

    @rule(index=st.integers(0, 2))
    def tcp_connects(self, index: int) -> None:
        slot = self.slot_of(index)
        if slot.state is not ConnState.CONNECTING:
            return
        assert slot.conn is not None
        out = self.link.connected(slot.conn, self.now)
        slot.state, slot.deadline_s = ConnState.SIGNING_ON, self.now + TIMEOUT_S
        [slot.sign_on] = out  # type: ignore[list-item]
        self.compare(out, Expected(sends=[(slot.conn, "0800", "001")]))

    @rule()
    def every_pending_connection_signs_on(self) -> None:
        """A shortcut to several signed-on connections, where spreading matters."""
        for index, slot in enumerate(self.slots):
            self.tcp_connects(index)
            self.sign_on_answered(index, approved=True)
            assert slot.state not in (ConnState.CONNECTING, ConnState.SIGNING_ON)

    @rule(index=st.integers(0, 2))
    def tcp_lost(self, index: int) -> None:
        slot = self.slot_of(index)
        if slot.conn is None:
            return
        conn, exp = slot.conn, Expected()
        self.close(slot, None, exp)
        self.compare(self.link.connection_lost(conn, self.now), exp)

    @rule(index=st.integers(0, 2), approved=st.booleans())
    def sign_on_answered(self, index: int, approved: bool) -> None:
        slot = self.slot_of(index)
        if slot.state is not ConnState.SIGNING_ON:
            return
        assert slot.conn is not None and slot.sign_on is not None
        conn, exp = slot.conn, Expected()
        answer = sign_on_answer(slot.sign_on, "00" if approved else "05")
        if approved:
            slot.state, slot.backoff_s, slot.deadline_s = ConnState.READY, _FIRST_S, None
        else:
            self.close(slot, CloseReason.SIGN_ON_REFUSED, exp)
        self.compare(self.link.received(conn, answer, self.now), exp)

    @rule(index=st.integers(0, 2), code=st.sampled_from(["001", "002", "301"]))
    def issuer_network_message(self, index: int, code: str) -> None:
        slot = self.slot_of(index)
        if slot.state not in (ConnState.SIGNING_ON, *_CARRYING):
            return
        assert slot.conn is not None
        conn, exp = slot.conn, Expected(sends=[(slot.conn, "0810", code)])
        if code == "002":
            slot.signed_off = True
            if slot.state is ConnState.SIGNING_ON:
                self.close(slot, CloseReason.ISSUER_SIGNED_OFF, exp)
            elif slot.state is ConnState.READY:
                slot.state = ConnState.DRAINING
                if not slot.outstanding:
                    self.finish_drain(slot, exp)
        fields = {"t": "0800", "7": de7(self.now), "11": "424242", "70": code}
        self.compare(self.link.received(conn, fields, self.now), exp)

    # --- requests -----------------------------------------------------------------

    def refusal(self, mti: str) -> StandInReason | None:
        ready = [m for m in self.slots if m.state is ConnState.READY]
        total = sum(len(m.outstanding) for m in self.slots)
        if self.shutdown_at is not None:
            return StandInReason.SHUTTING_DOWN
        if self.marked_down and mti in AUTHORISATION_MTIS:
            return StandInReason.MARKED_DOWN
        if not ready:
            return StandInReason.NO_CONNECTION
        if total >= self.config.max_outstanding:
            return StandInReason.MAX_OUTSTANDING
        if all(len(m.outstanding) >= self.config.max_outstanding_per_connection for m in ready):
            return StandInReason.CONNECTIONS_FULL
        return None

    def pick(self) -> int:
        ready = [i for i, m in enumerate(self.slots) if m.state is ConnState.READY
                 and len(m.outstanding) < self.config.max_outstanding_per_connection]
        fewest = min(len(self.slots[i].outstanding) for i in ready)
        order = [(self.last_pick + 1 + k) % len(self.slots) for k in range(len(self.slots))]
        self.last_pick = next(i for i in order if i in ready
                              and len(self.slots[i].outstanding) == fewest)
        return self.last_pick

    @rule(mti=st.sampled_from(sorted(ANSWER_MTI)))
    def submit(self, mti: str) -> None:
        self.rrn += 1
        reason = self.refusal(mti)
        handle, out = self.link.submit({"t": mti, "37": f"{self.rrn:012d}"}, self.now)
        assert handle not in self.handles
        self.handles.add(handle)
        if reason is not None:
            self.compare(out, Expected(stand_ins={(handle, reason)}))
            return
        slot = self.slots[self.pick()]
        [sent] = out
        assert isinstance(sent, Send) and sent.conn == slot.conn
        slot.outstanding[handle] = ModelReq(sent.conn, dict(sent.fields), self.now + TIMEOUT_S)
        self.compare(out, Expected())

    def all_outstanding(self) -> list[tuple[ModelSlot, RequestHandle, ModelReq]]:
        return [(m, h, r) for m in self.slots for h, r in m.outstanding.items()]

    @precondition(lambda self: self.all_outstanding())
    @rule(data=st.data(), how=st.sampled_from(["right", "wrong-de37", "wrong-mti",
                                               "no-de39", "other-connection"]))
    def issuer_answers(self, data: st.DataObject, how: str) -> None:
        slot, handle, req = data.draw(st.sampled_from(self.all_outstanding()))
        answer, conn, exp = answer_to(req.fields), req.conn, Expected()
        if how == "right":
            del slot.outstanding[handle]
            exp.answered.add(handle)
            if slot.state is ConnState.DRAINING and not slot.outstanding:
                self.finish_drain(slot, exp)
        elif how == "no-de39":
            del answer["39"]
            exp.unmatched.append(UnmatchedWhy.NO_RESPONSE_CODE)
        elif how == "other-connection":
            others = [m.conn for m in self.slots if m.state in _CARRYING and m is not slot]
            if not others:
                return
            conn = others[0]  # type: ignore[assignment]
            exp.unmatched.append(UnmatchedWhy.NO_MATCH)
        else:
            answer |= {"37": "999999999999"} if how == "wrong-de37" else {"t": "0810"}
            exp.unmatched.append(UnmatchedWhy.NO_MATCH)
        self.compare(self.link.received(conn, answer, self.now), exp)

    @precondition(lambda self: self.timed_out)
    @rule(data=st.data())
    def late_answer(self, data: st.DataObject) -> None:
        conn, fields = data.draw(st.sampled_from(self.timed_out))
        slot = next((m for m in self.slots if m.conn == conn), None)
        expected = [UnmatchedWhy.LATE] if slot and slot.state in _CARRYING else []
        self.compare(self.link.received(conn, answer_to(fields), self.now),
                     Expected(unmatched=expected))

    # --- time, the operator, shutdown -------------------------------------------------

    @rule(seconds=st.sampled_from([0.25, 1.0, 3.9, 4.0, 10.0, 31.0]))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds
        exp = Expected()
        for slot in self.slots:
            self.tick_slot(slot, exp)
        if self.shutdown_at is not None and self.now >= self.shutdown_at:
            for slot in self.slots:
                if slot.state is ConnState.DRAINING:
                    self.finish_drain(slot, exp)
        self.compare(self.link.tick(self.now), exp)

    def tick_slot(self, slot: ModelSlot, exp: Expected) -> None:
        if slot.state is ConnState.DISCONNECTED:
            assert slot.reconnect_at_s is not None
            if self.now >= slot.reconnect_at_s:
                exp.connects.append(slot.endpoint)
                slot.state, slot.deadline_s = ConnState.CONNECTING, self.now + TIMEOUT_S
        elif slot.state in (ConnState.CONNECTING, ConnState.SIGNING_ON):
            assert slot.deadline_s is not None
            if self.now >= slot.deadline_s:
                self.close(slot, CloseReason.CONNECT_TIMEOUT if slot.state is
                           ConnState.CONNECTING else CloseReason.SIGN_ON_TIMEOUT, exp)
        elif slot.state in _CARRYING:
            for handle, req in list(slot.outstanding.items()):
                if req.deadline_s <= self.now:
                    del slot.outstanding[handle]
                    exp.stand_ins.add((handle, StandInReason.TIMED_OUT))
                    self.timed_out.append((req.conn, req.fields))
            if slot.state is ConnState.DRAINING and not slot.outstanding:
                self.finish_drain(slot, exp)

    @rule()
    def operator_toggles_down(self) -> None:
        self.marked_down = not self.marked_down
        self.link.mark_down(self.marked_down)

    @precondition(lambda self: self.shutdown_at is None)
    @rule()
    def shutdown(self) -> None:
        self.shutdown_at = self.now + TIMEOUT_S
        exp = Expected()
        for slot in self.slots:
            if slot.state is ConnState.DISCONNECTED:
                slot.state = ConnState.CLOSED
            elif slot.state in (ConnState.CONNECTING, ConnState.SIGNING_ON):
                self.close(slot, CloseReason.SHUTDOWN, exp)
            elif slot.state is ConnState.READY:
                slot.state = ConnState.DRAINING
                if not slot.outstanding:
                    self.finish_drain(slot, exp)
        self.compare(self.link.shutdown(self.now), exp)

    # --- invariants ---------------------------------------------------------------------

    @invariant()
    def link_agrees_with_the_model(self) -> None:
        views = self.link.connections()
        assert [v.state for v in views] == [m.state for m in self.slots]
        assert [v.conn for v in views] == [m.conn for m in self.slots]
        assert [v.outstanding for v in views] == [len(m.outstanding) for m in self.slots]
        assert [v.backoff_s for v in views] == [m.backoff_s for m in self.slots]
        for view, slot in zip(views, self.slots, strict=True):
            if view.state is ConnState.DISCONNECTED:
                assert view.reconnect_at_s == slot.reconnect_at_s
        assert self.link.issuer_up == self.up
        assert self.link.outstanding <= self.config.max_outstanding

    @invariant()
    def every_request_ends_at_most_once_and_only_once_it_is_not_outstanding(self) -> None:
        assert all(count == 1 for count in self.ended.values())
        waiting = {h for m in self.slots for h in m.outstanding}
        assert waiting | set(self.ended) == self.handles
        assert not waiting & set(self.ended)

    def teardown(self) -> None:
        """Every run ends with a shutdown that closes everything and ends every request."""
        if not hasattr(self, "link"):
            return
        if self.shutdown_at is None:
            self.shutdown()
        self.time_passes(31.0)
        assert self.link.finished
        assert set(self.ended) == self.handles


TestLinkModel = LinkModelMachine.TestCase
