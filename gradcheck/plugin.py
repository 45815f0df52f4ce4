"""pytest plugin (entry point ``pytest11``): options that pick a verification profile.

Inert unless asked: installing the package changes nothing in another project's suite. It loads a
Hypothesis profile only when the run asks for one (``--gradcheck-profile NAME``, or the
``GRADCHECK_PROFILE`` environment variable), imports no kernels and sets no environment variable.
The profiles are in ``gradcheck.profiles``.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

from gradcheck import profiles
from gradcheck.profiles import PROFILES

_ASKED = pytest.StashKey[str]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gradcheck", "kernel verification")
    group.addoption(
        "--gradcheck-profile",
        choices=PROFILES,
        default=None,
        help="Hypothesis profile for the run (dev, ci, thorough, gpu; default: none is loaded, or GRADCHECK_PROFILE)",
    )
    group.addoption(
        "--gradcheck-examples", type=int, default=None, help="override max_examples of the active Hypothesis profile"
    )


def pytest_configure(config: pytest.Config) -> None:
    profile = config.getoption("--gradcheck-profile", default=None) or os.environ.get("GRADCHECK_PROFILE")
    if profile:
        profiles.load(profile)
        config.stash[_ASKED] = profile
    examples = config.getoption("--gradcheck-examples", default=None)
    if examples:
        settings.load_profile(profiles.derived(f"{examples}-examples", max_examples=examples))
        config.stash[_ASKED] = f"{config.stash.get(_ASKED, 'active')} with {examples} examples"


def pytest_report_header(config: pytest.Config) -> list[str]:
    asked = config.stash.get(_ASKED, None)
    return [f"gradcheck: hypothesis profile {asked}"] if asked else []
