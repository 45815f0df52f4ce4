"""Catalog entries for the reductions: sum, mean, amax, amin, max and min."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import strategies as st

import reference.reduction
from gradcheck import strategies as gs
from gradcheck.ops import OpSpec
from gradcheck.specs._common import MAX_NUMEL, VALUES

__all__ = ["SPECS"]


@st.composite
def _dims(draw, ndim: int, *, none: bool = True):
    """torch's dim argument: an int (sometimes negative), a tuple of distinct dims, () or None."""
    if ndim == 0:
        return draw(st.sampled_from((0, -1, (), None) if none else (0, -1, ())))
    kinds = ["int", "int", "tuple", "all"] + (["none"] if none else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "none":
        return None
    if kind == "all":
        return ()
    if kind == "int":
        return draw(st.integers(-ndim, ndim - 1))
    chosen = draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
    return tuple(d - ndim if draw(st.booleans()) else d for d in chosen)


@st.composite
def _sum_inputs(draw, dtype: torch.dtype):
    shape = draw(gs.shapes(min_dims=0, max_dims=4, max_numel=MAX_NUMEL))
    x = draw(gs.tensors(shape, elements=VALUES))
    return x, draw(_dims(len(shape))), draw(st.booleans())


def _reduction_length(x, dim, keepdim) -> int:
    """K: the number of elements summed into each output (the forward's accumulation)."""
    return max(math.prod(x.shape[d] for d in reference.reduction.axes(dim, x.ndim)), 1)


@st.composite
def _extreme_inputs(draw, dtype: torch.dtype):
    """No empty reduction (torch raises there); values mostly distinct ("separated"), sometimes
    small integers with ties (the gradient is split among them: the reference checks it, finite
    differences are skipped at a tie)."""
    shape = draw(gs.shapes(min_dims=0, max_dims=4, min_side=1, max_numel=MAX_NUMEL))
    x = draw(gs.tensors(shape, elements=st.sampled_from(("separated", "separated", "separated", "integers"))))
    return x, draw(_dims(len(shape), none=False)), draw(st.booleans())


@st.composite
def _arg_extreme_inputs(draw, dtype: torch.dtype):
    shape = draw(gs.shapes(min_dims=0, max_dims=4, min_side=1, max_numel=MAX_NUMEL))
    x = draw(gs.tensors(shape, elements=st.sampled_from(("separated", "separated", "separated", "integers"))))
    ndim = len(shape)
    dim = draw(st.integers(-max(ndim, 1), max(ndim - 1, 0)))
    return x, dim, draw(st.booleans())


def _gap(x: np.ndarray, ax: tuple[int, ...]) -> float:
    """Half the smallest gap between a slice's largest element and the next (distinct or tied)
    one: how far the inputs may move before the maximum changes hands."""
    if x.size == 0:
        return math.inf
    moved = np.moveaxis(x, ax, tuple(range(x.ndim - len(ax), x.ndim))) if ax else x[..., None]
    rows = moved.reshape(-1, max(math.prod(x.shape[d] for d in ax), 1)) if ax else moved.reshape(-1, 1)
    if rows.shape[1] < 2:
        return math.inf
    top = -np.partition(-rows, 1, axis=1)[:, :2]
    return float(np.min(top[:, 0] - top[:, 1])) / 2


def _extreme_kinks(x, dim, keepdim) -> float:
    """amax/amin change hands (or split among ties) where two top elements meet."""
    ax = reference.reduction.axes(dim, x.ndim)
    return min(_gap(x, ax), _gap(-x, ax))


def _arg_extreme_kinks(x, dim, keepdim) -> float:
    ax = (dim % x.ndim,) if x.ndim else ()
    return min(_gap(x, ax), _gap(-x, ax))



def _reduction_spec(name: str, inputs, doc: str, **extra) -> OpSpec:
    return OpSpec(
        name=name,
        reference=getattr(reference.reduction, name),
        reference_vjp=getattr(reference.reduction, f"{name}_vjp"),
        inputs=inputs,
        torch_fn=getattr(torch, name),
        doc=doc,
        **extra,
    )


SPECS = [
    _reduction_spec("sum", _sum_inputs, "sum over dim (int, tuple, None or ()), keepdim; fp32 accumulation; "
                    "grad: g broadcast back (a stride-0 view)", depth=_reduction_length, multilinear=True),
    _reduction_spec("mean", _sum_inputs, "mean over dim, keepdim; fp32 accumulation, NaN for no elements; "
                    "grad: g/K broadcast back", depth=_reduction_length, multilinear=True),
    _reduction_spec("amax", _extreme_inputs, "largest element over dim (() = all), NaN-propagating; "
                    "grad split evenly among ties, as torch", kinks=_extreme_kinks),
    _reduction_spec("amin", _extreme_inputs, "smallest element over dim; grad split evenly among ties",
                    kinks=_extreme_kinks),
    _reduction_spec("max", _arg_extreme_inputs, "(values, indices) along dim: the first maximum, or the first "
                    "NaN; grad to the indexed element", kinks=_arg_extreme_kinks),
    _reduction_spec("min", _arg_extreme_inputs, "(values, indices) along dim: the first minimum, or the first "
                    "NaN; grad to the indexed element", kinks=_arg_extreme_kinks),
]
