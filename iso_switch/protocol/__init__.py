"""iso_switch.protocol (see the package docstring of iso_switch)."""
