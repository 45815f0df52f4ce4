"""Catalog entries for smooth_l1_loss, huber_loss and kl_div (arguments in torch.nn.functional's
positional order)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import strategies as st

import reference.losses
from gradcheck import strategies as gs
from gradcheck.ops import OpSpec
from gradcheck.specs._common import MAX_NUMEL, REDUCTIONS

__all__ = ["SPECS"]

# ---------------------------------------------------------------------------------------------
# smooth_l1_loss and huber_loss
# ---------------------------------------------------------------------------------------------

#: Scales of x and y: d = x - y lands on both sides of the threshold (1 mostly), or nearly all
#: inside it (0.1) or outside it (10).
_PAIR_SCALES = st.sampled_from((1.0, 1.0, 1.0, 0.1, 10.0))


@st.composite
def _pair(draw) -> tuple[torch.Tensor, torch.Tensor]:
    """Input and target of one shape (0-d to 4-d, a dim now and then past 2048), of a common scale.
    Not small integers: they would put |d| exactly on the threshold, where finite differences
    are skipped."""
    shape = draw(gs.shapes(min_dims=0, max_dims=4, max_numel=MAX_NUMEL))
    scale = draw(_PAIR_SCALES)
    elements = st.sampled_from(("normal", "normal", "uniform"))
    return draw(gs.tensors(shape, elements=elements, scale=scale)), draw(
        gs.tensors(shape, elements=elements, scale=scale)
    )


@st.composite
def _smooth_l1_inputs(draw, dtype: torch.dtype):
    """beta 0 (the L1 loss, as torch allows) now and then."""
    x, y = draw(_pair())
    beta = draw(st.sampled_from((1.0, 1.0, 0.5, 2.0, 0.1, 0.0)))
    return x, y, None, None, draw(REDUCTIONS), beta


@st.composite
def _huber_inputs(draw, dtype: torch.dtype):
    """delta > 0 (torch refuses 0)."""
    x, y = draw(_pair())
    delta = draw(st.sampled_from((1.0, 1.0, 0.5, 2.0, 0.1)))
    return x, y, draw(REDUCTIONS), delta


def _numel_depth(x, reduction: str) -> int:
    """The sum over every element for 'sum' and 'mean' (and kl_div's 'batchmean')."""
    return max(math.prod(np.shape(x)), 1) if reduction != "none" else 1


def _threshold_distance(x, y, threshold: float) -> float:
    """How far the inputs are from |x - y| = threshold, where the second derivative jumps (the
    losses are C1, not C2: a finite difference across the threshold has an O(h) error that
    Richardson extrapolation does not remove). A step moves x and y by up to 2h each (the
    stencil's outer points), so d by 4h: the half-gap keeps the whole stencil on one side."""
    d = np.abs(np.asarray(x, dtype=np.float64) - np.asarray(y, dtype=np.float64))
    return float(np.min(np.abs(d - threshold))) / 2 if d.size else math.inf


def _smooth_l1_depth(x, y, size_average, reduce, reduction, beta) -> int:
    return _numel_depth(x, reduction)


def _smooth_l1_kinks(x, y, size_average, reduce, reduction, beta) -> float:
    """|d| = beta (a jump of the second derivative; at beta = 0, the L1 kink at d = 0)."""
    return _threshold_distance(x, y, beta)


def _huber_depth(x, y, reduction, delta) -> int:
    return _numel_depth(x, reduction)


def _huber_kinks(x, y, reduction, delta) -> float:
    """|d| = delta (a jump of the second derivative)."""
    return _threshold_distance(x, y, delta)


# ---------------------------------------------------------------------------------------------
# kl_div
# ---------------------------------------------------------------------------------------------

#: torch warns about 'mean' (it divides by the element count, not the batch: not the KL
#: divergence); the three it recommends are drawn.
_KL_REDUCTIONS = st.sampled_from(("batchmean", "sum", "none"))


@st.composite
def _kl_div_inputs(draw, dtype: torch.dtype):
    """input: log-probabilities (any reals); target: probabilities in [1e-3, 1] (above fp16's
    subnormals, so no cast makes one 0, where the target's derivative does not exist), or with
    ``log_target`` log-probabilities in [-7, 2]."""
    shape = draw(gs.shapes(min_dims=0, max_dims=4, max_numel=MAX_NUMEL))
    x = draw(
        gs.tensors(shape, elements=st.sampled_from(("normal", "uniform")), scale=draw(st.sampled_from((1.0, 3.0))))
    )
    log_target = draw(st.booleans())
    if log_target:
        target = draw(gs.tensors(shape, elements="normal", scale=2.0, min_value=-7.0, max_value=2.0))
    else:
        target = draw(gs.tensors(shape, elements="positive", min_value=1e-3, max_value=1.0))
    return x, target, None, None, draw(_KL_REDUCTIONS), log_target


def _kl_div_depth(x, target, size_average, reduce, reduction, log_target) -> int:
    return _numel_depth(x, reduction)


def _kl_div_kinks(x, target, size_average, reduce, reduction, log_target) -> float:
    """A probability target ends at 0 (log 0): the smallest target is how far a step may go."""
    if log_target:
        return math.inf
    t = np.asarray(target, dtype=np.float64)
    return float(np.min(t)) if t.size else math.inf


SPECS = [
    OpSpec(
        name="smooth_l1_loss",
        reference=reference.losses.smooth_l1_loss,
        reference_vjp=reference.losses.smooth_l1_loss_vjp,
        inputs=_smooth_l1_inputs,
        depth=_smooth_l1_depth,
        kinks=_smooth_l1_kinks,
        torch_fn=F.smooth_l1_loss,
        doc="smooth L1 (quadratic inside |x - y| < beta, linear outside; beta = 0 is L1) with the three "
        "reductions; both arguments get gradients",
    ),
    OpSpec(
        name="huber_loss",
        reference=reference.losses.huber_loss,
        reference_vjp=reference.losses.huber_loss_vjp,
        inputs=_huber_inputs,
        depth=_huber_depth,
        kinks=_huber_kinks,
        torch_fn=F.huber_loss,
        doc="Huber loss (delta times smooth L1 with beta = delta) with the three reductions; both arguments "
        "get gradients",
    ),
    OpSpec(
        name="kl_div",
        reference=reference.losses.kl_div,
        reference_vjp=reference.losses.kl_div_vjp,
        inputs=_kl_div_inputs,
        depth=_kl_div_depth,
        ulps=4,  # exp or log
        kinks=_kl_div_kinks,
        torch_fn=F.kl_div,
        doc="KL divergence from log-probabilities, target as probabilities or log-probabilities "
        "(log_target); 'none', 'sum', 'batchmean'; both arguments get gradients",
    ),
]
