"""iso_switch.ledger (see the package docstring of iso_switch)."""
