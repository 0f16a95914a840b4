"""iso_switch.processor (see the package docstring of iso_switch)."""
