"""iso_switch.issuer (see the package docstring of iso_switch)."""
