"""``iso-switch serve``: run the switch.

With no options it runs on the embedded defaults: listeners 127.0.0.1:8583
(ascii87-hex) and 127.0.0.1:8584 (ascii87-bin), the SQLite ledger under
``./var`` seeded with the demo data, and the demo keys shipped in ``keys/``
(a warning says so). SIGINT / SIGTERM stop it gracefully: it stops
accepting, finishes what is in flight, commits and closes. SIGHUP reloads
the same ``--config`` file, the key store and the reference data.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="start the switch (embedded defaults when no options are given)",
        description="Start the ISO 8583 switch. With no options: listeners on 127.0.0.1:8583 "
        "(ascii87-hex) and 127.0.0.1:8584 (ascii87-bin), ledger under ./var with the demo "
        "data, demo keys from keys/. Stop with Ctrl-C or SIGTERM (graceful).",
    )
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="TOML configuration file (see 'iso-switch config show')")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="where the ledger (and relative key/trace paths) live; "
                        "default ./var")
    parser.add_argument("--log-format", choices=("json", "console"),
                        help="JSON lines (default) or pretty console output")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                        help="minimum level logged (default info)")
    parser.add_argument("--trace", type=Path, metavar="FILE",
                        help="record every frame received and sent to FILE (JSON Lines; "
                        "PAN, track, PIN block, chip data sealed under the key store's trace "
                        "key); same as [trace] enabled = true, path = FILE")
    parser.add_argument("--trace-masked", action="store_true",
                        help="record the trace masked instead of sealed (PAN first 6 + last 4, "
                        "the rest starred; such a trace cannot be fully replayed); implies "
                        "tracing")
    parser.set_defaults(func=serve)


def serve(args: argparse.Namespace) -> int:
    import trio

    from iso_switch.config import ConfigError, load_config
    from iso_switch.logs import configure_logging
    from iso_switch.server import build_switch

    overrides = {
        "data_dir": args.data_dir,
        "logging.format": args.log_format,
        "logging.level": args.log_level,
        # [trace] a FILE given here is relative to the current directory
        "trace.enabled": True if args.trace or args.trace_masked else None,
        "trace.path": str(args.trace.resolve()) if args.trace else None,
        "trace.masked": True if args.trace_masked else None,
    }
    try:
        config = load_config(args.config, overrides)
    except ConfigError as error:
        print(f"iso-switch serve: {error}", file=sys.stderr)
        return 1
    # Batched: the switch writes each batch's canonical lines in one call.
    configure_logging(config.logging.format, config.logging.level,  # type: ignore[arg-type]
                      batched=True)
    try:
        # SIGHUP reads the same file, with the same options, again.
        switch = build_switch(config, load=lambda: load_config(args.config, overrides))
    except Exception as error:  # a clear one-line reason, never key material
        print(f"iso-switch serve: cannot start: {type(error).__name__}: {error}",
              file=sys.stderr)
        return 1
    trio.run(switch.run)
    return 0
