"""Simulators: terminal, load generator, trace replay."""
