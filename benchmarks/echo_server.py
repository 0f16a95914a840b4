"""A trio echo server: the ceiling for any trio ISO 8583 server here.

It does what every server on this machine must do and nothing more: accept
TCP connections, cut 2-byte length frames with our
:class:`~iso_switch.protocol.Framer` and send each frame's message back
unchanged (keep-alives are dropped). No decoding, no cryptography, no
ledger, no logging. The end-to-end benchmark (:mod:`benchmarks.switch`)
drives it and the switch with the same load generator; the switch's TPS
over this server's TPS says how much of the machine's trio-and-socket
budget the switch's own work leaves.

Frames read in one chunk are answered with one ``send_all``, as a
well-written server would; that is the fair ceiling, not a straw man.

    python -m benchmarks.echo_server [--port 0]
    # prints {"event": "listening", "port": N} on stdout, serves until killed
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from typing import Final

import trio

from iso_switch.protocol.errors import ProtocolError
from iso_switch.protocol.framing import RECEIVE_CHUNK_BYTES, Frame, Framer, FramingKind

#: Frames up to the largest a 2-byte header announces: the echo server
#: never refuses what the load generator sends.
MAX_FRAME_BYTES: Final = 65535


def raise_nofile_limit() -> int:
    """Raise this process's open-file soft limit to its hard limit (the
    idle-connection scenario holds thousands of sockets); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


async def echo_connection(stream: trio.SocketStream) -> None:
    """Return every frame's message on this connection until it closes."""
    framer = Framer(FramingKind.BINARY2, max_frame_bytes=MAX_FRAME_BYTES)
    try:
        while True:
            chunk = await stream.receive_some(RECEIVE_CHUNK_BYTES)
            if not chunk:
                return
            framer.feed(chunk)
            replies = [framer.frame(event.message) for event in framer.drain()
                       if isinstance(event, Frame)]
            if replies:
                await stream.send_all(b"".join(replies))
    except (trio.BrokenResourceError, trio.ClosedResourceError, ProtocolError):
        return
    finally:
        await trio.aclose_forcefully(stream)


async def serve(host: str, port: int, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
                ) -> None:
    """Serve until cancelled; reports the bound port through ``task_status``."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    task_status.started(bound)
    await trio.serve_listeners(echo_connection, listeners)


async def _main(host: str, port: int) -> None:
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(serve, host, port)
        print(json.dumps({"event": "listening", "port": bound}), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.echo_server",
        description="A trio server that only frames (2-byte length) and returns each "
        "message: the baseline of the end-to-end switch benchmark. Prints "
        '{"event": "listening", "port": N} on stdout once bound; runs until killed.')
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="TCP port (default 0: any free port)")
    args = parser.parse_args(argv)
    raise_nofile_limit()
    try:
        trio.run(_main, args.host, args.port)
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
