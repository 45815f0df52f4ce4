"""The benchmark harness's own behaviour that needs no benchmark run (ordinary tests: they run in
the normal suite, where the benchmarks themselves are skipped)."""

import pytest

from benchmarks import harness as hb


def test_load_returns_the_kernel_function():
    from kernels import relu

    assert hb.load("kernels.relu", "relu") is relu.relu


def test_load_fails_on_a_module_that_does_not_import():
    # a renamed kernel module must fail its benchmarks, never skip them silently
    with pytest.raises(ModuleNotFoundError, match=r"kernels\.no_such_module"):
        hb.load("kernels.no_such_module", "relu")


def test_load_fails_on_a_missing_name():
    with pytest.raises(AttributeError, match=r"kernels\.relu\.no_such_function"):
        hb.load("kernels.relu", "no_such_function")


def test_goal_needs_every_number():
    assert hb.COPY_BOUND.met(0.9, None) is None
    assert hb.COPY_BOUND.met(0.5, None) is False
    assert hb.COPY_BOUND.met(0.9, 1.1) is True


def test_combos_keep_and_ids():
    params = hb.combos(["a", "b"], [1, 2], keep=lambda s, n: (s, n) != ("b", 2))
    assert [p.id for p in params] == ["a-1", "a-2", "b-1"]
