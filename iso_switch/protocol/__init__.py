"""Sans-I/O protocol layer: framing, per-connection sessions, network
management answers.

Nothing here touches a socket, a clock or trio: the server
(``iso_switch.server``) feeds bytes in and sends the bytes it gets back, so
everything here is tested and benchmarked by feeding bytes. The public API is
re-exported here; the modules underneath are implementation detail.
"""

from iso_switch.protocol.errors import (
    BadLengthHeader,
    BufferOverflow,
    FrameTooLarge,
    FrameTooShort,
    LocalProtocolError,
    MessageTooLarge,
    ProtocolError,
    RemoteProtocolError,
)
from iso_switch.protocol.framing import (
    DEFAULT_MAX_FRAME_BYTES,
    KEEP_ALIVE,
    MIN_MAX_FRAME_BYTES,
    NEED_DATA,
    RECEIVE_CHUNK_BYTES,
    TPDU_BYTES,
    Frame,
    Framer,
    FramingKind,
    KeepAlive,
    NeedData,
    max_length_for,
    swap_tpdu,
)
from iso_switch.protocol.session import (
    MAX_IN_FLIGHT_PER_CONNECTION,
    InFlightLimitExceeded,
    NetworkCode,
    Session,
    SignOnState,
    answer_network_management,
)

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "KEEP_ALIVE",
    "MAX_IN_FLIGHT_PER_CONNECTION",
    "MIN_MAX_FRAME_BYTES",
    "NEED_DATA",
    "RECEIVE_CHUNK_BYTES",
    "TPDU_BYTES",
    "BadLengthHeader",
    "BufferOverflow",
    "Frame",
    "FrameTooLarge",
    "FrameTooShort",
    "Framer",
    "FramingKind",
    "InFlightLimitExceeded",
    "KeepAlive",
    "LocalProtocolError",
    "MessageTooLarge",
    "NeedData",
    "NetworkCode",
    "ProtocolError",
    "RemoteProtocolError",
    "Session",
    "SignOnState",
    "answer_network_management",
    "max_length_for",
    "swap_tpdu",
]
