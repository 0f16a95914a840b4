"""Shared test configuration.

Hypothesis never uses a deadline here: tests must not depend on wall-clock
speed (CI runs on 2 loaded cores). The ``ci`` profile trades examples for
time; ``HYPOTHESIS_PROFILE=thorough`` runs many more locally.
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "default", deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "ci", deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow],
    derandomize=False,
)
settings.register_profile(
    "thorough", deadline=None, max_examples=5000, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

#: The store contract fixtures (``factory``, ``store``), shared by the
#: contract test modules.
pytest_plugins = ("tests.store_factories",)
