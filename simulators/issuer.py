"""``iso-switch-issuer``: a remote issuer host for the switch's issuer links.

It listens on TCP (the switch connects to it, docs/interface.md section 7),
frames with our :class:`~iso_switch.protocol.Framer` (``binary2``, ``bcd2``
or ``ascii4``) and speaks any dialect of the switch. What it decides lives
in :mod:`simulators._issuer_core` (sans-I/O); this module is the trio shell
around it: the listener, one task per connection, delayed and repeated
answers, its own ``0800`` to a connected switch
(:meth:`IssuerSimulator.send_network`), and the JSON Lines record
(``--record FILE``, mode 0600) of what it approved, declined, reversed and
was advised, so a test can reconcile both sides.

Bounded everywhere: connections (``listen.max_connections``; more are
closed at once), frame size (``listen.max_frame_bytes``), answers in flight
per connection (``listen.max_in_flight``; reading waits for a free slot).
Bad input never stops the server: a bad frame or an undecodable message
closes that connection only, and is logged (without its bytes).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Final, TextIO

import trio

from iso_switch.codec import CodecError
from iso_switch.protocol.errors import ProtocolError
from iso_switch.protocol.framing import RECEIVE_CHUNK_BYTES, Frame, Framer, KeepAlive
from simulators._device import codec_for
from simulators._issuer_config import (
    IssuerConfig,
    IssuerConfigError,
    LinkKeys,
    load_config,
    load_link_keys,
)
from simulators._issuer_core import IssuerHost, Reply
from simulators._issuer_link import LinkPeer

log = logging.getLogger("simulators.issuer")

RECORD_FILE_MODE: Final = 0o600
#: How long :meth:`IssuerSimulator.send_network` waits for the ``0810``.
NETWORK_TIMEOUT_S: Final = 5.0
#: Own ``0800``s awaiting their ``0810``, per connection.
NETWORK_PENDING_MAX: Final = 16
EXIT_CONFIG: Final = 2
EXIT_LISTEN: Final = 1


class NetworkError(Exception):
    """The simulator's own ``0800`` got no ``0810`` (no connection, closed, timed out)."""


class Recorder:
    """Appends one JSON object per line to the record file, created 0600
    (and made 0600 if it existed), flushed per line. Entries hold masked
    PANs only."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, RECORD_FILE_MODE)
        os.fchmod(fd, RECORD_FILE_MODE)
        self._file = os.fdopen(fd, "a", encoding="utf-8")

    def __call__(self, entry: dict[str, Any]) -> None:
        self._file.write(json.dumps(entry, separators=(",", ":")) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_record(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The entries of a record file, in order (for tests and reconciliation)."""
    with open(path, encoding="utf-8") as file:
        return [json.loads(line) for line in file if line.strip()]


class _Connection:
    """One accepted connection: its stream, framer, send lock and the
    simulator's own ``0800``s waiting for their ``0810``."""

    def __init__(self, stream: trio.SocketStream, framer: Framer, peer: str) -> None:
        self.stream = stream
        self.framer = framer
        self.peer = peer
        self.send_lock = trio.Lock()
        self.pending: dict[str, trio.MemorySendChannel[dict[str, str]]] = {}
        self.closed = trio.Event()

    async def send(self, raw: bytes) -> None:
        async with self.send_lock:
            await self.stream.send_all(self.framer.frame(raw))


