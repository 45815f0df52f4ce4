"""Catalog entries for matmul, linear and linear_relu."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import strategies as st

import reference.matmul
from gradcheck import strategies as gs
from gradcheck import tolerances
from gradcheck.ops import OpSpec

__all__ = ["SPECS"]

#: Value distributions for dot-product operands: small integers make every sum exact.
_DOT_ELEMENTS = st.sampled_from(("normal", "normal", "uniform", "integers"))
#: Output elements (batch * M * N) at most: matmul_shapes bounds M K and K N, not M N (two sides of
#: 1025 would make a million-element product, minutes under the interpreter).
_MAX_OUTPUT = 1 << 12


def _bounded(shapes: tuple[tuple[int, ...], tuple[int, ...]]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Halve the larger of M and N until the product fits ``_MAX_OUTPUT`` (K, the awkward reduction
    length, is kept)."""
    a, b = shapes
    *batch_a, m, k = a
    *batch_b, _, n = b
    batch = max([1, *batch_a, *batch_b])
    while batch * m * n > _MAX_OUTPUT:
        if m >= n:
            m = max(1, m // 2)
        else:
            n = max(1, n // 2)
    return (*batch_a, m, k), (*batch_b, k, n)


# ---------------------------------------------------------------------------------------------
# matmul
# ---------------------------------------------------------------------------------------------


@st.composite
def _matmul_inputs(draw, dtype: torch.dtype):
    """(M, K) @ (K, N), batched with a broadcast batch of 1, and now and then a 3-D operand against
    a 2-D one (torch broadcasts the 2-D side along the batch)."""
    a_shape, b_shape = _bounded(draw(gs.matmul_shapes(batch=None, max_side=48, max_k=1000, max_numel=1 << 13)))
    if len(a_shape) == 3 and draw(st.integers(0, 3)) == 0:
        if a_shape[0] == 1:
            a_shape = a_shape[1:]
        elif b_shape[0] == 1:
            b_shape = b_shape[1:]
    a = draw(gs.tensors(a_shape, elements=_DOT_ELEMENTS))
    b = draw(gs.tensors(b_shape, elements=_DOT_ELEMENTS))
    return a, b


def _matmul_depth(a, b) -> int:
    """Forward K; dA sums N (times the batch where A was broadcast), dB sums M (likewise)."""
    m, k = a.shape[-2:]
    n = b.shape[-1]
    batch = max(a.shape[0] if a.ndim == 3 else 1, b.shape[0] if b.ndim == 3 else 1)
    a_batch = a.shape[0] if a.ndim == 3 else 1
    b_batch = b.shape[0] if b.ndim == 3 else 1
    return max(k, n * (batch // a_batch), m * (batch // b_batch), 1)


# ---------------------------------------------------------------------------------------------
# linear, linear_relu
# ---------------------------------------------------------------------------------------------


@st.composite
def _linear_inputs(draw, dtype: torch.dtype):
    """x (..., K) with no, one or two leading dims, weight (N, K), bias (N,) or None."""
    (m, k), (_, n) = _bounded(draw(gs.matmul_shapes(batch=False, max_side=48, max_k=1000, max_numel=1 << 13)))
    lead = draw(st.sampled_from(("rows", "rows", "none", "two")))
    if lead == "none":
        x_shape: tuple[int, ...] = (k,)
    elif lead == "rows":
        x_shape = (m, k)
    else:
        b = draw(st.integers(1, 3))
        x_shape = (b, max(1, m // b), k)
    x = draw(gs.tensors(x_shape, elements=_DOT_ELEMENTS))
    w = draw(gs.tensors((n, k), elements=_DOT_ELEMENTS))
    bias = draw(st.one_of(st.none(), gs.tensors((n,), elements=_DOT_ELEMENTS)))
    return x, w, bias


def _linear_depth(x, w, b) -> int:
    """Forward K; dx sums N; dW and db sum every row of x."""
    rows = math.prod(x.shape[:-1])
    return max(w.shape[1], w.shape[0], rows, 1)


def _linear_relu_kinks(x, w, b) -> float:
    """relu bends where an output is 0: |y| over how fast a max-norm step in x, w and b moves y
    (at most sum|w_j| + sum|x_i| + 1 per unit step)."""
    y = reference.matmul.linear(x, w, b)
    if y.size == 0:
        return math.inf
    speed = np.abs(x).sum(axis=-1)[..., None] + np.abs(w).sum(axis=1) + 1.0
    return float(np.min(np.abs(y) / speed))


def _clear_of_kinks(drawn, dtype: torch.dtype) -> bool:
    """No pre-activation within the forward's rounding of 0, where the kernel's relu mask may
    rightly differ from the float64 reference's (an FMA in the dot leaves 2^-22 where the exact
    sum is 0). The bound counts only products that round at the accumulation dtype, so integer
    draws, whose sums are exact, keep their exact zeros."""
    x, w, b = (None if t is None else t.to(dtype).double() for t in drawn)
    if x.numel() == 0 or w.numel() == 0:
        return True
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    prod = x.unsqueeze(-2) * w  # (..., N, K), exact in float64 for the narrow dtypes
    if acc == torch.float64:
        inexact = prod != torch.round(prod)  # integer products below 2^53 are exact
    else:
        inexact = prod.to(acc).double() != prod
    rounding = torch.where(inexact, prod.abs(), 0.0).sum(-1)
    y = prod.sum(-1)
    if b is not None:
        rounding = torch.where(rounding > 0, rounding + b.abs(), rounding)
        y = y + b
    u = tolerances.table_row(dtype)[1].u_acc  # the accumulation's roundoff (fp32 for 16-bit inputs)
    if dtype == torch.float32 and torch.get_float32_matmul_precision() != "highest":
        u = tolerances.TABLE["tf32"].u_mul  # TF32 products: operands rounded to 10 mantissa bits
        rounding = prod.abs().sum(-1) + (0 if b is None else b.abs())
    bound = 2 * (x.shape[-1] + 2) * u * rounding
    near = (y.abs() <= bound) & (rounding > 0)
    if dtype == torch.float16:  # the stored output, which the backward's mask reads, flushes to 0
        near |= (y != 0) & (y.abs() < 2.0**-24)
    return not bool(near.any())


def _linear_relu_inputs(dtype: torch.dtype):
    """As for linear, with every pre-activation clear of relu's kink by more than the rounding."""
    return _linear_inputs(dtype).filter(lambda drawn: _clear_of_kinks(drawn, dtype))


def _torch_linear_relu(x, w, b=None):
    return F.relu(F.linear(x, w, b))



SPECS = [
    OpSpec(
        name="matmul",
        reference=reference.matmul.matmul,
        reference_vjp=reference.matmul.matmul_vjp,
        inputs=_matmul_inputs,
        depth=_matmul_depth,
        multilinear=True,
        torch_fn=torch.matmul,
        tags=("dot",),
        doc="2-D and batched 3-D matmul (broadcast batch), tiled tensor-core kernel; dA = g B^T, dB = A^T g",
    ),
    OpSpec(
        name="linear",
        reference=reference.matmul.linear,
        reference_vjp=reference.matmul.linear_vjp,
        inputs=_linear_inputs,
        depth=_linear_depth,
        multilinear=True,
        torch_fn=F.linear,
        tags=("dot",),
        doc="x @ W^T + b for any leading dims; bias added in the epilogue, its gradient fused into dW's",
    ),
    OpSpec(
        name="linear_relu",
        reference=reference.matmul.linear_relu,
        reference_vjp=reference.matmul.linear_relu_vjp,
        inputs=_linear_relu_inputs,
        depth=_linear_depth,
        multilinear=True,  # relu is 1-Lipschitz: the linear part's bound holds for the output
        kinks=_linear_relu_kinks,
        torch_fn=_torch_linear_relu,
        tags=("dot",),
        doc="relu(x @ W^T + b), relu fused into the epilogue, its mask into the backward's operand loads",
    ),
]
