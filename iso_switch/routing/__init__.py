"""iso_switch.routing (see the package docstring of iso_switch)."""
