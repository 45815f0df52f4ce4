"""Catalog entry for mse_loss (arguments in torch.nn.functional's positional order)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from hypothesis import strategies as st

import reference.mse
from gradcheck import strategies as gs
from gradcheck.ops import OpSpec
from gradcheck.specs._common import REDUCTIONS

__all__ = ["SPECS"]

# ---------------------------------------------------------------------------------------------
# mse_loss
# ---------------------------------------------------------------------------------------------


@st.composite
def _mse_inputs(draw, dtype: torch.dtype):
    shape = draw(gs.shapes(min_dims=0, max_dims=4, max_numel=1 << 13))
    x = draw(gs.tensors(shape, elements=st.sampled_from(("normal", "normal", "integers"))))
    y = draw(gs.tensors(shape, elements=st.sampled_from(("normal", "normal", "integers"))))
    return x, y, None, None, draw(REDUCTIONS)


def _mse_depth(x, y, size_average, reduce, reduction) -> int:
    """The sum over every element for 'sum' and 'mean'."""
    return max(math.prod(x.shape), 1) if reduction != "none" else 1


SPECS = [
    OpSpec(
        name="mse_loss",
        reference=reference.mse.mse_loss,
        reference_vjp=reference.mse.mse_loss_vjp,
        inputs=_mse_inputs,
        depth=_mse_depth,
        torch_fn=F.mse_loss,
        doc="mean squared error with the three reductions; both arguments get gradients",
    ),
]
