"""The message trace format: every frame the switch receives and sends, for
debugging sessions and for replay (``iso-switch-replay``).

A trace is JSON Lines. It never holds cardholder data in clear: a message
is stored as its decoded fields, and the fields that carry a PAN, track
data, an expiry date, a PIN block, chip data or an account number
(:data:`PROTECTED_FIELDS`) are either

- **sealed**: AES-256-GCM under the trace key from the key store (a D0 key
  named :data:`TRACE_KEY_NAME`, or the store's only AES D0 key), one random
  nonce per field, associated data = trace id + field id, so a replay with
  the key store can restore them and a value cannot be moved to another
  field or another trace unnoticed; or
- **masked** (``trace.masked``): PANs as first 6 + last 4, track 2 down to
  its masked PAN, everything else as ``*``. Nothing can restore them.

MACs and KSNs stay in clear: a MAC is not a key and a KSN is not secret.

The first line of each recording is a header::

    {"kind": "header", "v": 1, "trace": "<16 hex>", "started": "...Z",
     "masked": false, "key": "demo-trace", "key_kcv": "76B4F7B35F",
     "listeners": {"ascii87-hex": {"dialect": "ascii87-hex", "framing": "binary2",
                                   "tpdu": false}, ...}}

(``listeners``: how each listener frames its messages, so a replay speaks
the same framing; traces written before it existed replay as ``binary2``
without a TPDU), then one line per frame::

    {"kind": "message", "trace": "...", "at_s": 0.012345, "time": "...Z",
     "conn": 1, "seq": 1, "listener": "ascii87-hex", "dialect": "ascii87-hex",
     "dir": "in", "msg": {"t": "0200", "3": "000000", ...},
     "sealed": {"2": "<base64 nonce+ciphertext>", "52": "..."}, "masked": []}

On a TPDU listener a frame's line also has its TPDU (``"tpdu":
"6000010000"``, hex: it routes, it is not secret).
``at_s`` counts seconds from the recording's start (a monotonic clock, for
pacing a replay); ``seq`` numbers requests over the whole recording and an
``out`` line carries the ``seq`` of the request it answers; ``conn``
numbers connections. A frame that does not decode is recorded as
``"error": "undecodable"`` with its size only. When the buffer overflows
(the disk cannot keep up) frames are dropped, never the switch slowed, and a
``{"kind": "gap", "dropped": N}`` line says so.

This package is the format alone, sans-I/O: sealing, masking, building
lines from frames (:class:`TraceEncoder`) and parsing them back
(:func:`parse_lines`; :func:`read_trace` reads a whole file). It imports
neither trio nor the server: the switch's recorder
(:mod:`iso_switch.server.trace`) is a thin trio shell over it, and replay
(``simulators.replay``) reads traces with it.
"""

from __future__ import annotations

from iso_switch.trace._lines import (
    DIRECTIONS,
    TRACE_FORMAT_VERSION,
    TRACE_LINE_CHARS_MAX,
    Direction,
    Frame,
    TracedListener,
    TraceEncoder,
    TraceEntry,
    TraceGap,
    TraceHeader,
    TraceItem,
    gap_line,
    header_line,
    message_line,
    parse_lines,
    read_trace,
)
from iso_switch.trace._seal import (
    PROTECTED_FIELDS,
    TRACE_KEY_NAME,
    FieldSealer,
    Protected,
    mask_value,
    new_trace_id,
    protect,
    sealer_from_store,
    trace_key,
)
from iso_switch.trace.errors import TraceError

__all__ = [
    "DIRECTIONS",
    "PROTECTED_FIELDS",
    "TRACE_FORMAT_VERSION",
    "TRACE_KEY_NAME",
    "TRACE_LINE_CHARS_MAX",
    "Direction",
    "FieldSealer",
    "Frame",
    "Protected",
    "TraceEncoder",
    "TraceEntry",
    "TraceError",
    "TraceGap",
    "TraceHeader",
    "TraceItem",
    "TracedListener",
    "gap_line",
    "header_line",
    "mask_value",
    "message_line",
    "new_trace_id",
    "parse_lines",
    "protect",
    "read_trace",
    "sealer_from_store",
    "trace_key",
]
