"""iso_switch.logs (see the package docstring of iso_switch)."""
