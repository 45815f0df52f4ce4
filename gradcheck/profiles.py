"""Hypothesis profiles for verification runs: registered on import, loaded only when asked for.

``dev`` (10 examples), ``ci`` (10, derandomized, no database, no deadline), ``thorough`` (1000),
``gpu`` (100, derandomized). Registering a profile changes nothing; a suite, the command line or a
test run picks one with :func:`load` (``--gradcheck-profile NAME`` or ``GRADCHECK_PROFILE=NAME``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from hypothesis import HealthCheck, Phase, settings

__all__ = [
    "BUDGETS",
    "OPCHECK_EXAMPLES",
    "PROFILES",
    "budgets",
    "default_profile",
    "derived",
    "load",
    "opcheck_examples",
    "overridden",
    "without_shrinking",
]

_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]

#: Replayable runs (CI, the GPU runner): the same examples every time, nothing stored between runs.
_REPLAYABLE = {"deadline": None, "derandomize": True, "database": None, "print_blob": True}

#: Hypothesis knows our profiles under this prefix: Hypothesis has a "ci" profile of its own, which it
#: loads by itself on CI machines, and registering another "ci" would replace it in every suite of
#: the environment (found by tests/gradcheck/test_plugin.py under CI=true).
PREFIX = "gradcheck-"

settings.register_profile(PREFIX + "dev", max_examples=10, deadline=None, suppress_health_check=_SLOW_OK)
settings.register_profile(PREFIX + "ci", max_examples=10, suppress_health_check=_SLOW_OK, **_REPLAYABLE)
settings.register_profile(PREFIX + "thorough", max_examples=1000, deadline=None, suppress_health_check=_SLOW_OK)
settings.register_profile(PREFIX + "gpu", max_examples=100, suppress_health_check=_SLOW_OK, **_REPLAYABLE)

PROFILES = ("dev", "ci", "thorough", "gpu")

#: Examples per custom op and dtype that run ``torch.library.opcheck`` under each profile: its
#: AOT-dispatch test alone costs 3 calls and 2 backwards plus ~0.15 s of tracing per example
#: (measured on relu under the Triton interpreter: 0.3-0.5 s per example, about 3x the rest of
#: the verification), so a profile bounds it; under any other profile every example runs it.
OPCHECK_EXAMPLES: dict[str, int] = {"dev": 2, "ci": 2, "thorough": 100, "gpu": 25}


#: Seconds per op and dtype: examples stop being generated after ``budget`` (the report says how many
#: ran), and shrinking a failure stops after ``shrink`` (the smallest counterexample found by then is
#: reported). Under the Triton interpreter one example of a wide row costs seconds; these bound a
#: verification whatever the strategy draws. Under any other profile there is no bound.
BUDGETS: dict[str, tuple[float | None, float | None]] = {
    "dev": (60.0, 30.0),
    # derandomized profiles run the same examples on every machine: no generation budget, which
    # would cut the sequence where a machine is slow; shrinking is bounded generously
    "ci": (None, 120.0),
    "thorough": (1800.0, 300.0),
    "gpu": (None, 120.0),
}


def budgets() -> tuple[float | None, float | None]:
    """(budget, shrink budget) in seconds of the active profile (:data:`BUDGETS`); (None, None)
    (no bound) when the active profile is not one of these."""
    name = _current_name()
    if name is None or not name.startswith(PREFIX):
        return None, None
    return BUDGETS.get(name.removeprefix(PREFIX).split("+", 1)[0], (None, None))


def default_profile() -> str:
    """``GRADCHECK_PROFILE`` if set, else ``ci`` when CI=true, else ``dev``: the choice of this
    project's own test suite and command line (the pytest plugin loads nothing by itself)."""
    chosen = os.environ.get("GRADCHECK_PROFILE")
    if chosen:
        return chosen
    return "ci" if os.environ.get("CI", "").lower() in ("1", "true", "yes") else "dev"


def opcheck_examples() -> int | None:
    """The opcheck bound of the active profile (:data:`OPCHECK_EXAMPLES`), None (every example)
    when the active profile is not one of these (a user's own, Hypothesis' default)."""
    name = _current_name()
    if name is None or not name.startswith(PREFIX):
        return None
    return OPCHECK_EXAMPLES.get(name.removeprefix(PREFIX).split("+", 1)[0])


def load(name: str) -> None:
    """Load profile ``name``: one of :data:`PROFILES` (registered with Hypothesis as
    ``gradcheck-<name>``), or any other profile registered with Hypothesis."""
    settings.load_profile(PREFIX + name if name in PROFILES else name)


def derived(name: str, **options: Any) -> str:
    """Register the active profile with ``options`` changed as ``"<active>+<name>"`` (so the
    bounds keyed on the active profile's name still apply) and return that name."""
    base = _current_name() or "default"
    derived_name = f"{base.split('+', 1)[0]}+{name}"
    settings.register_profile(derived_name, settings(settings.default, **options))
    return derived_name


@contextlib.contextmanager
def overridden(**options: Any) -> Iterator[settings]:
    """The active profile with ``options`` changed (``max_examples=5``, ``phases=...``) while the
    block runs; the profile that was active comes back afterwards."""
    active, active_name = settings.default, _current_name()
    settings.load_profile(derived("overridden", **options))
    try:
        yield settings.default
    finally:
        if active_name is not None:
            settings.load_profile(active_name)
        else:
            settings.register_profile("gradcheck-restored", active)
            settings.load_profile("gradcheck-restored")


def without_shrinking() -> contextlib.AbstractContextManager[settings]:
    """The active profile minus Hypothesis's shrink phase while the block runs: for verdicts that
    the first failing example settles (a known failure, a mutation score)."""
    return overridden(phases=[p for p in settings.default.phases if p != Phase.shrink])


def _current_name() -> str | None:
    return getattr(settings, "get_current_profile_name", lambda: None)()
