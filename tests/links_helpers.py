"""Shared pieces for the issuer-link tests: a trace-number allocator, a DE7
formatter, and a link brought to a known state without any I/O."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from iso_switch.links import (
    ANSWER_MTI,
    Connect,
    ConnId,
    IssuerLink,
    LinkConfig,
    Output,
    Send,
)

ISSUER = "bank-b"
TIMEOUT_S = 4.0
ECHO_INTERVAL_S = 30.0
_EPOCH = dt.datetime(2026, 12, 8, tzinfo=dt.UTC)


class Stans:
    """DE11 from 000001 upwards, wrapping after 999999 (the ledger's
    persisted sequence takes this place in the switch)."""

    def __init__(self) -> None:
        self.last = 0

    def __call__(self) -> str:
        self.last = self.last % 999_999 + 1
        return f"{self.last:06d}"


def de7(now_s: float) -> str:
    """MMDDhhmmss for a fake clock that starts at 2026-12-08 00:00 UTC."""
    return (_EPOCH + dt.timedelta(seconds=now_s)).strftime("%m%d%H%M%S")


def make_link(endpoints: Sequence[str] = ("issuer-a:9583",), **overrides: float) -> IssuerLink:
    settings: dict[str, float] = {"timeout_s": TIMEOUT_S, "echo_interval_s": ECHO_INTERVAL_S}
    settings.update(overrides)
    config = LinkConfig(ISSUER, tuple(endpoints), **settings)  # type: ignore[arg-type]
    return IssuerLink(config, Stans(), de7)


def sign_on_answer(sign_on: Send, rc: str = "00") -> dict[str, str]:
    return {"t": "0810", "7": sign_on.fields["7"], "11": sign_on.fields["11"],
            "70": sign_on.fields["70"], "39": rc}


def sign_on(link: IssuerLink, conn: ConnId, now_s: float) -> list[Output]:
    """Report ``conn`` connected and answer its sign-on with 00."""
    [sent] = link.connected(conn, now_s)
    assert isinstance(sent, Send)
    return link.received(conn, sign_on_answer(sent), now_s)


def ready_link(count: int = 1, now_s: float = 0.0, **overrides: float
               ) -> tuple[IssuerLink, list[ConnId]]:
    """A started link with ``count`` endpoints, every connection signed on."""
    link = make_link([f"issuer-{i}:9583" for i in range(count)], **overrides)
    conns = [out.conn for out in link.start(now_s) if isinstance(out, Connect)]
    for conn in conns:
        sign_on(link, conn, now_s)
    return link, conns


def request(rrn: str = "000000000001", mti: str = "0200", **extra: str) -> dict[str, str]:
    """A forwarded request as the forwarding layer would submit it (no DE11 or DE7)."""
    fields = {"t": mti, "2": "5413330000000001", "3": "000000", "4": "000000001000",
              "37": rrn, "41": "TERM0001", "49": "840"}
    fields.update(extra)
    return fields


def answer_to(sent: Send | dict[str, str], rc: str = "00") -> dict[str, str]:
    """The issuer's answer to a sent request: MTI + 10, same DE11 and DE37."""
    fields = sent.fields if isinstance(sent, Send) else sent
    return {"t": ANSWER_MTI[fields["t"]], "11": fields["11"], "37": fields["37"], "39": rc}
