"""The layers the import contracts of pyproject.toml describe, at run time:
``lint-imports`` (run by ``./run test``) reads the import statements, this
imports the packages below the server in a fresh interpreter and looks at
what actually got loaded (a third-party package could pull trio in)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

WATCHED = ("trio", "iso_switch.server")


def _loaded_by(module: str) -> list[str]:
    """Which of :data:`WATCHED` a fresh interpreter holds after importing ``module``."""
    code = (f"import json, sys, {module}\n"
            f"print(json.dumps([m for m in {WATCHED!r} if m in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                          text=True)
    loaded: list[str] = json.loads(done.stdout)
    return loaded


@pytest.mark.parametrize("module", ["iso_switch.trace", "iso_switch.links", "iso_switch.admin",
                                    "iso_switch.bootstrap", "iso_switch.config"])
def test_packages_below_the_server_load_neither_trio_nor_the_server(module: str) -> None:
    assert _loaded_by(module) == []
