"""Catalog entries for softmax and log_softmax."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import strategies as st

import reference.softmax
from gradcheck import strategies as gs
from gradcheck.ops import OpSpec

__all__ = ["SPECS", "UNIT_SCALE_DISTANCE"]


@st.composite
def _softmax_inputs(draw, dtype: torch.dtype):
    """Any shape (0-d to 4-d, rows up to 4097) and dim; logits, sometimes of magnitude 1e4
    (clipped to fp16's range), sometimes with -inf entries (never a whole row: that gives NaN,
    whose gradient is NaN, as in torch; the edge-case tests check it)."""
    shape = draw(gs.shapes(min_dims=0, max_dims=4, max_numel=1 << 13))
    ndim = len(shape)
    dim = draw(st.integers(-max(ndim, 1), max(ndim - 1, 0)))
    scale = draw(st.sampled_from((1.0, 1.0, 1.0, 3000.0)))
    x = draw(
        gs.tensors(shape, elements=st.sampled_from(("logits", "normal")), scale=scale, min_value=-3e4, max_value=3e4)
    )
    if ndim and shape[dim] > 1 and draw(st.integers(0, 5)) == 0:
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        x = x.clone()
        x[torch.from_numpy(rng.random(shape) < 0.3)] = -math.inf
        first = [slice(None)] * ndim
        first[dim] = 0
        x[tuple(first)] = torch.from_numpy(np.asarray(rng.standard_normal(x[tuple(first)].shape)))
    return x, dim


def _softmax_depth(x, dim) -> int:
    """The sum along dim (forward normaliser, backward dot product)."""
    return max(x.shape[dim], 1) if x.ndim else 1


#: softmax sees differences of logits and bends on a scale of 1 whatever their magnitude, but the
#: engine's finite-difference step grows with |x| (30 at logits of 3e4, where differences taken
#: that far are useless): reporting this "distance" caps the step at a quarter of it, 1e-3.
UNIT_SCALE_DISTANCE = 4e-3


def _softmax_kinks(x, dim) -> float:
    """No kinks; the step is capped for unit-scale curvature (finite differences are skipped
    where 1e-3 is below the engine's floor, logits past ~1000), and inputs with -inf entries skip
    them (a step along -inf is no step, and log_softmax is -inf there)."""
    return 0.0 if np.isinf(x).any() else UNIT_SCALE_DISTANCE


SPECS = [
    OpSpec(
        name="softmax",
        reference=reference.softmax.softmax,
        reference_vjp=reference.softmax.softmax_vjp,
        inputs=_softmax_inputs,
        depth=_softmax_depth,
        ulps=4,  # exp (ex2.approx on the GPU) and a division
        kinks=_softmax_kinks,
        torch_fn=F.softmax,
        doc="softmax along any dim; rows in registers or streamed twice with an online max",
    ),
    OpSpec(
        name="log_softmax",
        reference=reference.softmax.log_softmax,
        reference_vjp=reference.softmax.log_softmax_vjp,
        inputs=_softmax_inputs,
        depth=_softmax_depth,
        ulps=4,  # exp and log
        kinks=_softmax_kinks,
        torch_fn=F.log_softmax,
        doc="log_softmax along any dim; rows in registers or streamed twice with an online max",
    ),
]
