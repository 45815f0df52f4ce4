"""Catalog entry for logsumexp (torch.logsumexp(input, dim, keepdim))."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import strategies as st

import reference.logsumexp
from gradcheck import strategies as gs
from gradcheck.ops import OpSpec
from gradcheck.specs._common import MAX_NUMEL
from gradcheck.specs.softmax import UNIT_SCALE_DISTANCE

__all__ = ["SPECS"]


@st.composite
def _inputs(draw, dtype: torch.dtype):
    """A 1-d to 4-d tensor (a dim now and then past 2048), reduced along one dim, or now and then
    two; logits of scale 1, sometimes 300 (a row dominated by one entry); keepdim either way."""
    shape = draw(gs.shapes(min_dims=1, max_dims=4, min_side=1, max_numel=MAX_NUMEL))
    ndim = len(shape)
    if ndim > 1 and draw(st.integers(0, 3)) == 0:
        dims = draw(st.lists(st.integers(0, ndim - 1), min_size=2, max_size=2, unique=True))
        dim: int | tuple[int, ...] = tuple(d - ndim if draw(st.booleans()) else d for d in dims)
    else:
        dim = draw(st.integers(-ndim, ndim - 1))
    scale = draw(st.sampled_from((1.0, 1.0, 1.0, 300.0)))
    x = draw(gs.tensors(shape, elements=st.sampled_from(("logits", "normal")), scale=scale))
    return x, dim, draw(st.booleans())


def _depth(x, dim, keepdim) -> int:
    """The sum of exp over the reduced dims (the backward's softmax shares its normaliser)."""
    dims = (dim,) if isinstance(dim, int) else dim
    return max(math.prod(x.shape[d] for d in dims), 1)


def _kinks(x, dim, keepdim) -> float:
    """Smooth, with softmax's unit-scale curvature: the finite-difference step is capped as there."""
    return 0.0 if np.isinf(x).any() else UNIT_SCALE_DISTANCE


SPECS = [
    OpSpec(
        name="logsumexp",
        reference=reference.logsumexp.logsumexp,
        reference_vjp=reference.logsumexp.logsumexp_vjp,
        inputs=_inputs,
        depth=_depth,
        ulps=4,  # exp and log
        kinks=_kinks,
        torch_fn=torch.logsumexp,
        doc="log(sum(exp(x))) over one dim or a tuple of dims, keepdim or not; grad g * softmax(x)",
        tags=("reduction",),
    ),
]
