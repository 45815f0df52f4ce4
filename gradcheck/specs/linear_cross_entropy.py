"""Catalog entry for linear_cross_entropy, the LLM head as one op: cross_entropy(hidden @ weight^T
+ bias, target) with ignore_index and the three reductions, the op fused (chunked) kernels compute
without materialising the logits."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import strategies as st

import reference.linear_cross_entropy
import reference.logsumexp
import reference.softmax
from gradcheck import strategies as gs
from gradcheck.ops import OpSpec
from gradcheck.specs._common import MAX_NUMEL, REDUCTIONS
from gradcheck.specs.softmax import UNIT_SCALE_DISTANCE

__all__ = ["SPECS", "linear_cross_entropy"]

#: Elements of the logits, the weight and the hidden states at most: twice the catalog's usual
#: budget, so that 4097 rows keep a vocabulary of 3 (a vocabulary of 1 has a constant loss).
_MAX_PRODUCT = 2 * MAX_NUMEL


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    bias: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> torch.Tensor:
    """torch's unfused reading of the op: ``F.cross_entropy(F.linear(hidden, weight, bias), target,
    ignore_index=ignore_index, reduction=reduction)``; hidden (N, H), weight (V, H), bias (V,) or
    None, target (N,) int64."""
    return F.cross_entropy(F.linear(hidden, weight, bias), target, ignore_index=ignore_index, reduction=reduction)


@st.composite
def _geometry(draw) -> tuple[int, int, int]:
    """(N, H, V): rows crossing block multiples (17 to 257) and now and then past 2048, hidden
    sizes and vocabularies that are not powers of two (17, 127, 1000, 2049); each of the three
    products N V, V H and N H stays within _MAX_PRODUCT (the largest side wins, the others
    shrink)."""
    # rows: 1 in 16 past 2048, 5 in 16 just past a block multiple; vocabularies: 1 in 4 past 12
    # (the rare cases sit mid-range, where Hypothesis does not favour them as it favours the ends)
    kind = draw(st.integers(0, 15))
    if kind == 8:
        n = draw(st.sampled_from(gs.LARGE_SIZES))
    elif 9 <= kind <= 13:
        n = draw(st.sampled_from((17, 33, 65, 129, 257)))
    else:
        n = draw(st.integers(1, 8))
    h = draw(gs.sides(min_side=1, max_side=32, large=False))
    v = draw(st.sampled_from((17, 1000, 2049))) if draw(st.integers(0, 7)) in (3, 4) else draw(st.integers(1, 12))
    sides = [n, h, v]
    order = sorted(range(3), key=lambda i: -sides[i])
    for i in order[1:]:  # shrink the two smaller sides until every pair fits
        while sides[i] > 1 and max(sides[a] * sides[b] for a, b in ((0, 1), (1, 2), (0, 2))) > _MAX_PRODUCT:
            sides[i] = max(1, sides[i] // 2)
    return tuple(sides)


@st.composite
def _inputs(draw, dtype: torch.dtype):
    """(hidden, weight, target, bias, ignore_index, reduction); logits of order 1 to 3 (weight
    scaled by 1/sqrt(H)), ignore_index outside the classes and present in about a fifth of the
    targets (sometimes in all)."""
    n, h, v = draw(_geometry())
    hidden = draw(gs.tensors((n, h), elements=st.sampled_from(("normal", "normal", "uniform"))))
    weight = draw(gs.tensors((v, h), scale=draw(st.sampled_from((1.0 / math.sqrt(h), 1.0)))))
    bias = draw(st.one_of(st.none(), gs.tensors((v,), expand=False)))
    ignore_index = draw(st.sampled_from((-100, -100, -1, v)))
    target = draw(gs.class_targets((n,), v, ignore_index=ignore_index, p_ignore=0.2))
    return hidden, weight, target, bias, ignore_index, draw(REDUCTIONS)


def _depth(hidden, weight, target, bias, ignore_index, reduction) -> int:
    """The chain's sums one after the other: the logits' dot over H, each row's log-sum-exp over
    V, and the rows' sum over N for 'sum' and 'mean' (the backward's dweight sums over N and
    dhidden over V)."""
    n, h = hidden.shape
    return h + weight.shape[0] + n


def _kinks(hidden, weight, target, bias, ignore_index, reduction) -> float:
    """Smooth, with softmax's unit-scale curvature (the step is capped as there); 'mean' over no
    counted target is NaN (0/0, as torch): no finite differences there."""
    return 0.0 if reduction == "mean" and not np.any(np.asarray(target) != ignore_index) else UNIT_SCALE_DISTANCE


def _vjp_terms(hidden, weight, target, bias, ignore_index, reduction, g):
    """Sums of |terms| of the VJP, for terms stored at the dtype: every chunked implementation holds
    dZ = (softmax(Z) - onehot) * w in the input dtype, and torch's composition keeps the rounded
    log-softmax output its backward exponentiates. dZ's terms: p (rounded with Z and the row's
    log-sum-exp, a relative error of u (1 + |Z| + |lse|)) and the one-hot 1, so
    |dZ| <= (p (1 + |Z| + |lse|) + y) |w| with w the row's weight (g / count, g, or g[n]); then
    dhidden = dZ W, dweight = dZ^T hidden and dbias = the column sums of dZ on absolute values.
    (Independent probes of the inputs average out over equal rows, where rounding adds up: torch's
    bf16 composition on 2049 equal rows was 1.09x over the probed bound, measured.)"""
    hidden = np.asarray(hidden, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    target = np.asarray(target)
    z = reference.linear_cross_entropy._logits(hidden, weight, bias)
    n = z.shape[0]
    counted = target != ignore_index
    p = reference.softmax.softmax(z, 1)
    lse = reference.logsumexp.logsumexp(z, 1)
    y = np.zeros_like(z)
    rows = np.nonzero(counted)[0]
    y[rows, target[rows]] = 1.0
    g = np.abs(np.asarray(g, dtype=np.float64))
    if reduction == "none":
        w = g.reshape(n)
    elif reduction == "sum":
        w = np.full(n, float(g))
    else:
        w = np.full(n, float(g) / max(int(counted.sum()), 1))
    d_mag = (p * (1 + np.abs(z) + np.abs(lse)[:, None]) + y) * np.where(counted, w, 0.0)[:, None]
    d_bias = None if bias is None else d_mag.sum(axis=0)
    return d_mag @ np.abs(weight), d_mag.T @ np.abs(hidden), None, d_bias, None, None


SPECS = [
    OpSpec(
        name="linear_cross_entropy",
        reference=reference.linear_cross_entropy.linear_cross_entropy,
        reference_vjp=reference.linear_cross_entropy.linear_cross_entropy_vjp,
        inputs=_inputs,
        depth=_depth,
        ulps=4,  # exp and log
        kinks=_kinks,
        vjp_terms=_vjp_terms,
        torch_fn=linear_cross_entropy,
        doc="cross_entropy(hidden @ weight^T + bias, target) with ignore_index and the three reductions "
        "(the fused LLM head); hidden, weight and bias get gradients",
        tags=("dot",),
    ),
]
