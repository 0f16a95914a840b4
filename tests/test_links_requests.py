"""Requests on the issuer link (interface sections 7.1 to 7.3, as far as the
link goes): matching by MTI + 10, DE11 and DE37 on the connection, timeouts
and late answers, refusals instead of queues, spreading over connections."""

from __future__ import annotations

import pytest

from iso_switch.links import (
    ANSWER_MTI,
    Answered,
    ConnState,
    Send,
    StandIn,
    StandInReason,
    Unmatched,
    UnmatchedWhy,
)

from .links_helpers import (
    TIMEOUT_S,
    answer_to,
    make_link,
    ready_link,
    request,
)


def _sent(out: list[object]) -> Send:
    [sent] = out
    assert isinstance(sent, Send)
    return sent


@pytest.mark.parametrize("mti", sorted(ANSWER_MTI))
def test_an_answer_with_mti_plus_10_and_the_same_de11_de37_ends_the_request(mti: str) -> None:
    link, [conn] = ready_link()
    handle, out = link.submit(request(mti=mti), 1.0)
    sent = _sent(out)
    assert sent.conn == conn
    answer = answer_to(sent)
    assert link.received(conn, answer, 1.5) == [Answered(handle, answer)]
    assert link.outstanding == 0


def test_de11_and_de7_come_from_the_allocator_and_formatter_unless_given() -> None:
    link, _ = ready_link()
    _, out = link.submit(request(), 61.0)
    assert (_sent(out).fields["11"], _sent(out).fields["7"]) == ("000002", "1208000101")
    _, out = link.submit(request("000000000002", **{"11": "123456", "7": "1207235959"}), 62.0)
    assert (_sent(out).fields["11"], _sent(out).fields["7"]) == ("123456", "1207235959")


@pytest.mark.parametrize("change", [{"37": "999999999999"}, {"11": "999999"}, {"t": "0110"},
                                    {"t": "0230"}])
def test_an_answer_differing_in_de37_de11_or_mti_matches_nothing(change: dict[str, str]) -> None:
    link, [conn] = ready_link()
    handle, out = link.submit(request(), 1.0)
    wrong = answer_to(_sent(out)) | change
    assert link.received(conn, wrong, 1.5) == [Unmatched(conn, wrong, UnmatchedWhy.NO_MATCH)]
    assert link.outstanding == 1
    right = answer_to(_sent(out))
    assert link.received(conn, right, 2.0) == [Answered(handle, right)]


def test_an_answer_on_another_connection_matches_nothing() -> None:
    link, [a, b] = ready_link(2)
    _, out = link.submit(request(), 1.0)
    sent = _sent(out)
    other = b if sent.conn == a else a
    answer = answer_to(sent)
    assert link.received(other, answer, 1.5) == [Unmatched(other, answer, UnmatchedWhy.NO_MATCH)]
    assert link.outstanding == 1


def test_an_answer_without_de39_is_no_answer_and_the_request_keeps_waiting() -> None:
    link, [conn] = ready_link()
    handle, out = link.submit(request(), 1.0)
    answer = answer_to(_sent(out))
    del answer["39"]
    assert link.received(conn, answer, 1.5) == [
        Unmatched(conn, answer, UnmatchedWhy.NO_RESPONSE_CODE)]
    assert link.tick(1.0 + TIMEOUT_S) == [StandIn(handle, StandInReason.TIMED_OUT)]


def test_a_message_the_link_does_not_take_is_unexpected() -> None:
    link, [conn] = ready_link()
    fields = {"t": "0100", "11": "000001", "37": "000000000001"}
    assert link.received(conn, fields, 1.0) == [
        Unmatched(conn, fields, UnmatchedWhy.UNEXPECTED_MTI)]


def test_no_answer_within_timeout_goes_to_stand_in_and_a_late_answer_changes_nothing() -> None:
    link, [conn] = ready_link()
    handle, out = link.submit(request(), 1.0)
    assert link.next_deadline() == 1.0 + TIMEOUT_S
    assert link.tick(1.0 + TIMEOUT_S - 0.001) == []
    assert link.tick(1.0 + TIMEOUT_S) == [StandIn(handle, StandInReason.TIMED_OUT)]
    answer = answer_to(_sent(out))
    assert link.received(conn, answer, 9.0) == [Unmatched(conn, answer, UnmatchedWhy.LATE)]
    assert link.outstanding == 0


