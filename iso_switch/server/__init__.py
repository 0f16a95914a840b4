"""iso_switch.server (see the package docstring of iso_switch)."""
