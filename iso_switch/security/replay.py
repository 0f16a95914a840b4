"""Per-device DUKPT replay protection (docs/interface.md section 4), as pure state.

A KSN whose counter was already accepted from a device, or that lies more
than :data:`REPLAY_WINDOW_COUNTERS` below the highest counter accepted from
it, is a replay. Requests pipelined on one connection may arrive out of
counter order, so counters inside the window that were never seen are still
accepted. This is the sliding-window check of IPsec (RFC 4303 section
3.4.3), chosen because it needs only two integers per device.

The function is pure: the ledger of #4 reads the device's state, calls
:func:`check_replay`, and commits the returned state *together with* the
decision, so a crash can never accept one counter twice nor lose a
high-water mark.
"""

from __future__ import annotations

from dataclasses import dataclass

# How far below the highest accepted counter an unseen counter is still
# accepted (docs/interface.md section 4: "more than 64 below" is a replay).
REPLAY_WINDOW_COUNTERS = 64
_BITMAP_MASK = (1 << REPLAY_WINDOW_COUNTERS) - 1
_INT64_SIGN = 1 << 63
_UINT64 = 1 << 64


@dataclass(frozen=True, slots=True)
class ReplayState:
    """What has been accepted from one device.

    ``highest`` is the highest counter accepted. Bit ``i`` of ``bitmap``
    (0 <= i < 64) is set when counter ``highest - 1 - i`` was accepted; the
    highest counter itself is implicit. The bitmap is an unsigned 64-bit
    value.
    """

    highest: int
    bitmap: int = 0

    def to_tuple(self) -> tuple[int, int]:
        """``(highest, bitmap)`` with the bitmap as a *signed* 64-bit int, so
        both fit an SQLite INTEGER column. :meth:`from_tuple` undoes it."""
        bitmap = self.bitmap - _UINT64 if self.bitmap & _INT64_SIGN else self.bitmap
        return (self.highest, bitmap)

    @classmethod
    def from_tuple(cls, value: tuple[int, int]) -> ReplayState:
        """Rebuild from :meth:`to_tuple` (signed or unsigned bitmap accepted)."""
        highest, bitmap = value
        return cls(highest=int(highest), bitmap=int(bitmap) & _BITMAP_MASK)


# The name the issue uses for the same state.
ReplayWindow = ReplayState


def check_replay(state: ReplayState | None, counter: int) -> tuple[bool, ReplayState]:
    """Return ``(accepted, new_state)`` for ``counter`` from a device whose
    state is ``state`` (``None``: nothing accepted yet).

    On a replay the state is returned unchanged, so a caller may commit it
    blindly. Persist the new state only together with the decision.
    """
    if state is None:
        return True, ReplayState(highest=counter, bitmap=0)
    highest = state.highest
    if counter > highest:
        shift = counter - highest
        # The old highest becomes bit shift-1; older bits move up with it.
        bitmap = ((state.bitmap << shift) | (1 << (shift - 1))) & _BITMAP_MASK
        return True, ReplayState(highest=counter, bitmap=bitmap)
    if counter == highest:
        return False, state
    distance = highest - counter
    if distance > REPLAY_WINDOW_COUNTERS:
        return False, state
    bit = 1 << (distance - 1)
    if state.bitmap & bit:
        return False, state
    return True, ReplayState(highest=highest, bitmap=state.bitmap | bit)
