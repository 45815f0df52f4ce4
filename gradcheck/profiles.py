"""Hypothesis profiles for verification runs: registered on import, loaded only when asked for.

``dev`` (10 examples), ``ci`` (25, derandomized, no database, no deadline), ``thorough`` (1000),
``gpu`` (100, derandomized). Registering a profile changes nothing; a suite, the command line or a
test run picks one with :func:`load` (``--gradcheck-profile NAME`` or ``GRADCHECK_PROFILE=NAME``).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

__all__ = ["PROFILES", "default_profile", "load"]

_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]

#: Replayable runs (CI, the GPU runner): the same examples every time, nothing stored between runs.
_REPLAYABLE = {"deadline": None, "derandomize": True, "database": None, "print_blob": True}

settings.register_profile("dev", max_examples=10, deadline=None, suppress_health_check=_SLOW_OK)
settings.register_profile("ci", max_examples=25, suppress_health_check=_SLOW_OK, **_REPLAYABLE)
settings.register_profile("thorough", max_examples=1000, deadline=None, suppress_health_check=_SLOW_OK)
settings.register_profile("gpu", max_examples=100, suppress_health_check=_SLOW_OK, **_REPLAYABLE)

PROFILES = ("dev", "ci", "thorough", "gpu")


def default_profile() -> str:
    """``GRADCHECK_PROFILE`` if set, else ``ci`` when CI=true, else ``dev``: the choice of this
    project's own test suite and command line (the pytest plugin loads nothing by itself)."""
    chosen = os.environ.get("GRADCHECK_PROFILE")
    if chosen:
        return chosen
    return "ci" if os.environ.get("CI", "").lower() in ("1", "true", "yes") else "dev"


def load(name: str) -> None:
    """Load profile ``name`` (one of :data:`PROFILES`, or any profile registered with Hypothesis)."""
    settings.load_profile(name)
