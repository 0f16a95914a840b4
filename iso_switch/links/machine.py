"""One remote issuer's links as a sans-I/O state machine.

The machine owns a pool of connections, one per endpoint, and the requests
outstanding on each. It never touches a socket, a clock or trio: the shell
reports what happened (a connection opened or was lost, a message arrived,
time passed) with the current ``now_s`` and executes the outputs it gets
back (:mod:`iso_switch.links.events`). Timers are data:
:meth:`IssuerLink.next_deadline` says when the shell must call
:meth:`IssuerLink.tick`.

The rules it keeps (interface section 7.1 and the matching of 7.2):

- every endpoint is connected and signed on (0800 DE70 001); only a
  connection whose sign-on got 0810 DE39 00 within ``timeout_s`` carries
  requests; the issuer is up while at least one connection is signed on;
- a connection that received nothing for ``echo_interval_s`` sends an echo
  (DE70 301), and is closed when its 0810 does not come within ``timeout_s``;
- a lost, refused or closed connection is reopened after a backoff that
  starts at 1 s and doubles to at most 30 s, back to 1 s after a sign-on;
- the issuer's own 0800 is answered 0810; after its sign-off (002) that
  connection takes nothing new and closes once its requests have ended;
- a request goes on the signed-on connection with the fewest outstanding
  (ties in turn), or is refused at once with a reason: nothing is queued;
- every submitted request ends exactly once, answered or handed to stand-in.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from iso_switch.links.config import MAX_REMEMBERED_TIMEOUTS, LinkConfig
from iso_switch.links.events import (
    Answered,
    Close,
    CloseReason,
    Connect,
    ConnId,
    ConnState,
    IssuerDown,
    IssuerUp,
    Output,
    RequestHandle,
    Send,
    StandIn,
    StandInReason,
    Unmatched,
    UnmatchedWhy,
)
from iso_switch.links.matching import (
    ANSWER_MTI,
    AUTHORISATION_MTIS,
    MatchKey,
    answer_key,
    network_request,
    request_key,
)
from iso_switch.protocol import NetworkCode, answer_network_management

__all__ = ["ConnectionView", "IssuerLink"]

_OPEN = frozenset({ConnState.SIGNING_ON, ConnState.READY, ConnState.DRAINING})
_CARRYING = frozenset({ConnState.READY, ConnState.DRAINING})
_APPROVED = "00"


@dataclass(frozen=True, slots=True)
class ConnectionView:
    """A read-only picture of one endpoint's connection (for the shell's
    status output, metrics and the tests' invariants)."""

    endpoint: str
    conn: ConnId | None
    state: ConnState
    outstanding: int
    backoff_s: float
    reconnect_at_s: float | None
    last_received_s: float | None
    echo_pending: bool


@dataclass(slots=True)
class _Pending:
    handle: RequestHandle
    deadline_s: float


class _Slot:
    """One endpoint: its current connection (if any), its timers and its requests."""

    __slots__ = ("backoff_s", "conn", "deadline_s", "echo_deadline_s", "echo_stan",
                 "endpoint", "index", "issuer_signed_off", "last_received_s",
                 "outstanding", "reconnect_at_s", "sign_on_stan", "state")

    def __init__(self, index: int, endpoint: str, backoff_s: float) -> None:
        self.index = index
        self.endpoint = endpoint
        self.state = ConnState.DISCONNECTED
        self.conn: ConnId | None = None
        self.backoff_s = backoff_s
        self.reconnect_at_s: float | None = None
        # The CONNECTING or SIGNING_ON deadline.
        self.deadline_s: float | None = None
        self.last_received_s: float | None = None
        self.sign_on_stan: str | None = None
        self.echo_stan: str | None = None
        self.echo_deadline_s: float | None = None
        self.issuer_signed_off = False
        # Insertion order is deadline order: every request waits timeout_s
        # from a now_s that never goes back.
        self.outstanding: dict[MatchKey, _Pending] = {}

    def next_deadline(self, echo_interval_s: float) -> float | None:
        if self.state is ConnState.DISCONNECTED:
            return self.reconnect_at_s
        if self.state in (ConnState.CONNECTING, ConnState.SIGNING_ON):
            return self.deadline_s
        if self.state not in _CARRYING:
            return None
        assert self.last_received_s is not None
        due = (self.echo_deadline_s if self.echo_stan is not None
               else self.last_received_s + echo_interval_s)
        assert due is not None
        first = next(iter(self.outstanding.values()), None)
        return due if first is None else min(due, first.deadline_s)


