"""Shared assertions for the kernels' ``torch.library`` registrations: ``opcheck`` passes, and a
``torch.compile(fullgraph=True)`` of a public function equals eager, forward and backward."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["DTYPES", "assert_compiled_matches_eager", "assert_opcheck_passes"]

#: The four floating dtypes every registration is checked at.
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def assert_opcheck_passes(op: Any, args: Sequence[Any], kwargs: dict | None = None) -> None:
    """``torch.library.opcheck`` (schema, autograd registration, fake tensor, AOT dispatch) passes."""
    results = torch.library.opcheck(op, tuple(args), kwargs)
    assert all(v == "SUCCESS" for v in results.values()), results


def assert_compiled_matches_eager(fn: Callable, *inputs: torch.Tensor, backend: str = "aot_eager") -> None:
    """``torch.compile(fn, fullgraph=True)`` gives eager's outputs and gradients (bitwise: the same
    kernels run in both; NaN matches NaN)."""
    compiled = torch.compile(fn, fullgraph=True, backend=backend)
    results = []
    for f in (fn, compiled):
        leaves = [x.detach().requires_grad_() for x in inputs]
        out = f(*leaves)
        grads = torch.autograd.grad(out, leaves, torch.ones_like(out))
        results.append((out, grads))
    torch.testing.assert_close(results[1], results[0], equal_nan=True, rtol=0, atol=0)
