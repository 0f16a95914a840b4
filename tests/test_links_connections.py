"""The issuer link's connections, one rule at a time (interface section 7.1):
sign-on, echo on silence, the issuer's own 0800s, its sign-off, reconnect
backoff and shutdown. Pure: no sockets, a clock that is just a number."""

from __future__ import annotations

import pytest

from iso_switch.links import (
    Close,
    CloseReason,
    Connect,
    ConnState,
    IssuerDown,
    IssuerUp,
    LinkConfig,
    Send,
    StandIn,
    StandInReason,
)

from .links_helpers import (
    ECHO_INTERVAL_S,
    ISSUER,
    TIMEOUT_S,
    answer_to,
    make_link,
    ready_link,
    request,
    sign_on,
    sign_on_answer,
)


def test_start_connects_every_endpoint_and_sign_on_follows_the_connection() -> None:
    link = make_link(["a:1", "b:2"])
    out = link.start(0.0)
    assert [(o.endpoint) for o in out if isinstance(o, Connect)] == ["a:1", "b:2"]
    assert [v.state for v in link.connections()] == [ConnState.CONNECTING] * 2
    [sent] = link.connected(out[0].conn, 0.5)  # type: ignore[union-attr]
    assert isinstance(sent, Send)
    assert sent.fields == {"t": "0800", "7": "1208000000", "11": "000001", "70": "001"}
    assert link.connections()[0].state is ConnState.SIGNING_ON
    assert not link.issuer_up


def test_sign_on_answered_00_makes_the_connection_ready_and_the_issuer_up() -> None:
    link = make_link()
    [connect] = link.start(0.0)
    assert isinstance(connect, Connect)
    out = sign_on(link, connect.conn, 1.0)
    assert out == [IssuerUp(ISSUER)]
    assert link.issuer_up
    assert link.connection(connect.conn).state is ConnState.READY  # type: ignore[union-attr]


def test_sign_on_refused_closes_and_waits_for_the_backoff() -> None:
    link = make_link()
    [connect] = link.start(0.0)
    [sent] = link.connected(connect.conn, 0.0)  # type: ignore[union-attr]
    out = link.received(connect.conn, sign_on_answer(sent, rc="91"), 0.2)  # type: ignore
    assert out == [Close(connect.conn, CloseReason.SIGN_ON_REFUSED)]  # type: ignore
    [view] = link.connections()
    assert view.state is ConnState.DISCONNECTED and view.reconnect_at_s == pytest.approx(1.2)
    assert not link.issuer_up


def test_no_sign_on_answer_within_timeout_closes() -> None:
    link = make_link()
    [connect] = link.start(0.0)
    link.connected(connect.conn, 1.0)  # type: ignore[union-attr]
    assert link.next_deadline() == 1.0 + TIMEOUT_S
    assert link.tick(1.0 + TIMEOUT_S - 0.01) == []
    out = link.tick(1.0 + TIMEOUT_S)
    assert out == [Close(connect.conn, CloseReason.SIGN_ON_TIMEOUT)]  # type: ignore
    # An answer that comes after the close belongs to a forgotten connection.
    assert link.received(connect.conn, {"t": "0810", "39": "00"}, 6.0) == []  # type: ignore


def test_a_connect_that_never_completes_times_out() -> None:
    link = make_link()
    [connect] = link.start(0.0)
    assert link.tick(TIMEOUT_S) == [Close(connect.conn, CloseReason.CONNECT_TIMEOUT)]  # type: ignore


def test_silence_for_echo_interval_sends_an_echo_and_its_answer_keeps_the_link() -> None:
    link, [conn] = ready_link()
    assert link.next_deadline() == ECHO_INTERVAL_S
    assert link.tick(ECHO_INTERVAL_S - 0.1) == []
    [echo] = link.tick(ECHO_INTERVAL_S)
    assert isinstance(echo, Send) and echo.fields["70"] == "301" and echo.fields["t"] == "0800"
    assert link.connection(conn).echo_pending  # type: ignore[union-attr]
    assert link.next_deadline() == ECHO_INTERVAL_S + TIMEOUT_S
    assert link.received(conn, sign_on_answer(echo), ECHO_INTERVAL_S + 1) == []
    assert not link.connection(conn).echo_pending  # type: ignore[union-attr]
    assert link.next_deadline() == 2 * ECHO_INTERVAL_S + 1


def test_anything_received_postpones_the_echo() -> None:
    link, [conn] = ready_link()
    link.received(conn, {"t": "0800", "7": "1208000010", "11": "123456", "70": "301"}, 10.0)
    assert link.tick(ECHO_INTERVAL_S) == []
    assert link.next_deadline() == 10.0 + ECHO_INTERVAL_S


def test_an_unanswered_echo_closes_and_hands_outstanding_requests_to_stand_in() -> None:
    link, [conn] = ready_link()
    handle, _ = link.submit(request(), ECHO_INTERVAL_S - 1)
    [echo] = link.tick(ECHO_INTERVAL_S)
    assert isinstance(echo, Send)
    handle2, _ = link.submit(request("000000000002"), ECHO_INTERVAL_S + 1)
    out = link.tick(ECHO_INTERVAL_S - 1 + TIMEOUT_S)  # the first request times out first
    assert out == [StandIn(handle, StandInReason.TIMED_OUT)]
    out = link.tick(ECHO_INTERVAL_S + TIMEOUT_S)
    assert out == [Close(conn, CloseReason.ECHO_TIMEOUT),
                   StandIn(handle2, StandInReason.CONNECTION_CLOSED), IssuerDown(ISSUER)]