class IssuerSimulator:
    """The running simulator: ``await nursery.start(sim.serve)`` binds (port
    0 picks a free port, then :attr:`port` says which) and serves until
    cancelled."""

    def __init__(self, config: IssuerConfig, keys: LinkKeys, *,
                 record: str | os.PathLike[str] | None = None) -> None:
        self.config = config
        self._recorder = Recorder(record) if record else None
        self.host = IssuerHost(config, keys, codec_for(config.dialect), recorder=self._recorder)
        self._slots = trio.CapacityLimiter(config.max_connections)
        self._connections: list[_Connection] = []
        self.port = 0
        self.connections_refused = 0
        self.bad_frames = 0

    def __repr__(self) -> str:
        return (f"IssuerSimulator(id={self.config.id!r}, port={self.port}, "
                f"connections={len(self._connections)})")

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self.config.port, host=self.config.host)
        self.port = listeners[0].socket.getsockname()[1]
        log.info("issuer %s listening on %s:%d (%s, %s)", self.config.id, self.config.host,
                 self.port, self.config.dialect, self.config.framing)
        task_status.started(self.port)
        try:
            await trio.serve_listeners(self._accept, listeners)
        finally:
            if self._recorder is not None:
                self._recorder.close()

    async def _accept(self, stream: trio.SocketStream) -> None:
        try:
            self._slots.acquire_nowait()
        except trio.WouldBlock:
            self.connections_refused += 1
            log.warning("connection refused: %d connections already",
                        self.config.max_connections)
            await stream.aclose()
            return
        try:
            await self._run_connection(stream)
        finally:
            self._slots.release()

    async def _run_connection(self, stream: trio.SocketStream) -> None:
        framer = Framer(self.config.framing, max_frame_bytes=self.config.max_frame_bytes)
        host, port = stream.socket.getpeername()[:2]
        peer = f"{host}:{port}"
        connection = _Connection(stream, framer, peer)
        self._connections.append(connection)
        log.info("connection from %s", peer)
        try:
            async with trio.open_nursery() as nursery:
                if not await self._read(connection, nursery):
                    nursery.cancel_scope.cancel()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            log.info("connection from %s broke", peer)
        finally:
            self._connections.remove(connection)
            connection.closed.set()
            for channel in connection.pending.values():
                channel.close()
            await stream.aclose()
            log.info("connection from %s closed", peer)

    async def _read(self, connection: _Connection, nursery: trio.Nursery) -> bool:
        """Read frames until the peer closes, a frame is bad or a rule
        closes; each answer is sent by its own task, at most
        ``max_in_flight`` at once (reading waits for a free slot). True
        when the answers already started should still go out before the
        connection closes (after a bad frame); False to close at once."""
        in_flight = trio.Semaphore(self.config.max_in_flight)
        while True:
            chunk = await connection.stream.receive_some(RECEIVE_CHUNK_BYTES)
            if not chunk:
                return False
            try:
                connection.framer.feed(chunk)
                # Good frames come first; a bad one after them raises on the
                # next drain, so drain until nothing is left.
                while frames := connection.framer.drain():
                    if not await self._handle_frames(connection, frames, nursery, in_flight):
                        return False
            except ProtocolError as exc:
                self.bad_frames += 1
                log.warning("bad frame from %s, closing: %s", connection.peer, exc)
                return True

    async def _handle_frames(self, connection: _Connection, frames: list[Frame | KeepAlive],
                             nursery: trio.Nursery, in_flight: trio.Semaphore) -> bool:
        """Decide each frame and start its answer; ``False`` when the
        connection is to be closed."""
        for event in frames:
            if not isinstance(event, Frame):
                continue  # keep-alive
            reply = self._decide(connection, event.message)
            if reply is None or reply.close:
                return False
            if reply.raw is not None:
                await in_flight.acquire()
                nursery.start_soon(self._answer, connection, reply, in_flight)
        return True

    def _decide(self, connection: _Connection, message: bytes) -> Reply | None:
        """The core's reply, ``None`` for a message that does not decode
        (that connection is closed); an ``0810`` goes to its waiter."""
        try:
            reply = self.host.handle(message)
        except CodecError as exc:
            self.bad_frames += 1
            log.warning("undecodable message from %s, closing: %s", connection.peer, exc)
            return None
        except (ValueError, KeyError) as exc:
            # A message the host could not handle: that connection goes, the
            # server stays. Only the type is logged: the text might hold a field.
            self.bad_frames += 1
            log.error("message from %s not handled (%s), closing", connection.peer,
                      type(exc).__name__)
            return None
        if reply.note:
            log.info("%s: %s", connection.peer, reply.note)
        answer = reply.network_answer
        if answer is not None:
            channel = connection.pending.pop(answer.get("11", ""), None)
            if channel is not None:
                channel.send_nowait(dict(answer))
        return reply

    async def _answer(self, connection: _Connection, reply: Reply,
                      in_flight: trio.Semaphore) -> None:
        try:
            if reply.delay_s:
                await trio.sleep(reply.delay_s)
            assert reply.raw is not None
            for _ in range(reply.times):
                await connection.send(reply.raw)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            log.info("answer to %s not sent: the connection closed", connection.peer)
        finally:
            in_flight.release()

    async def send_network(self, code: str = "301", *, connection_index: int = -1,
                           timeout_s: float = NETWORK_TIMEOUT_S) -> dict[str, str]:
        """Send an ``0800`` (``301`` echo, ``002`` sign-off, ``001``
        sign-on) on a connected switch's connection (the newest by default)
        and return its ``0810``. Raises :class:`NetworkError`."""
        if not self._connections:
            raise NetworkError("no switch is connected")
        connection = self._connections[connection_index]
        if len(connection.pending) >= NETWORK_PENDING_MAX:
            raise NetworkError(f"{NETWORK_PENDING_MAX} 0800s already await their 0810")
        fields, raw = self.host.network_request(code)
        sender, receiver = trio.open_memory_channel[dict[str, str]](1)
        connection.pending[fields["11"]] = sender
        try:
            await connection.send(raw)
            with trio.move_on_after(timeout_s):
                try:
                    return await receiver.receive()
                except trio.EndOfChannel:
                    raise NetworkError("the connection closed before the 0810") from None
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise NetworkError("the connection closed before the 0800 was sent") from None
        finally:
            connection.pending.pop(fields["11"], None)
        raise NetworkError(f"no 0810 within {timeout_s} s")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iso-switch-issuer",
        description="A remote issuer host for the switch's issuer links (ISO 8583 over "
                    "TCP): sign-on and echo, its own cards, accounts, PIN and MAC keys, "
                    "advices and reversal advices, rules, and a JSON Lines record.",
    )
    parser.add_argument("--config", required=True, type=Path,
                        help="the simulator's TOML (or .json) configuration, e.g. "
                             "examples/remote-issuer.toml (test data: it holds PINs)")
    parser.add_argument("--host", help="listen on this address (default: listen.host)")
    parser.add_argument("--port", type=int, help="listen on this port (0: any free port)")
    parser.add_argument("--record", type=Path,
                        help="append what it approves, declines, reverses and is advised "
                             "to this JSON Lines file (created 0600; PANs masked)")
    parser.add_argument("--log-level", default="INFO",
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return parser


def main(argv: Sequence[str] | None = None, err: TextIO | None = None) -> int:
    """Run the simulator until interrupted; 2 for a configuration error."""
    options = build_parser().parse_args(argv)
    logging.basicConfig(level=options.log_level, stream=err or sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        config = load_config(options.config)
        overrides = {k: v for k, v in (("host", options.host), ("port", options.port))
                     if v is not None}
        config = replace(config, **overrides)
        simulator = IssuerSimulator(config, load_link_keys(config),
                                    record=options.record or config.record)
    except (IssuerConfigError, OSError) as exc:
        print(f"error: {exc}", file=err or sys.stderr)
        return EXIT_CONFIG
    try:
        trio.run(simulator.serve)
    except KeyboardInterrupt:
        return 0
    except OSError as exc:  # the address is taken, or not ours to bind
        print(f"error: cannot listen on {config.host}:{config.port}: {exc.strerror}",
              file=err or sys.stderr)
        return EXIT_LISTEN
    return 0


__all__ = ["IssuerSimulator", "LinkPeer", "NetworkError", "Recorder", "build_parser", "main",
           "read_record"]


if __name__ == "__main__":
    sys.exit(main())
