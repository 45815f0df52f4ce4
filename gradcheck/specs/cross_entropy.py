"""Catalog entry for cross_entropy (arguments in torch.nn.functional's positional order)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import strategies as st

import reference.cross_entropy
from gradcheck import strategies as gs
from gradcheck.ops import OpSpec
from gradcheck.specs._common import REDUCTIONS
from gradcheck.specs.softmax import UNIT_SCALE_DISTANCE

__all__ = ["SPECS"]

# ---------------------------------------------------------------------------------------------
# cross_entropy
# ---------------------------------------------------------------------------------------------


@st.composite
def _ce_geometry(draw) -> tuple[tuple[int, ...], int]:
    """(logits shape, number of classes): (N, C) mostly, with C reaching 17, 1000 and 2049 (a
    streamed row under the interpreter); batches of 2049 and 4097 with 10 classes (where
    attorch lost its last block); (N, C, d1[, d2]). An unbatched (C,) input with a 0-d target is
    left to the edge-case tests: the engine's float64 pass turns 0-d arrays into 1-d ones."""
    kind = draw(st.sampled_from(("rows", "rows", "rows", "big_batch", "spatial")))
    if kind == "big_batch":
        return (draw(st.sampled_from(gs.LARGE_SIZES)), 10), 10
    c = draw(st.one_of(st.integers(1, 12), st.sampled_from((17, 1000, 2049))))
    n = draw(gs.sides(min_side=1, max_side=16, large=False))
    n = max(1, min(n, (1 << 13) // c))
    if kind == "spatial":
        extra = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=2)))
        c = min(c, 12)
        return (n, c, *extra), c
    return (n, c), c


@st.composite
def _ce_inputs(draw, dtype: torch.dtype):
    shape, c = draw(_ce_geometry())
    scale = draw(st.sampled_from((1.0, 1.0, 1.0, 300.0)))
    x = draw(gs.tensors(shape, elements=st.sampled_from(("logits", "normal")), scale=scale))
    target_shape = shape[:1] + shape[2:]
    ignore_index = draw(st.sampled_from((-100, -100, -1, c)))  # outside the classes (tests cover inside)
    target = draw(gs.class_targets(target_shape, c, ignore_index=ignore_index, p_ignore=0.2))
    weight = draw(st.one_of(st.none(), gs.tensors((c,), elements="positive", expand=False)))
    reduction = draw(REDUCTIONS)
    smoothing = draw(st.sampled_from((0.0, 0.0, 0.1, 0.25)))
    # torch's positional order: input, target, weight, size_average, ignore_index, reduce, reduction, label_smoothing
    return x, target, weight, None, ignore_index, None, reduction, smoothing


def _ce_depth(x, target, weight, size_average, ignore_index, reduce, reduction, label_smoothing) -> int:
    """The class sum of each row's log-sum-exp, plus the sum over rows for 'sum' and 'mean'."""
    classes = x.shape[1] if x.ndim > 1 else x.shape[0]
    return classes + (max(int(target.size), 1) if reduction != "none" else 0)


def _ce_kinks(x, target, weight, size_average, ignore_index, reduce, reduction, label_smoothing) -> float:
    """Smooth, with softmax's unit-scale curvature (the step is capped as there); 'mean' over no
    counted target is NaN (0/0, as torch): no finite differences there."""
    return 0.0 if reduction == "mean" and not np.any(target != ignore_index) else UNIT_SCALE_DISTANCE


SPECS = [
    OpSpec(
        name="cross_entropy",
        reference=reference.cross_entropy.cross_entropy,
        reference_vjp=reference.cross_entropy.cross_entropy_vjp,
        inputs=_ce_inputs,
        depth=_ce_depth,
        ulps=4,
        kinks=_ce_kinks,  # exp and log
        torch_fn=F.cross_entropy,
        optional_grads=(2,),  # torch defines no gradient for the class weight
        doc="class-index cross entropy with weight, ignore_index, label_smoothing and the three reductions; "
        "loss and gradient in one pass over the logits",
    ),
]