@pytest.mark.parametrize("code", ["001", "301"])
def test_the_issuers_0800_is_answered_0810_00_echoing_de7_de11_de70(code: str) -> None:
    link, [conn] = ready_link()
    out = link.received(conn, {"t": "0800", "7": "1208101500", "11": "000777", "70": code}, 5.0)
    assert out == [Send(conn, {"t": "0810", "7": "1208101500", "11": "000777", "70": code,
                               "39": "00"})]
    assert link.connection(conn).state is ConnState.READY  # type: ignore[union-attr]


def test_the_issuers_sign_off_drains_then_closes_and_reconnects() -> None:
    link, [conn] = ready_link()
    handle, [sent] = link.submit(request(), 1.0)
    out = link.received(conn, {"t": "0800", "7": "1208000002", "11": "000900", "70": "002"}, 2.0)
    assert out[0] == Send(conn, {"t": "0810", "7": "1208000002", "11": "000900", "70": "002",
                                 "39": "00"})
    assert out[1:] == [IssuerDown(ISSUER)]
    assert link.connection(conn).state is ConnState.DRAINING  # type: ignore[union-attr]
    refused, out = link.submit(request("000000000002"), 2.5)
    assert out == [StandIn(refused, StandInReason.NO_CONNECTION)]
    out = link.received(conn, answer_to(sent), 3.0)  # type: ignore[arg-type]
    assert out[0].handle == handle  # type: ignore[union-attr]
    assert out[1:] == [Close(conn, CloseReason.ISSUER_SIGNED_OFF)]
    [view] = link.connections()
    assert view.state is ConnState.DISCONNECTED and view.reconnect_at_s == 4.0
    [connect] = link.tick(4.0)
    assert isinstance(connect, Connect) and connect.conn != conn


def test_sign_off_with_nothing_outstanding_closes_at_once() -> None:
    link, [conn] = ready_link()
    out = link.received(conn, {"t": "0800", "7": "1208000002", "11": "000900", "70": "002"}, 2.0)
    assert out[1:] == [IssuerDown(ISSUER), Close(conn, CloseReason.ISSUER_SIGNED_OFF)]


def _reconnect_delays(link_failures: int, sign_on_after: int | None = None) -> list[float]:
    """Fail the connection ``link_failures`` times and record each wait."""
    link = make_link()
    [connect] = link.start(0.0)
    conn, now, delays = connect.conn, 0.0, []  # type: ignore[union-attr]
    for attempt in range(link_failures):
        if attempt == sign_on_after:
            sign_on(link, conn, now)
        link.connection_lost(conn, now)
        [view] = link.connections()
        assert view.reconnect_at_s is not None
        delays.append(view.reconnect_at_s - now)
        now = view.reconnect_at_s
        assert link.next_deadline() == now
        [connect] = link.tick(now)
        conn = connect.conn  # type: ignore[union-attr]
    return delays


def test_reconnect_backoff_doubles_from_1_s_to_at_most_30_s() -> None:
    assert _reconnect_delays(8) == [1, 2, 4, 8, 16, 30, 30, 30]


def test_a_successful_sign_on_resets_the_backoff() -> None:
    assert _reconnect_delays(7, sign_on_after=4) == [1, 2, 4, 8, 1, 2, 4]


def test_shutdown_waits_for_outstanding_answers_then_signs_off() -> None:
    link, [conn] = ready_link()
    handle, [sent] = link.submit(request(), 1.0)
    out = link.shutdown(2.0)
    assert out == [IssuerDown(ISSUER)]
    refused, out = link.submit(request("000000000002"), 2.0)
    assert out == [StandIn(refused, StandInReason.SHUTTING_DOWN)]
    out = link.received(conn, answer_to(sent), 2.5)  # type: ignore[arg-type]
    assert out[0].handle == handle  # type: ignore[union-attr]
    sign_off, close = out[1:]
    assert isinstance(sign_off, Send) and sign_off.fields["70"] == "002"
    assert close == Close(conn, CloseReason.SHUTDOWN)
    assert link.finished and link.next_deadline() is None


def test_shutdown_gives_up_on_answers_after_timeout() -> None:
    link, [conn] = ready_link()
    handle, _ = link.submit(request(), 1.0)
    link.shutdown(2.0)
    assert link.next_deadline() == 1.0 + TIMEOUT_S
    out = link.tick(1.0 + TIMEOUT_S)
    assert out[0] == StandIn(handle, StandInReason.TIMED_OUT)
    assert isinstance(out[1], Send) and out[1].fields["70"] == "002"
    assert out[2] == Close(conn, CloseReason.SHUTDOWN)
    assert link.finished


def test_shutdown_closes_connections_not_yet_signed_on_and_stops_reconnecting() -> None:
    link = make_link(["a:1", "b:2", "c:3"])
    a, b, c = (o.conn for o in link.start(0.0))  # type: ignore[union-attr]
    sign_on(link, a, 0.0)
    link.connected(b, 0.0)
    link.connection_lost(c, 0.0)
    out = link.shutdown(0.5)
    assert Close(b, CloseReason.SHUTDOWN) in out and Close(a, CloseReason.SHUTDOWN) in out
    assert all(v.state is ConnState.CLOSED for v in link.connections())
    assert link.tick(100.0) == [] and link.finished


def test_link_config_refuses_bad_values_naming_the_field() -> None:
    with pytest.raises(ValueError, match="endpoints"):
        LinkConfig(ISSUER, ())
    with pytest.raises(ValueError, match="timeout_s"):
        LinkConfig(ISSUER, ("a:1",), timeout_s=0)
    with pytest.raises(ValueError, match="max_outstanding"):
        LinkConfig(ISSUER, ("a:1",), max_outstanding=0)
    with pytest.raises(ValueError, match="endpoints"):
        LinkConfig(ISSUER, ("a:1", "a:1"))
