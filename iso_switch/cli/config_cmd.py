"""``iso-switch config``: show the effective configuration.

``config show`` prints what the switch would run with (embedded defaults,
then the file, then the command-line overrides) as TOML, so an operator can
check a file before starting the switch, or start from the defaults::

    iso-switch config show > switch.toml
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from iso_switch.config import ConfigError, dump_config, load_config


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "config",
        help="show the effective configuration",
        description="Inspect the switch configuration.",
    )
    actions = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = actions.add_parser(
        "show",
        help="print the effective configuration as TOML",
        description="Print the effective configuration (embedded defaults, then --config, "
        "then --data-dir) as TOML. Exits 1 naming the key when the file is invalid. "
        "The output is itself a valid configuration file.",
    )
    show.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="TOML configuration file (default: the embedded defaults only)",
    )
    show.add_argument(
        "--data-dir",
        metavar="DIR",
        help="override data_dir (ledger, keys and traces live under it)",
    )
    show.set_defaults(func=show_config)


def show_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, {"data_dir": args.data_dir})
    except ConfigError as error:
        print(f"iso-switch config: {error}", file=sys.stderr)
        return 1
    sys.stdout.write(dump_config(config))
    return 0
