"""Catalog entry for cat: every tensor is a positional argument, the dim comes last."""

from __future__ import annotations

import math

import torch
from hypothesis import strategies as st

import reference.cat
from gradcheck import strategies as gs
from gradcheck.ops import OpSpec
from gradcheck.specs._common import MAX_NUMEL, VALUES

__all__ = ["SPECS"]


def _cat_reference(*args):
    *arrays, dim = args
    return reference.cat.cat(arrays, dim)


def _cat_vjp(*args):
    *arrays, dim, g = args
    return (*reference.cat.cat_vjp(arrays, dim, g), None)


def _torch_cat(*args):
    *tensors, dim = args
    return torch.cat(tensors, dim)


@st.composite
def _cat_inputs(draw, dtype: torch.dtype):
    """1 to 4 tensors of one shape except along dim (sizes there from 0 up, 2049 now and then);
    sometimes a legacy (0,)-shaped tensor, which torch skips."""
    base = list(draw(gs.shapes(min_dims=1, max_dims=4, max_numel=MAX_NUMEL // 4)))
    ndim = len(base)
    dim = draw(st.integers(-ndim, ndim - 1))
    count = draw(st.integers(1, 4))
    tensors = []
    for _ in range(count):
        shape = list(base)
        shape[dim] = draw(st.one_of(st.integers(0, 8), st.sampled_from((17, 2049))))
        if math.prod(shape) > MAX_NUMEL:
            shape[dim] = 1
        tensors.append(draw(gs.tensors(tuple(shape), elements=VALUES)))
    if ndim > 1 and draw(st.integers(0, 7)) == 0:
        tensors.insert(draw(st.integers(0, len(tensors))), torch.zeros(0, dtype=torch.float64, device="cpu"))
    return (*tensors, dim)



SPECS = [
    OpSpec(
        name="cat",
        reference=_cat_reference,
        reference_vjp=_cat_vjp,
        inputs=_cat_inputs,
        torch_fn=_torch_cat,
        doc="cat(tensors, dim) as cat(*tensors, dim): one strided copy per input; grads are slices of g",
    ),
]
