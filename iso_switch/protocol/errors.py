"""Protocol errors that say whose fault they are.

Modelled on h11's ``LocalProtocolError`` / ``RemoteProtocolError``: the
server closes a connection on a *remote* error (the peer sent bytes we cannot
accept) and treats a *local* error as a bug or a misuse of our own API.
None of these errors ever carries bytes of message content: a PAN, track
data or a PIN block could be in them. They carry sizes, limits and names.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base of every framing and session error."""


class RemoteProtocolError(ProtocolError):
    """The peer violated the protocol: log it, close that connection only."""


class LocalProtocolError(ProtocolError):
    """We misused the protocol (an oversize reply, a missing TPDU, a bound
    exceeded by our own bookkeeping): a bug on our side, never the peer's."""


class FrameTooLarge(RemoteProtocolError):
    """A length header announced more than the configured maximum.

    Raised as soon as the header is read, before any of the body is
    buffered, so a peer cannot make us hold more than one header's worth of
    an oversize frame.
    """

    def __init__(self, length_bytes: int, max_frame_bytes: int) -> None:
        super().__init__(
            f"frame of {length_bytes} bytes exceeds the maximum of {max_frame_bytes} bytes"
        )
        self.length_bytes = length_bytes
        self.max_frame_bytes = max_frame_bytes


class BadLengthHeader(RemoteProtocolError):
    """A BCD or ASCII length header holds something other than decimal digits.

    Only the header kind is reported, never the header bytes.
    """

    def __init__(self, kind: str) -> None:
        super().__init__(f"length header is not a valid {kind} length")
        self.kind = kind


class FrameTooShort(RemoteProtocolError):
    """A non-empty frame on a TPDU listener is shorter than the TPDU itself."""

    def __init__(self, length_bytes: int, tpdu_bytes: int) -> None:
        super().__init__(
            f"frame of {length_bytes} bytes is shorter than its {tpdu_bytes}-byte TPDU"
        )
        self.length_bytes = length_bytes
        self.tpdu_bytes = tpdu_bytes


class MessageTooLarge(LocalProtocolError):
    """An outgoing message does not fit the maximum frame or the header."""

    def __init__(self, length_bytes: int, max_frame_bytes: int) -> None:
        super().__init__(
            f"outgoing frame of {length_bytes} bytes exceeds the maximum of {max_frame_bytes} bytes"
        )
        self.length_bytes = length_bytes
        self.max_frame_bytes = max_frame_bytes


class BufferOverflow(LocalProtocolError):
    """More unread bytes were fed than the framer's buffer bound.

    The caller must drain complete frames (``next_frame`` / ``events``)
    between feeds; a framer fed without draining is a bug in the caller.
    """

    def __init__(self, buffered_bytes: int, max_buffer_bytes: int) -> None:
        super().__init__(
            f"{buffered_bytes} unread bytes exceed the buffer bound of {max_buffer_bytes} bytes"
        )
        self.buffered_bytes = buffered_bytes
        self.max_buffer_bytes = max_buffer_bytes
