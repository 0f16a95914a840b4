"""``python -m iso_switch`` is the ``iso-switch`` command."""

import sys

from iso_switch.cli import main

sys.exit(main())
