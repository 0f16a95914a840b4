"""iso_switch.security (see the package docstring of iso_switch)."""
