"""A seeded, deterministic world around one :class:`IssuerLink`: fake issuer
endpoints in memory (random delays, drops, closes, refused connects,
flapping, sign-offs, echoes, duplicate and stray answers), a fake clock and
a stream of requests, with the link's invariants checked after every step.

Everything random comes from one ``random.Random(seed)``, and events at the
same instant run in the order they were scheduled, so a seed replays the
same run exactly.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from iso_switch.links import (
    ANSWER_MTI,
    Answered,
    Close,
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
    Unmatched,
)

from .links_helpers import Stans, de7

#: A run that has not settled after this many steps is a bug (a busy loop).
MAX_STEPS = 200_000
_EPSILON_S = 1e-9
#: Requests still submitted once shutdown began (each must be refused).
_AFTER_SHUTDOWN = 3
_REQUEST_MTIS = sorted(ANSWER_MTI)


@dataclass
class Endpoint:
    """How one fake issuer endpoint behaves; drawn from the seed."""

    name: str
    refuse_p: float
    hang_p: float
    sign_on_refuse_p: float
    sign_on_silent_p: float
    drop_p: float
    close_p: float
    twice_p: float
    echo_silent_p: float
    delay_max_s: float
    down: bool = False


@dataclass
class FakeConn:
    endpoint: Endpoint
    open: bool = True
    signed_on: bool = False


@dataclass
class Tally:
    submitted: int = 0
    answered: int = 0
    stand_in: dict[str, int] = field(default_factory=dict)
    unmatched: dict[str, int] = field(default_factory=dict)
    connects: int = 0
    steps: int = 0


class LinkSim:
    """One seeded run; :meth:`run` raises AssertionError naming the broken invariant."""

    def __init__(self, seed: int, requests: int = 300) -> None:
        self.seed = seed
        self.rng = rng = random.Random(seed)
        self.now = 0.0
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._order = 0
        count = rng.randint(1, 4)
        self.config = LinkConfig(
            "bank-sim", tuple(f"fake-{i}:9583" for i in range(count)),
            timeout_s=rng.choice([0.5, 1.0, 2.0]), echo_interval_s=rng.choice([0.7, 2.0, 6.0]),
            max_outstanding=rng.randint(1, 24), max_outstanding_per_connection=rng.randint(1, 8))
        self.link = IssuerLink(self.config, Stans(), de7)
        self.endpoints = {name: self._draw_endpoint(name) for name in self.config.endpoints}
        self.conns: dict[ConnId, FakeConn] = {}
        self.sent: dict[RequestHandle, tuple[ConnId, dict[str, str]]] = {}
        self.unsent: set[RequestHandle] = set()
        self.ended: set[RequestHandle] = set()
        self.requests_left = requests
        self.tally = Tally()
        self.up = False
        self.stopping = False

    def _draw_endpoint(self, name: str) -> Endpoint:
        r = self.rng
        return Endpoint(name, refuse_p=r.choice([0, 0.1, 0.3]), hang_p=r.choice([0, 0.05]),
                        sign_on_refuse_p=r.choice([0, 0.1]), sign_on_silent_p=r.choice([0, 0.1]),
                        drop_p=r.choice([0, 0.02, 0.2]), close_p=r.choice([0, 0.01, 0.05]),
                        twice_p=r.choice([0, 0.05]), echo_silent_p=r.choice([0, 0.3]),
                        delay_max_s=r.choice([0.05, 0.5, 1.5, 3.0]))

    # --- the event loop -----------------------------------------------------

    def at(self, delay_s: float, action: Callable[[], None]) -> None:
        self._order += 1
        heapq.heappush(self._queue, (self.now + delay_s, self._order, action))

    def run(self) -> Tally:
        self.apply(self.link.start(self.now))
        self.at(0.0, self._next_request)
        self.at(self.rng.uniform(0, 3), self._chaos)
        while True:
            deadline = self.link.next_deadline()
            queued = self._queue[0][0] if self._queue else None
            if deadline is None and queued is None:
                break
            if queued is not None and (deadline is None or queued <= deadline):
                when, _, action = heapq.heappop(self._queue)
                self.now = max(self.now, when)
                action()
            else:
                assert deadline is not None
                self.now = max(self.now, deadline)
                self.apply(self.link.tick(self.now))
            self.check()
            self.tally.steps += 1
            assert self.tally.steps < MAX_STEPS, "the run does not settle"
        self.check_final()
        return self.tally

    # --- requests and the operator -----------------------------------------

    def _next_request(self) -> None:
        if self.requests_left == 0 and not self.stopping:
            self.stopping = True
            self.apply(self.link.shutdown(self.now))
            self.requests_left = _AFTER_SHUTDOWN
        if self.requests_left == 0:
            return
        self.requests_left -= 1
        number = self.tally.submitted
        self.tally.submitted += 1
        fields = {"t": self.rng.choice(_REQUEST_MTIS), "2": "5413330000000001",
                  "3": "000000", "4": "000000001000", "37": f"{number:012d}"}
        handle, out = self.link.submit(fields, self.now)
        self.unsent.add(handle)
        self.apply(out)
        self.at(self.rng.expovariate(1 / self.rng.choice([0.01, 0.1, 0.4])), self._next_request)

    def _chaos(self) -> None:
        """The world misbehaving: flapping endpoints, the issuer's own 0800s,
        connections closed by the issuer, the operator's down and up."""
        if self.stopping:
            return
        roll = self.rng.random()
        open_conns = [c for c, fake in self.conns.items() if fake.open]
        if roll < 0.15:
            endpoint = self.rng.choice(list(self.endpoints.values()))
            endpoint.down = not endpoint.down
            if endpoint.down:
                for conn in open_conns:
                    if self.conns[conn].endpoint is endpoint:
                        self._issuer_closes(conn)
        elif roll < 0.2:
            self.link.mark_down(not self.link.marked_down)
        elif open_conns:
            conn = self.rng.choice(open_conns)
            if roll < 0.3:
                self._issuer_closes(conn)
            else:
                code = "002" if roll < 0.4 else self.rng.choice(["001", "301"])
                stan = f"{self.rng.randint(1, 999_999):06d}"
                self._deliver(conn, {"t": "0800", "7": de7(self.now), "11": stan, "70": code})
        self.at(self.rng.expovariate(1 / 1.5), self._chaos)

    # --- the fake issuer ------------------------------------------------------

    def _issuer_closes(self, conn: ConnId) -> None:
        fake = self.conns[conn]
        if fake.open:
            fake.open = False
            self.apply(self.link.connection_lost(conn, self.now))

    def _deliver_later(self, conn: ConnId, fields: dict[str, str]) -> None:
        delay = self.rng.uniform(0, self.conns[conn].endpoint.delay_max_s)
        self.at(delay, lambda: self._deliver(conn, fields))

    def _deliver(self, conn: ConnId, fields: dict[str, str]) -> None:
        if self.conns[conn].open:
            self.apply(self.link.received(conn, fields, self.now))

    def _on_connect(self, out: Connect) -> None:
        endpoint = self.endpoints[out.endpoint]
        assert out.conn not in self.conns, "a connection id is never reused"
        self.conns[out.conn] = fake = FakeConn(endpoint)
        self.tally.connects += 1
        roll = self.rng.random()
        if roll < endpoint.hang_p:
            return  # the connect never completes: the link times it out

        def outcome() -> None:
            if not fake.open:
                return
            if endpoint.down or roll < endpoint.hang_p + endpoint.refuse_p:
                fake.open = False
                self.apply(self.link.connection_lost(out.conn, self.now))
            else:
                self.apply(self.link.connected(out.conn, self.now))
        self.at(self.rng.uniform(0, 0.2), outcome)

    def _on_network(self, conn: ConnId, fields: dict[str, str]) -> None:
        fake, code = self.conns[conn], fields["70"]
        answer = {"t": "0810", "7": fields["7"], "11": fields["11"], "70": code, "39": "00"}
        roll = self.rng.random()
        if code == "001":
            if roll < fake.endpoint.sign_on_silent_p:
                return
            if roll < fake.endpoint.sign_on_silent_p + fake.endpoint.sign_on_refuse_p:
                answer["39"] = "91"
            else:
                fake.signed_on = True
            self._deliver_later(conn, answer)
        elif code == "301" and roll >= fake.endpoint.echo_silent_p:
            self._deliver_later(conn, answer)

    def _on_request(self, conn: ConnId, fields: dict[str, str]) -> None:
        fake = self.conns[conn]
        roll = self.rng.random()
        answer = {"t": ANSWER_MTI[fields["t"]], "11": fields["11"], "37": fields["37"],
                  "39": self.rng.choice(["00", "00", "05", "51"])}
        if roll < fake.endpoint.drop_p:
            return
        if roll < fake.endpoint.drop_p + fake.endpoint.close_p:
            self.at(self.rng.uniform(0, fake.endpoint.delay_max_s),
                    lambda: self._issuer_closes(conn))
            return
        self._deliver_later(conn, answer)
        if self.rng.random() < fake.endpoint.twice_p:
            self._deliver_later(conn, answer)
        noise = self.rng.random()
        if noise < 0.02:  # a stray answer nobody asked for
            self._deliver_later(conn, answer | {"37": "999999999999"})
        elif noise < 0.04:  # an answer without DE39 is no answer
            self._deliver_later(conn, {k: v for k, v in answer.items() if k != "39"})

    # --- executing the link's outputs and checking them --------------------

    def apply(self, outputs: list[Output]) -> None:
        for out in outputs:
            if isinstance(out, Connect):
                self._on_connect(out)
            elif isinstance(out, Send):
                self._on_send(out)
            elif isinstance(out, Close):
                self.conns[out.conn].open = False
            elif isinstance(out, Answered | StandIn):
                self._on_end(out)
            elif isinstance(out, Unmatched):
                self.tally.unmatched[out.why] = self.tally.unmatched.get(out.why, 0) + 1
            elif isinstance(out, IssuerUp | IssuerDown):
                assert self.up != isinstance(out, IssuerUp), f"{out} twice in a row"
                self.up = isinstance(out, IssuerUp)

    def _on_send(self, out: Send) -> None:
        fake = self.conns[out.conn]
        assert fake.open, f"sent on a closed connection {out.conn}"
        fields = dict(out.fields)
        if fields["t"] == "0800":
            self._on_network(out.conn, fields)
            return
        if fields["t"] == "0810":
            assert fields["39"] == "00", "the issuer's 0800 is answered 00"
            return
        view = self.link.connection(out.conn)
        assert view is not None and view.state is ConnState.READY, \
            f"request sent on connection {out.conn} in state {view and view.state}"
        assert fake.signed_on, f"request before sign-on on connection {out.conn}"
        [handle] = [h for h in self.unsent if h not in self.sent]
        self.unsent.discard(handle)
        self.sent[handle] = (out.conn, fields)
        self._on_request(out.conn, fields)

    def _on_end(self, out: Answered | StandIn) -> None:
        handle = out.handle
        assert handle not in self.ended, f"request {handle} ended twice"
        self.ended.add(handle)
        self.unsent.discard(handle)
        if isinstance(out, Answered):
            assert handle in self.sent, f"request {handle} answered but never sent"
            _, sent = self.sent[handle]
            assert (out.fields["t"], out.fields["11"], out.fields["37"]) == (
                ANSWER_MTI[sent["t"]], sent["11"], sent["37"]), f"request {handle} mismatched"
            self.tally.answered += 1
        else:
            reason = out.reason.value
            self.tally.stand_in[reason] = self.tally.stand_in.get(reason, 0) + 1
            assert out.reason.forwarded == (handle in self.sent), \
                f"request {handle}: {reason} does not fit whether it was sent"

    def check(self) -> None:
        """The invariants that hold between any two steps."""
        link, config = self.link, self.config
        assert not self.unsent, "a submitted request neither sent nor ended"
        in_flight = {h for h in self.sent if h not in self.ended}
        assert link.outstanding == len(in_flight), "the link's outstanding count is off"
        assert link.outstanding <= config.max_outstanding, "over max_outstanding"
        assert link.issuer_up == self.up, "IssuerUp/IssuerDown disagree with issuer_up"
        for view in link.connections():
            assert view.outstanding <= config.max_outstanding_per_connection, \
                f"connection {view.conn} over the per-connection limit"
            assert config.backoff_first_s <= view.backoff_s <= config.backoff_max_s, \
                f"backoff {view.backoff_s} s out of bounds"
            if view.state is ConnState.DISCONNECTED:
                assert view.reconnect_at_s is not None, "a disconnected endpoint never retries"
                assert view.reconnect_at_s - self.now <= config.backoff_max_s + _EPSILON_S, \
                    f"reconnect {view.reconnect_at_s - self.now} s away"
            if view.state in (ConnState.READY, ConnState.DRAINING):
                assert view.last_received_s is not None
                silent_s = self.now - view.last_received_s
                assert view.echo_pending or silent_s <= config.echo_interval_s + _EPSILON_S, \
                    f"connection {view.conn} silent {silent_s:.3f} s without an echo out"
        assert link.issuer_up == any(v.state is ConnState.READY for v in link.connections()), \
            "issuer_up is not 'a connection is signed on'"

    def check_final(self) -> None:
        assert self.link.finished, "shutdown did not finish"
        assert self.tally.submitted == len(self.ended), "a request never ended"
