"""Helpers for test suites: one line makes an op's property test."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
import torch

from gradcheck.hooks import default_device
from gradcheck.ops import get_spec, implementation
from gradcheck.runner import verify_op

__all__ = ["op_tests"]


def op_tests(
    name: str,
    *,
    dtypes: Sequence[torch.dtype] | None = None,
    impl: Callable | None = None,
    max_examples: int | None = None,
    cpu_max_examples: int | None = None,
) -> Callable:
    """A pytest test, parametrized over the op's dtypes, that verifies catalog op ``name``:
    ``test_softmax = op_tests("softmax")``. Examples per dtype: ``max_examples`` if given, else
    ``cpu_max_examples`` where the implementation runs on the CPU (Triton kernels under the
    interpreter cost seconds an example), else the active profile's (a GPU run keeps its 100)."""
    chosen = tuple(dtypes) if dtypes is not None else get_spec(name).dtypes

    @pytest.mark.parametrize("dtype", chosen, ids=lambda d: str(d).removeprefix("torch."))
    def test(dtype: torch.dtype) -> None:
        examples = max_examples
        if examples is None and cpu_max_examples is not None:
            device = implementation(name)[1] if impl is None else None
            if (device or default_device()).type == "cpu":
                examples = cpu_max_examples
        verify_op(name, impl=impl, dtypes=[dtype], max_examples=examples)

    test.__name__ = f"test_{name}"
    return test
