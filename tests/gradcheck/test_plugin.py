"""The pytest plugin is inert for a suite that does not use it: an unrelated project's ``@given``
test, run with this package installed (its ``pytest11`` entry point active), keeps Hypothesis's own
default settings and an untouched environment; asked for a profile, the plugin loads it."""

from __future__ import annotations

import json

import pytest
from hypothesis import settings

#: An unrelated suite: it records what its test saw (settings, environment, imported modules).
UNRELATED_TEST = """
import json, os, sys
from hypothesis import given, settings, strategies as st

SEEN = []

@given(st.integers())
def test_property(n):
    pass

@given(st.integers())
def check_property(n):
    SEEN.append(n)

def test_record(request):
    check_property()
    record = {
        "examples": len(SEEN),
        "max_examples": settings().max_examples,
        "env": dict(os.environ),
        "kernels": "kernels" in sys.modules,
        "triton": "triton" in sys.modules,
        "plugin": request.config.pluginmanager.hasplugin("gradcheck"),
    }
    with open(os.environ["RECORD"], "w") as f:
        json.dump(record, f)
"""


def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment a user's unrelated suite would run in; CI=true is kept when this suite has it
    (our own profile choice keys on it, the plugin must not)."""
    for name in ("GRADCHECK_PROFILE", "TRITON_INTERPRET", "GRADCHECK_INTERPRET", "PYTEST_ADDOPTS"):
        monkeypatch.delenv(name, raising=False)


def _run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, *args: str) -> dict:
    _clean_env(monkeypatch)
    record = pytester.path / "record.json"
    monkeypatch.setenv("RECORD", str(record))
    pytester.makepyfile(test_unrelated=UNRELATED_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", *args)
    result.assert_outcomes(passed=2)
    seen = json.loads(record.read_text())
    seen["stdout"] = result.stdout.str()
    return seen


def test_an_unrelated_suite_keeps_hypothesis_defaults(pytester, monkeypatch):
    seen = _run(pytester, monkeypatch)
    assert seen["plugin"], "the gradcheck plugin should be installed and loaded in this environment"
    assert seen["max_examples"] == 100  # Hypothesis's default, not a gradcheck profile
    assert seen["examples"] == 100
    assert not seen["kernels"] and not seen["triton"]
    assert "TRITON_INTERPRET" not in seen["env"]
    assert "gradcheck:" not in seen["stdout"]
    # the same suite with the plugin switched off sees the same settings and the same environment
    without = _run(pytester, monkeypatch, "-p", "no:gradcheck")
    assert not without["plugin"]
    assert without["max_examples"] == seen["max_examples"]
    assert without["env"] == seen["env"]


def test_asked_for_a_profile_the_plugin_loads_it(pytester, monkeypatch):
    seen = _run(pytester, monkeypatch, "--gradcheck-profile", "dev")
    assert seen["max_examples"] == 10
    assert seen["examples"] <= 10
    assert "gradcheck: hypothesis profile dev" in seen["stdout"]


def test_the_environment_variable_asks_for_a_profile(pytester, monkeypatch):
    _clean_env(monkeypatch)
    monkeypatch.setenv("GRADCHECK_PROFILE", "ci")
    record = pytester.path / "record.json"
    monkeypatch.setenv("RECORD", str(record))
    pytester.makepyfile(test_unrelated=UNRELATED_TEST)
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)
    assert json.loads(record.read_text())["max_examples"] == settings.get_profile("gradcheck-ci").max_examples
