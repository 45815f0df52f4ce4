"""pytest plugin (entry point ``pytest11``): Hypothesis profiles, the ``gpu``/``slow`` markers and options.

Profiles: ``dev`` (quick), ``ci`` (derandomized, no deadline; active when CI=true), ``thorough``
(>= 1000 examples), ``gpu`` (no deadline, more examples). Pick one with ``--gradcheck-profile``
or Hypothesis' own ``--hypothesis-profile``.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]

settings.register_profile("dev", max_examples=10, deadline=None, suppress_health_check=_SLOW_OK)
settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=_SLOW_OK,
)
settings.register_profile("thorough", max_examples=1000, deadline=None, suppress_health_check=_SLOW_OK)
settings.register_profile(
    "gpu",
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=_SLOW_OK,
)

PROFILES = ("dev", "ci", "thorough", "gpu")


def default_profile() -> str:
    """``GRADCHECK_PROFILE`` if set, else ``ci`` when CI=true, else ``dev``."""
    chosen = os.environ.get("GRADCHECK_PROFILE")
    if chosen:
        return chosen
    return "ci" if os.environ.get("CI", "").lower() in ("1", "true", "yes") else "dev"


settings.load_profile(default_profile())


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gradcheck", "kernel verification")
    group.addoption(
        "--gradcheck-profile",
        choices=PROFILES,
        default=None,
        help="Hypothesis profile for the verification tests (default: ci when CI=true, else dev)",
    )
    group.addoption("--gradcheck-examples", type=int, default=None, help="override max_examples of the active profile")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (skipped without one)")
    config.addinivalue_line("markers", "slow: long-running; deselect with -m 'not slow'")
    profile = config.getoption("--gradcheck-profile", default=None)
    if profile:
        settings.load_profile(profile)
    examples = config.getoption("--gradcheck-examples", default=None)
    if examples:
        settings.register_profile("gradcheck-override", settings(settings(), max_examples=examples))
        settings.load_profile("gradcheck-override")


def pytest_report_header(config: pytest.Config) -> list[str]:
    from kernels import _runtime

    mode = "Triton interpreter on CPU" if _runtime.INTERPRET else "compiled for CUDA"
    return [f"gradcheck: kernels {mode}; hypothesis profile {settings._current_profile}"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from kernels import _runtime

    if not _runtime.INTERPRET:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (kernels run under the Triton interpreter here)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
