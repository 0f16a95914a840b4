"""The one canonical log line per transaction.

Every decided request produces exactly one ``transaction`` event carrying
the fields an operator greps for; everything else about the request is
debug detail. Keeping the field names in one function keeps them the same
across the server, the simulators and the docs (README "Log format").
"""

from __future__ import annotations

from typing import Any, Final, Protocol

from iso_switch.codec.masking import mask_pan

__all__ = ["TRANSACTION_EVENT", "transaction_line"]

#: The ``event`` value of the canonical line.
TRANSACTION_EVENT: Final = "transaction"


class _InfoLogger(Protocol):
    def info(self, event: str, **kw: Any) -> Any: ...


def transaction_line(
    logger: _InfoLogger,
    *,
    mti: str,
    stan: str | None,
    terminal: str | None,
    processing_code: str | None,
    amount_minor: int | None,
    pan_masked: str | None,
    rc: str,
    latency_ms: float,
    **extra: Any,
) -> None:
    """Emit the canonical ``transaction`` line at level info.

    ``pan_masked`` goes through :func:`~iso_switch.codec.masking.mask_pan`
    again here (idempotent on a masked PAN), so passing a clear PAN by
    mistake still logs only first 6 + last 4. ``latency_ms`` is rounded to
    microseconds. ``extra`` adds fields (``listener``, ``peer``, ``rrn``,
    ``txn_key`` ...); they pass the same masking as every event.
    """
    logger.info(
        TRANSACTION_EVENT,
        mti=mti,
        stan=stan,
        terminal=terminal,
        processing_code=processing_code,
        amount_minor=amount_minor,
        pan_masked=mask_pan(pan_masked) if pan_masked else pan_masked,
        rc=rc,
        latency_ms=round(latency_ms, 3),
        **extra,
    )
