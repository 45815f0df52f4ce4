"""Catalog entries for layer_norm, rms_norm and group_norm (torch.nn.functional's positional order)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import strategies as st

import reference.norms
from gradcheck import strategies as gs
from gradcheck.ops import OpSpec
from gradcheck.specs._common import MAX_NUMEL

__all__ = ["SPECS"]

#: Row counts past the usual block sizes (16 to 256) by one: a dW partial-sum buffer sized with
#: floor instead of ceil drops the last, partial block of rows there.
BLOCK_TAILS = (17, 33, 65, 129, 257)
#: eps as models use it (1e-5, 1e-6), and a large one (the gradient is then far from x's scale).
EPS = st.sampled_from((1e-5, 1e-5, 1e-6, 1e-2))
#: A mean offset far above the rows' spread (300x) now and then: a one-pass variance
#: (E[x^2] - E[x]^2) in fp32 cancels there, and so does x - mean.
OFFSETS = st.sampled_from((0.0, 0.0, 0.0, 0.0, 0.0, 300.0, -300.0))
#: Values: normal mostly; small integers now and then (exact sums, rows that may be constant).
NORM_VALUES = st.sampled_from(("normal", "normal", "normal", "uniform", "integers"))


@st.composite
def _rows(draw) -> tuple[int, int]:
    """(rows, hidden): hidden mostly small (1 now and then), sometimes awkward (17, 127, 1000 ...:
    not a power of two, so a tile has padded lanes) or past 2048 (2049, 4097: with few rows);
    rows crossing block multiples (17 ... 257), and now and then past 2048 with a narrow hidden
    size. The element count stays within MAX_NUMEL."""
    kind = draw(st.sampled_from(("rows", "rows", "rows", "rows", "rows", "one", "big_batch")))
    if kind == "big_batch":
        return draw(st.sampled_from(gs.LARGE_SIZES)), draw(st.integers(1, 2))
    d = 1 if kind == "one" else draw(gs.sides(min_side=1, max_side=48, awkward=True, large=True))
    cap = max(1, MAX_NUMEL // d)
    tails = [r for r in BLOCK_TAILS if r <= cap]
    n = draw(st.one_of(st.integers(1, min(cap, 8)), *([st.sampled_from(tails)] if tails else [])))
    return n, d


@st.composite
def _norm_input(draw, *, two_dims: bool = True) -> tuple[torch.Tensor, tuple[int, ...]]:
    """(x, normalized_shape): x of shape (*lead, *normalized_shape), 0 to 2 leading dims;
    normalized_shape the hidden size, or (now and then, when it factors) two dims."""
    n, d = draw(_rows())
    normalized: tuple[int, ...] = (d,)
    if two_dims and d > 1 and draw(st.integers(0, 5)) == 0:
        f = draw(st.sampled_from([f for f in (2, 3, 5, 7, d) if d % f == 0]))
        normalized = (f, d // f)
    if n == 1:
        lead: tuple[int, ...] = draw(st.sampled_from([(), (1,)]))
    elif draw(st.booleans()):
        lead = (n,)
    else:
        first = draw(st.sampled_from([f for f in (1, 2, 3) if n % f == 0]))
        lead = (first, n // first)
    x = draw(gs.tensors((*lead, *normalized), elements=NORM_VALUES))
    offset = draw(OFFSETS)
    return (x + offset if offset else x), normalized


def _param(draw, shape: tuple[int, ...], optional: bool) -> torch.Tensor | None:
    """A weight or bias of ``shape`` (the engine lays it out: sliced, transposed), or None."""
    if optional and draw(st.integers(0, 3)) == 0:
        return None
    return draw(gs.tensors(shape, expand=False))


@st.composite
def _layer_norm_inputs(draw, dtype: torch.dtype):
    x, normalized = draw(_norm_input())
    weight = _param(draw, normalized, optional=True)
    bias = _param(draw, normalized, optional=True)
    return x, normalized, weight, bias, draw(EPS)


@st.composite
def _rms_norm_inputs(draw, dtype: torch.dtype):
    """eps is always given: torch's default (None) is the input dtype's machine epsilon, which the
    float64 reference cannot know."""
    x, normalized = draw(_norm_input())
    weight = _param(draw, normalized, optional=True)
    return x, normalized, weight, draw(EPS)


def _row_count(x, normalized_shape) -> tuple[int, int]:
    d = math.prod(normalized_shape)
    return (x.size // d if d else 0), d


def _norm_depth(x, normalized_shape, *rest) -> int:
    """The row sums (mean, variance, the backward's two dot products) and, for dweight and dbias,
    the sum over rows."""
    n, d = _row_count(x, normalized_shape)
    return max(n, d, 1)


def _curvature_distance(rows: np.ndarray, eps: float, *, centred: bool) -> float:
    """A norm bends on the scale of its rows' spread sqrt(var + eps) (RMS: sqrt(mean(x^2) + eps)),
    whatever the mean offset: report a "distance" of 4e-3 of the smallest, so the engine's
    finite-difference step (a quarter of it) stays at 1e-3 of the spread."""
    if rows.size == 0:
        return math.inf
    centre = rows.mean(axis=1, keepdims=True) if centred else 0.0
    spread = np.sqrt(((rows - centre) ** 2).mean(axis=1) + eps)
    return 4e-3 * float(spread.min())


def _layer_norm_kinks(x, normalized_shape, weight, bias, eps) -> float:
    n, d = _row_count(x, normalized_shape)
    return _curvature_distance(np.asarray(x).reshape(n, d), eps, centred=True)


def _rms_norm_kinks(x, normalized_shape, weight, eps) -> float:
    n, d = _row_count(x, normalized_shape)
    return _curvature_distance(np.asarray(x).reshape(n, d), eps, centred=False)


# ---------------------------------------------------------------------------------------------
# group_norm
# ---------------------------------------------------------------------------------------------


@st.composite
def _group_norm_inputs(draw, dtype: torch.dtype):
    """(N, C, *spatial) with 0 to 2 spatial dims, C = groups * channels per group; N crossing block
    multiples (and now and then past 2048, with one small group), a group's length (channels per
    group times positions) sometimes awkward or past 2048. weight and bias: both, neither, or the
    weight alone; a bias without a weight is left out (torch 2.13's CPU backward raises there:
    tests/kernels/test_norms.py shows it)."""
    n = draw(gs.sides(min_side=1, max_side=6, awkward=True, large=True))
    groups = draw(st.integers(1, 4))
    per_group = draw(st.one_of(st.integers(1, 3), st.sampled_from((5, 17))))
    spatial = tuple(draw(st.lists(st.integers(1, 5), min_size=0, max_size=2)))
    if spatial and draw(st.integers(0, 5)) == 0:
        spatial = (draw(st.sampled_from((33, 65, 2049))), *spatial[1:])
    # keep within the element budget: fewer samples first, then a smaller group
    while n * groups * per_group * math.prod(spatial) > MAX_NUMEL and n > 1:
        n = max(1, n // 2)
    if n * groups * per_group * math.prod(spatial) > MAX_NUMEL:
        groups, per_group = 1, 1
        spatial = tuple(min(s, MAX_NUMEL // max(n, 1)) for s in spatial[:1])
    if n * per_group * math.prod(spatial) == 1:
        n = 2  # torch refuses groups of one value each ("Expected more than 1 value per channel when training")
    x = draw(gs.tensors((n, groups * per_group, *spatial), elements=NORM_VALUES))
    offset = draw(OFFSETS)
    x = x + offset if offset else x
    affine = draw(st.sampled_from(("both", "both", "neither", "weight")))
    c = groups * per_group
    weight = draw(gs.tensors((c,), expand=False)) if affine != "neither" else None
    bias = draw(gs.tensors((c,), expand=False)) if affine == "both" else None
    return x, groups, weight, bias, draw(EPS)


def _group_norm_depth(x, num_groups, weight, bias, eps) -> int:
    """A group's length (its sums) and, for dweight and dbias, the sum over samples and positions."""
    n, c = x.shape[0], x.shape[1]
    positions = math.prod(x.shape[2:])
    return max(c // num_groups * positions, n * positions, 1)


def _group_norm_kinks(x, num_groups, weight, bias, eps) -> float:
    x = np.asarray(x)
    return _curvature_distance(x.reshape(x.shape[0] * num_groups, -1) if x.size else x, eps, centred=True)


SPECS = [
    OpSpec(
        name="layer_norm",
        reference=reference.norms.layer_norm,
        reference_vjp=reference.norms.layer_norm_vjp,
        inputs=_layer_norm_inputs,
        depth=_norm_depth,
        ulps=4,  # a square root and a division
        kinks=_layer_norm_kinks,
        torch_fn=F.layer_norm,
        doc="layer_norm over the trailing dims, weight and bias optional; dweight and dbias reduced over rows",
        tags=("norm",),
    ),
    OpSpec(
        name="rms_norm",
        reference=reference.norms.rms_norm,
        reference_vjp=reference.norms.rms_norm_vjp,
        inputs=_rms_norm_inputs,
        depth=_norm_depth,
        ulps=4,
        kinks=_rms_norm_kinks,
        torch_fn=F.rms_norm,
        doc="rms_norm over the trailing dims, weight optional, eps given; dweight reduced over rows",
        tags=("norm",),
    ),
    OpSpec(
        name="group_norm",
        reference=reference.norms.group_norm,
        reference_vjp=reference.norms.group_norm_vjp,
        inputs=_group_norm_inputs,
        depth=_group_norm_depth,
        ulps=4,
        kinks=_group_norm_kinks,
        torch_fn=F.group_norm,
        doc="group_norm of (N, C, *) over channel groups, per-channel weight and bias",
        tags=("norm",),
    ),
]