class IssuerLink:
    """The links to one remote issuer (see the module docstring for the rules).

    ``allocate_stan`` returns the next DE11 (6 digits) for the link's own
    0800s and for requests submitted without one; ``format_de7`` turns a
    ``now_s`` into DE7 (MMDDhhmmss). Both are injected so that the machine
    reads no clock and the trace-number sequence can live elsewhere.
    """

    def __init__(self, config: LinkConfig, allocate_stan: Callable[[], str],
                 format_de7: Callable[[float], str]) -> None:
        self.config = config
        self._allocate_stan = allocate_stan
        self._format_de7 = format_de7
        self._slots = [_Slot(i, endpoint, config.backoff_first_s)
                       for i, endpoint in enumerate(config.endpoints)]
        self._by_conn: dict[ConnId, _Slot] = {}
        self._timed_out: OrderedDict[tuple[ConnId, MatchKey], None] = OrderedDict()
        self._next_conn = 0
        self._next_handle = 0
        self._last_pick = -1
        self._up = False
        self._started = False
        self._marked_down = False
        self._shutdown_deadline_s: float | None = None
        self._now_s = float("-inf")

    # --- what the shell and the tests may look at -------------------------

    @property
    def issuer_up(self) -> bool:
        """Whether at least one connection is signed on."""
        return self._up

    @property
    def outstanding(self) -> int:
        """Requests sent and not yet ended, over all connections."""
        return sum(len(slot.outstanding) for slot in self._slots)

    @property
    def shutting_down(self) -> bool:
        return self._shutdown_deadline_s is not None

    @property
    def finished(self) -> bool:
        """Shut down, every connection closed, every request ended."""
        return all(slot.state is ConnState.CLOSED for slot in self._slots)

    @property
    def marked_down(self) -> bool:
        return self._marked_down

    def mark_down(self, down: bool) -> None:
        """The operator's ``issuer down``/``up``: while down, authorisations
        go to stand-in at once; advices and reversal advices still go."""
        self._marked_down = down

    def connections(self) -> list[ConnectionView]:
        return [self._view(slot) for slot in self._slots]

    def connection(self, conn: ConnId) -> ConnectionView | None:
        """The view of ``conn``, or None when the machine has forgotten it."""
        slot = self._by_conn.get(conn)
        return None if slot is None else self._view(slot)

    def next_deadline(self) -> float | None:
        """When :meth:`tick` must be called next (None: only on an event)."""
        deadlines = [d for slot in self._slots
                     if (d := slot.next_deadline(self.config.echo_interval_s)) is not None]
        if self._shutdown_deadline_s is not None and not self.finished:
            deadlines.append(self._shutdown_deadline_s)
        return min(deadlines, default=None)

    # --- events from the shell ---------------------------------------------

    def start(self, now_s: float) -> list[Output]:
        """Open a connection to every endpoint."""
        assert not self._started, "start() is called once"
        self._started = True
        self._advance(now_s)
        out: list[Output] = []
        for slot in self._slots:
            self._open(slot, now_s, out)
        return out

    def connected(self, conn: ConnId, now_s: float) -> list[Output]:
        """The TCP connection for ``conn`` is open: sign on."""
        self._advance(now_s)
        slot = self._by_conn.get(conn)
        if slot is None or slot.state is not ConnState.CONNECTING:
            return []
        slot.state = ConnState.SIGNING_ON
        slot.deadline_s = now_s + self.config.timeout_s
        slot.last_received_s = now_s
        slot.sign_on_stan = self._allocate_stan()
        return [Send(conn, network_request(NetworkCode.SIGN_ON, slot.sign_on_stan,
                                           self._format_de7(now_s)))]

    def connection_lost(self, conn: ConnId, now_s: float) -> list[Output]:
        """``conn`` was refused, failed, or closed by the issuer."""
        self._advance(now_s)
        slot = self._by_conn.get(conn)
        out: list[Output] = []
        if slot is not None:
            self._close(slot, now_s, None, out)
        return out

    def received(self, conn: ConnId, fields: Mapping[str, str], now_s: float) -> list[Output]:
        """A decoded message (MAC already verified by the shell) arrived on ``conn``."""
        self._advance(now_s)
        slot = self._by_conn.get(conn)
        if slot is None or slot.state not in _OPEN:
            return []
        slot.last_received_s = now_s
        mti = fields.get("t")
        if mti == "0800":
            return self._on_issuer_network(slot, fields, now_s)
        if mti == "0810":
            return self._on_network_answer(slot, fields, now_s)
        key = answer_key(fields)
        if key is None:
            return [Unmatched(conn, dict(fields), UnmatchedWhy.UNEXPECTED_MTI)]
        return self._on_answer(slot, key, fields, now_s)

    def submit(self, fields: Mapping[str, str], now_s: float
               ) -> tuple[RequestHandle, list[Output]]:
        """Send one request to the issuer, or refuse it at once.

        ``fields`` must carry an MTI the link forwards (:data:`ANSWER_MTI`)
        and DE37; DE11 and DE7 are filled in when absent (a store-and-forward
        repeat keeps its own). The :class:`Send` output carries the fields as
        they go out. The request ends later, exactly once, with
        :class:`Answered` or :class:`StandIn`.
        """
        if fields.get("t") not in ANSWER_MTI or not fields.get("37"):
            raise ValueError("submit() takes a request MTI the link forwards, with DE37")
        self._advance(now_s)
        self._next_handle += 1
        handle = RequestHandle(self._next_handle)
        refusal = self._refusal(fields["t"])
        if refusal is not None:
            return handle, [StandIn(handle, refusal)]
        message = dict(fields)
        if not message.get("11"):
            message["11"] = self._allocate_stan()
        if not message.get("7"):
            message["7"] = self._format_de7(now_s)
        key = request_key(message)
        slot, refusal = self._pick(key)
        if slot is None:
            assert refusal is not None
            return handle, [StandIn(handle, refusal)]
        assert slot.conn is not None
        slot.outstanding[key] = _Pending(handle, now_s + self.config.timeout_s)
        return handle, [Send(slot.conn, message)]

    def tick(self, now_s: float) -> list[Output]:
        """Let time pass: timeouts, echoes, reconnects, the end of a shutdown."""
        self._advance(now_s)
        out: list[Output] = []
        for slot in self._slots:
            self._tick_slot(slot, now_s, out)
        if self._shutdown_deadline_s is not None and now_s >= self._shutdown_deadline_s:
            for slot in self._slots:
                if slot.state is ConnState.DRAINING:
                    self._finish_drain(slot, now_s, out)
        return out

    def shutdown(self, now_s: float) -> list[Output]:
        """Stop taking requests; sign off each connection once its requests
        have ended (at most ``timeout_s`` from now); open nothing new."""
        self._advance(now_s)
        out: list[Output] = []
        if self._shutdown_deadline_s is not None:
            return out
        self._shutdown_deadline_s = now_s + self.config.timeout_s
        for slot in self._slots:
            if slot.state is ConnState.DISCONNECTED:
                slot.state = ConnState.CLOSED
                slot.reconnect_at_s = None
            elif slot.state in (ConnState.CONNECTING, ConnState.SIGNING_ON):
                self._close(slot, now_s, CloseReason.SHUTDOWN, out)
            elif slot.state is ConnState.READY:
                slot.state = ConnState.DRAINING
                self._finish_drain_if_empty(slot, now_s, out)
        self._update_up(out)
        return out

    # --- internals -----------------------------------------------------------

    def _advance(self, now_s: float) -> None:
        assert now_s >= self._now_s, "now_s must never go back"
        self._now_s = now_s

    def _view(self, slot: _Slot) -> ConnectionView:
        return ConnectionView(slot.endpoint, slot.conn, slot.state, len(slot.outstanding),
                              slot.backoff_s, slot.reconnect_at_s, slot.last_received_s,
                              slot.echo_stan is not None)

    def _ready(self) -> Iterator[_Slot]:
        return (slot for slot in self._slots if slot.state is ConnState.READY)

    def _refusal(self, mti: str) -> StandInReason | None:
        if self.shutting_down:
            return StandInReason.SHUTTING_DOWN
        if self._marked_down and mti in AUTHORISATION_MTIS:
            return StandInReason.MARKED_DOWN
        if not self._up:
            return StandInReason.NO_CONNECTION
        if self.outstanding >= self.config.max_outstanding:
            return StandInReason.MAX_OUTSTANDING
        return None

    def _pick(self, key: MatchKey) -> tuple[_Slot | None, StandInReason | None]:
        """The signed-on connection with the fewest outstanding, ties taken
        in turn after the last one picked; or why there is none."""
        limit = self.config.max_outstanding_per_connection
        with_room = [slot for slot in self._ready() if len(slot.outstanding) < limit]
        if not with_room:
            return None, StandInReason.CONNECTIONS_FULL
        free = [slot for slot in with_room if key not in slot.outstanding]
        if not free:
            return None, StandInReason.DUPLICATE_IN_FLIGHT
        fewest = min(len(slot.outstanding) for slot in free)
        count = len(self._slots)
        best = min((slot for slot in free if len(slot.outstanding) == fewest),
                   key=lambda slot: (slot.index - self._last_pick - 1) % count)
        self._last_pick = best.index
        return best, None

    def _open(self, slot: _Slot, now_s: float, out: list[Output]) -> None:
        self._next_conn += 1
        conn = ConnId(self._next_conn)
        slot.conn = conn
        slot.state = ConnState.CONNECTING
        slot.reconnect_at_s = None
        slot.deadline_s = now_s + self.config.timeout_s
        self._by_conn[conn] = slot
        out.append(Connect(conn, slot.endpoint))

    def _close(self, slot: _Slot, now_s: float, reason: CloseReason | None,
               out: list[Output]) -> None:
        """Forget ``slot``'s connection (telling the shell to close it unless
        ``reason`` is None: the shell saw it go), hand its requests to
        stand-in, and schedule the reconnect (none while shutting down)."""
        assert slot.conn is not None
        del self._by_conn[slot.conn]
        if reason is not None:
            out.append(Close(slot.conn, reason))
        for pending in slot.outstanding.values():
            out.append(StandIn(pending.handle, StandInReason.CONNECTION_CLOSED))
        slot.outstanding.clear()
        slot.conn = None
        slot.deadline_s = slot.last_received_s = None
        slot.sign_on_stan = slot.echo_stan = slot.echo_deadline_s = None
        slot.issuer_signed_off = False
        if self.shutting_down:
            slot.state = ConnState.CLOSED
        else:
            slot.state = ConnState.DISCONNECTED
            slot.reconnect_at_s = now_s + slot.backoff_s
            slot.backoff_s = self.config.next_backoff_s(slot.backoff_s)
        self._update_up(out)

    def _update_up(self, out: list[Output]) -> None:
        up = any(True for _ in self._ready())
        if up != self._up:
            self._up = up
            issuer = self.config.issuer_id
            out.append(IssuerUp(issuer) if up else IssuerDown(issuer))

    def _tick_slot(self, slot: _Slot, now_s: float, out: list[Output]) -> None:
        if slot.state is ConnState.DISCONNECTED:
            assert slot.reconnect_at_s is not None
            if now_s >= slot.reconnect_at_s:
                self._open(slot, now_s, out)
        elif slot.state in (ConnState.CONNECTING, ConnState.SIGNING_ON):
            assert slot.deadline_s is not None
            if now_s >= slot.deadline_s:
                reason = (CloseReason.CONNECT_TIMEOUT if slot.state is ConnState.CONNECTING
                          else CloseReason.SIGN_ON_TIMEOUT)
                self._close(slot, now_s, reason, out)
        elif slot.state in _CARRYING:
            self._expire_requests(slot, now_s, out)
            self._tick_echo(slot, now_s, out)
            if slot.state is ConnState.DRAINING:
                self._finish_drain_if_empty(slot, now_s, out)

    def _expire_requests(self, slot: _Slot, now_s: float, out: list[Output]) -> None:
        assert slot.conn is not None
        while slot.outstanding:
            key, pending = next(iter(slot.outstanding.items()))
            if pending.deadline_s > now_s:
                return
            del slot.outstanding[key]
            out.append(StandIn(pending.handle, StandInReason.TIMED_OUT))
            self._timed_out[(slot.conn, key)] = None
            if len(self._timed_out) > MAX_REMEMBERED_TIMEOUTS:
                self._timed_out.popitem(last=False)

    def _tick_echo(self, slot: _Slot, now_s: float, out: list[Output]) -> None:
        assert slot.conn is not None and slot.last_received_s is not None
        if slot.echo_stan is not None:
            assert slot.echo_deadline_s is not None
            if now_s >= slot.echo_deadline_s:
                self._close(slot, now_s, CloseReason.ECHO_TIMEOUT, out)
        elif now_s >= slot.last_received_s + self.config.echo_interval_s:
            slot.echo_stan = self._allocate_stan()
            slot.echo_deadline_s = now_s + self.config.timeout_s
            out.append(Send(slot.conn, network_request(NetworkCode.ECHO, slot.echo_stan,
                                                       self._format_de7(now_s))))

    def _finish_drain_if_empty(self, slot: _Slot, now_s: float, out: list[Output]) -> None:
        if not slot.outstanding:
            self._finish_drain(slot, now_s, out)

    def _finish_drain(self, slot: _Slot, now_s: float, out: list[Output]) -> None:
        """Close a draining connection: signed off by the issuer, just close
        (and reconnect later); at shutdown, sign off first."""
        assert slot.conn is not None
        if slot.issuer_signed_off:
            self._close(slot, now_s, CloseReason.ISSUER_SIGNED_OFF, out)
            return
        out.append(Send(slot.conn, network_request(NetworkCode.SIGN_OFF, self._allocate_stan(),
                                                   self._format_de7(now_s))))
        self._close(slot, now_s, CloseReason.SHUTDOWN, out)

    def _on_issuer_network(self, slot: _Slot, fields: Mapping[str, str],
                           now_s: float) -> list[Output]:
        assert slot.conn is not None
        out: list[Output] = [Send(slot.conn, answer_network_management(fields))]
        if fields.get("70") != NetworkCode.SIGN_OFF:
            return out
        slot.issuer_signed_off = True
        if slot.state is ConnState.SIGNING_ON:
            self._close(slot, now_s, CloseReason.ISSUER_SIGNED_OFF, out)
        elif slot.state is ConnState.READY:
            slot.state = ConnState.DRAINING
            self._update_up(out)
            self._finish_drain_if_empty(slot, now_s, out)
        return out

    def _on_network_answer(self, slot: _Slot, fields: Mapping[str, str],
                           now_s: float) -> list[Output]:
        assert slot.conn is not None
        out: list[Output] = []
        stan = fields.get("11")
        if slot.state is ConnState.SIGNING_ON and stan == slot.sign_on_stan:
            if fields.get("39") == _APPROVED:
                slot.state = ConnState.READY
                slot.deadline_s = slot.sign_on_stan = None
                slot.backoff_s = self.config.backoff_first_s
                self._update_up(out)
            else:
                self._close(slot, now_s, CloseReason.SIGN_ON_REFUSED, out)
        elif slot.echo_stan is not None and stan == slot.echo_stan:
            slot.echo_stan = slot.echo_deadline_s = None
        else:
            out.append(Unmatched(slot.conn, dict(fields), UnmatchedWhy.NO_MATCH))
        return out

    def _on_answer(self, slot: _Slot, key: MatchKey, fields: Mapping[str, str],
                   now_s: float) -> list[Output]:
        assert slot.conn is not None
        pending = slot.outstanding.get(key)
        if pending is None:
            late = (slot.conn, key) in self._timed_out
            why = UnmatchedWhy.LATE if late else UnmatchedWhy.NO_MATCH
            return [Unmatched(slot.conn, dict(fields), why)]
        if not fields.get("39"):
            # Handled as no answer: the request keeps waiting for a usable one.
            return [Unmatched(slot.conn, dict(fields), UnmatchedWhy.NO_RESPONSE_CODE)]
        del slot.outstanding[key]
        out: list[Output] = [Answered(pending.handle, dict(fields))]
        if slot.state is ConnState.DRAINING:
            self._finish_drain_if_empty(slot, now_s, out)
        return out
