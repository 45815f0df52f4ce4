"""Helpers for test suites: one line makes an op's property test."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
import torch

from gradcheck.ops import get_spec
from gradcheck.runner import verify_op

__all__ = ["op_tests"]


def op_tests(
    name: str,
    *,
    dtypes: Sequence[torch.dtype] | None = None,
    impl: Callable | None = None,
    max_examples: int | None = None,
) -> Callable:
    """A pytest test, parametrized over the op's dtypes, that verifies catalog op ``name``:
    ``test_softmax = op_tests("softmax")``."""
    chosen = tuple(dtypes) if dtypes is not None else get_spec(name).dtypes

    @pytest.mark.parametrize("dtype", chosen, ids=lambda d: str(d).removeprefix("torch."))
    def test(dtype: torch.dtype) -> None:
        verify_op(name, impl=impl, dtypes=[dtype], max_examples=max_examples)

    test.__name__ = f"test_{name}"
    return test
