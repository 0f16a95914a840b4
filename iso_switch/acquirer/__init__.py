"""iso_switch.acquirer (see the package docstring of iso_switch)."""