def test_a_connection_lost_with_requests_outstanding_hands_each_to_stand_in_at_once() -> None:
    link, [conn] = ready_link()
    first, _ = link.submit(request(), 1.0)
    second, _ = link.submit(request("000000000002"), 1.1)
    out = link.connection_lost(conn, 1.5)
    assert out[:2] == [StandIn(first, StandInReason.CONNECTION_CLOSED),
                       StandIn(second, StandInReason.CONNECTION_CLOSED)]
    # Nothing left to time out; only the reconnect happens.
    assert not [o for o in link.tick(1.0 + TIMEOUT_S) if isinstance(o, StandIn)]
    refused, out = link.submit(request("000000000003"), 1.0 + TIMEOUT_S)
    assert out == [StandIn(refused, StandInReason.NO_CONNECTION)]


def test_max_outstanding_per_issuer_refuses_at_once() -> None:
    link, _ = ready_link(2, max_outstanding=3)
    for i in range(3):
        _, out = link.submit(request(f"00000000000{i}"), 1.0)
        _sent(out)
    refused, out = link.submit(request("000000000009"), 1.0)
    assert out == [StandIn(refused, StandInReason.MAX_OUTSTANDING)]


def test_the_per_connection_limit_refuses_when_every_connection_is_full() -> None:
    link, _ = ready_link(2, max_outstanding_per_connection=2)
    for i in range(4):
        _sent(link.submit(request(f"00000000000{i}"), 1.0)[1])
    assert [v.outstanding for v in link.connections()] == [2, 2]
    refused, out = link.submit(request("000000000009"), 1.0)
    assert out == [StandIn(refused, StandInReason.CONNECTIONS_FULL)]


def test_a_key_already_in_flight_on_every_connection_is_refused() -> None:
    link, _ = ready_link()
    fields = request(**{"11": "000500"})
    _sent(link.submit(fields, 1.0)[1])
    refused, out = link.submit(fields, 1.0)
    assert out == [StandIn(refused, StandInReason.DUPLICATE_IN_FLIGHT)]


def test_requests_spread_over_connections_fewest_outstanding_then_in_turn() -> None:
    link, conns = ready_link(3)
    picked = [_sent(link.submit(request(f"0000000000{i:02d}"), 1.0)[1]).conn for i in range(6)]
    assert picked == conns + conns
    # Answer two on the second connection: it now has the fewest and gets the
    # next two; then all are even and the turn goes on after it.
    link2, [_, b, c] = ready_link(3)
    sent = [_sent(link2.submit(request(f"0000000000{i:02d}"), 1.0)[1]) for i in range(6)]
    for s in sent:
        if s.conn == b:
            link2.received(b, answer_to(s), 1.2)
    nxt = [_sent(link2.submit(request(f"0000000001{i:02d}"), 1.3)[1]).conn for i in range(3)]
    assert nxt == [b, b, c]


def test_no_signed_on_connection_refuses_at_once() -> None:
    link = make_link()
    link.start(0.0)
    handle, out = link.submit(request(), 0.5)
    assert out == [StandIn(handle, StandInReason.NO_CONNECTION)]


def test_issuer_marked_down_refuses_authorisations_but_advices_still_go() -> None:
    link, [conn] = ready_link()
    link.mark_down(True)
    handle, out = link.submit(request(mti="0100"), 1.0)
    assert out == [StandIn(handle, StandInReason.MARKED_DOWN)]
    assert _sent(link.submit(request(mti="0420"), 1.0)[1]).conn == conn
    link.mark_down(False)
    assert _sent(link.submit(request("000000000002", mti="0200"), 1.0)[1]).conn == conn


def test_stale_connection_ids_are_ignored() -> None:
    link, [conn] = ready_link()
    link.connection_lost(conn, 1.0)
    assert link.connection(conn) is None
    assert link.received(conn, {"t": "0810", "39": "00"}, 1.1) == []
    assert link.connected(conn, 1.2) == []
    assert link.connection_lost(conn, 1.3) == []
    assert link.connections()[0].state is ConnState.DISCONNECTED


@pytest.mark.parametrize("fields", [{"t": "0800", "37": "1"}, {"t": "0200"}, {"37": "1"}])
def test_submit_takes_only_a_forwardable_request_with_de37(fields: dict[str, str]) -> None:
    link, _ = ready_link()
    with pytest.raises(ValueError, match="DE37"):
        link.submit(fields, 1.0)
