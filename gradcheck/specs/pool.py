"""Catalog entry for max_pool2d."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import strategies as st

import reference.pool
from gradcheck import strategies as gs
from gradcheck.ops import OpSpec
from gradcheck.specs._common import as_arg

__all__ = ["SPECS"]


@st.composite
def _pool_inputs(draw, dtype: torch.dtype):
    """Separated values (no ties: finite differences hold) most of the time; sometimes small
    integers (ties everywhere: which element wins is then checked against the reference exactly)
    with -inf and inf sprinkled in. (NaN inputs, torch's NaN rule, are tested against torch in
    tests/kernels/test_pool.py: the engine's finite-difference step is NaN for them.)"""
    geo = draw(gs.pool2d_geometries())
    kind = draw(st.sampled_from(("separated", "separated", "separated", "ties")))
    if kind == "separated":
        x = draw(gs.tensors(geo.input_shape, elements="separated"))
    else:
        x = draw(gs.tensors(geo.input_shape, elements="integers", expand=False)).clone()
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        flat = x.view(-1)
        specials = draw(st.sampled_from((0.0, 0.05, 0.3)))
        hit = torch.from_numpy(rng.random(flat.numel()) < specials)
        flat[hit] = torch.from_numpy(rng.choice([-math.inf, math.inf], int(hit.sum())))
    stride: object = as_arg(geo.stride, draw)
    if geo.stride == geo.kernel and draw(st.booleans()):
        stride = None  # torch's default: the kernel size
    return (
        x,
        as_arg(geo.kernel, draw),
        stride,
        as_arg(geo.padding, draw),
        as_arg(geo.dilation, draw),
        geo.ceil_mode,
        draw(st.booleans()),
    )


def _pool_kinks(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices) -> float:
    """Half the smallest gap between a window's largest and second-largest in-bounds value: a
    perturbation that small cannot change a winner. 0 when a window ties or holds inf (finite
    differences are meaningless there), or has no in-bounds element (its output is -inf)."""
    if not np.all(np.isfinite(x)):
        return 0.0
    xb = x[None] if x.ndim == 3 else x
    vals, valid, *_ = reference.pool.pool_windows(xb, kernel_size, stride, padding, dilation, ceil_mode)
    if vals.size == 0:
        return math.inf
    if not np.all(valid.any(axis=-1)):
        return 0.0
    if vals.shape[-1] < 2:
        return math.inf
    ranked = -np.sort(-np.where(valid, vals, -np.inf), axis=-1)
    two = np.isfinite(ranked[..., 1])  # windows with a second in-bounds element
    if not two.any():
        return math.inf
    return float(np.min(ranked[..., 0][two] - ranked[..., 1][two])) / 2


def _pool_depth(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices) -> int:
    """Most windows one input element is the winner of: its gradient sums that many terms."""
    k = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
    s = k if stride is None else (stride, stride) if isinstance(stride, int) else tuple(stride)
    d = (dilation, dilation) if isinstance(dilation, int) else tuple(dilation)
    count = 1
    for kk, ss, dd in zip(k, s, d, strict=True):
        # taps i whose offset i * d lands on the same residue modulo the stride share an element
        count *= max(sum(1 for i in range(kk) if (r - i * dd) % ss == 0) for r in range(ss))
    return count


SPECS = [
    OpSpec(
        name="max_pool2d",
        reference=reference.pool.max_pool2d,
        reference_vjp=reference.pool.max_pool2d_vjp,
        inputs=_pool_inputs,
        depth=_pool_depth,
        kinks=_pool_kinks,
        torch_fn=F.max_pool2d,
        # torch 2.13's CPU backward writes past grad_input for a window lying entirely in padding
        # (tests/gradcheck/test_torch_ops.py): never run it in-process as a baseline
        torch_baseline=False,
        doc="2-D max pooling with torch's tie and NaN rules; the backward is a gather over windows",
    ),
]
