"""PeerGuard: what one source address may cost before it authenticates."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from iso_switch.protocol.admission import AdmissionLimits, PeerGuard, Refusal

LIMITS = AdmissionLimits(max_connections_per_address=3, max_auth_failures=5,
                         max_new_devices=4, window_s=60.0, max_addresses=8,
                         max_known_devices=16)


def test_connections_per_address_are_bounded_and_given_back() -> None:
    guard = PeerGuard(LIMITS)
    assert [guard.connect("a", 0) for _ in range(3)] == [None, None, None]
    assert guard.connect("a", 0) is Refusal.CONNECTIONS
    assert guard.connect("b", 0) is None  # other addresses are unaffected
    guard.disconnect("a")
    assert guard.connect("a", 0) is None


def test_forged_devices_are_refused_but_known_devices_keep_working() -> None:
    guard = PeerGuard(LIMITS)
    assert guard.admit("nat", "honest", 0) is None
    guard.authenticated("nat", "honest", 0)
    for n in range(5):  # a forger behind the same address
        assert guard.admit("nat", f"forged{n}", 1) in (None, Refusal.NEW_DEVICES)
        guard.failed("nat", 1)
    assert guard.admit("nat", "forged-next", 2) is Refusal.AUTH_FAILURES
    assert guard.admit("nat", "honest", 2) is None  # the real terminal never notices
    assert guard.admit("elsewhere", "forged-next", 2) is None


def test_new_devices_per_window_are_bounded_and_the_window_resets() -> None:
    guard = PeerGuard(LIMITS)
    assert [guard.admit("a", f"d{n}", 0) for n in range(4)] == [None] * 4
    assert guard.admit("a", "d5", 10) is Refusal.NEW_DEVICES
    assert guard.admit("a", "d5", 60) is None  # a new window


def test_failures_reset_with_the_window() -> None:
    guard = PeerGuard(LIMITS)
    for _ in range(5):
        guard.failed("a", 0)
    assert guard.admit("a", "x", 59.9) is Refusal.AUTH_FAILURES
    assert guard.admit("a", "x", 60.0) is None


def test_fifty_honest_terminals_behind_one_address_never_notice() -> None:
    guard = PeerGuard()  # the defaults
    for terminal in range(50):
        assert guard.connect("nat", 0) is None
        assert guard.admit("nat", f"device{terminal}", 0) is None
        guard.authenticated("nat", f"device{terminal}", 0)
    for second in range(0, 3600, 7):  # an hour of traffic and reconnects
        for terminal in range(50):
            assert guard.admit("nat", f"device{terminal}", second) is None


@settings(max_examples=200)
@given(st.lists(st.tuples(st.sampled_from(["connect", "disconnect", "admit", "fail", "auth"]),
                          st.integers(0, 30), st.integers(0, 40), st.floats(0, 5)),
                max_size=300))
def test_state_stays_bounded_and_open_connections_are_never_forgotten(
    steps: list[tuple[str, int, int, float]],
) -> None:
    guard = PeerGuard(LIMITS)
    now = 0.0
    open_connections: dict[str, int] = {}
    for action, address_n, device_n, dt in steps:
        now += dt
        address, device = f"10.0.0.{address_n}", f"dev{device_n}"
        if action == "connect":
            if guard.connect(address, now) is None:
                open_connections[address] = open_connections.get(address, 0) + 1
        elif action == "disconnect" and open_connections.get(address):
            guard.disconnect(address)
            open_connections[address] -= 1
        elif action == "admit":
            guard.admit(address, device, now)
        elif action == "fail":
            guard.failed(address, now)
        elif action == "auth":
            guard.authenticated(address, device, now)
        for addr, count in open_connections.items():
            assert guard.connections(addr) == count <= LIMITS.max_connections_per_address
        busy = sum(1 for count in open_connections.values() if count)
        assert guard.tracked() <= max(LIMITS.max_addresses, busy) + 1


def test_a_new_address_past_the_bound_keeps_its_connection_count() -> None:
    """With every tracked address busy, the address being connected must
    not be the one forgotten to make room (its count would be lost)."""
    guard = PeerGuard(LIMITS)
    addresses = [f"10.0.0.{n}" for n in range(LIMITS.max_addresses + 1)]
    for address in addresses:
        assert guard.connect(address, 0.0) is None
    for address in addresses:
        assert guard.connections(address) == 1
