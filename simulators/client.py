"""The terminal client library: simulated DUKPT devices and an async
connection to the switch (docs/interface.md, sections 1-5).

The terminal simulator (``iso-switch-sim``), the load generator
(``iso-switch-load``), trace replay and the end-to-end benchmark all build on
this module. Everything cryptographic comes from ``iso_switch.security``.

A device builds and seals requests (sans-I/O)::

    from simulators.client import TerminalDevice, open_switch_client, describe_response_code

    device = TerminalDevice(terminal_id="TERM0001")          # demo BDK, device 0
    request = device.seal_message(device.purchase("4761739001010010", 1234), pin="1234")

and a :class:`SwitchClient` sends it and matches the answer (trio)::

    async with open_switch_client("127.0.0.1", 8583, dialect="ascii87-hex") as client:
        fields, raw = await client.call(request)
        print(describe_response_code(fields.get("39")))       # 00 approved
        print(device.verify_response_mac(raw, request.ksn, fields))   # MAC ok

Builders (each returns a field dict; seal it with ``seal_message(fields,
pin=None, mac=True)`` or ``seal`` for the bytes only): ``purchase``,
``authorization`` (0100), ``completion`` (0220, DE90 from the original),
``withdrawal``, ``refund``, ``balance_inquiry`` (30/31), ``transfer`` (40,
DE102/DE103), ``reversal`` (0400, or 0420 with ``advice=True``, DE95 with
``actual_amount_minor``), ``repeat`` (0101/0201/0221/0401/0421: DE7/11/12/13
kept, fresh KSN and MAC when sealed), ``sign_on``/``sign_off``/``echo``
(0800, never MACed).

Devices: N devices of one run should use distinct ``device_index`` values
(distinct KSN device ids, so distinct replay state on the switch) and, when
they share a terminal ID, distinct ``stan_range`` values (the switch's
idempotency key is MTI class + DE41 + DE11 + DE7). Persist ``device.counter``
between runs and pass it back as ``counter=``: the switch answers ``63`` to
a KSN counter it has already seen.
"""

from __future__ import annotations

from simulators._codes import RESPONSE_CODES, describe_response_code
from simulators._connection import (
    DEFAULT_TIMEOUT_S,
    ConnectionClosed,
    Response,
    ResponseTimeout,
    SwitchClient,
    SwitchClientError,
    open_switch_client,
    parse_tpdu,
    request_key,
    response_key,
    tpdu_argument,
)
from simulators._device import (
    DEMO_BDK_HEX,
    DEMO_CURRENCY,
    DEMO_KSN_PREFIX,
    DEMO_MERCHANT,
    DEVICES_MAX,
    STAN_MAX,
    STAN_MIN,
    DeviceError,
    MacVerdict,
    Sealed,
    TerminalDevice,
    codec_for,
    de90_of,
    device_initial_ksn,
    pan_of,
    verify_response_mac,
)

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "DEMO_BDK_HEX",
    "DEMO_CURRENCY",
    "DEMO_KSN_PREFIX",
    "DEMO_MERCHANT",
    "DEVICES_MAX",
    "RESPONSE_CODES",
    "STAN_MAX",
    "STAN_MIN",
    "ConnectionClosed",
    "DeviceError",
    "MacVerdict",
    "Response",
    "ResponseTimeout",
    "Sealed",
    "SwitchClient",
    "SwitchClientError",
    "TerminalDevice",
    "codec_for",
    "de90_of",
    "describe_response_code",
    "device_initial_ksn",
    "open_switch_client",
    "pan_of",
    "parse_tpdu",
    "request_key",
    "response_key",
    "tpdu_argument",
    "verify_response_mac",
]
