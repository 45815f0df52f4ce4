"""logsumexp over one dim or a tuple of dims, forward and backward in Triton.

The reduced dims are moved last and the input is made contiguous as (rows, K) (a copy unless they
already are last and contiguous). The forward streams each row once with an online max (the sum
of exp rescaled when the max grows); the backward is g * exp(x - lse), elementwise.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from kernels import _runtime as rt
from kernels._library import custom_op
from kernels.elementwise import _exp, _log  # libdevice at fp64 (PRECISE), tl otherwise

__all__ = ["logsumexp"]

_PRECISE = not rt.INTERPRET
#: Elements of one (rows, columns) tile: big under the interpreter (few programs), GPU-sized else.
TILE = 1 << 14 if rt.INTERPRET else 1 << 12
MAX_BLOCK_K = 4096 if rt.INTERPRET else 1024


@triton.jit
def _lse_fwd_kernel(
    x_ptr,  # input (R, K), contiguous
    out_ptr,  # logsumexp (R,), contiguous
    R,  # rows
    K,  # reduced elements per row
    PRECISE: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = rows < R
    acc_t = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    m = tl.full((BLOCK_R,), float("-inf"), acc_t)
    s = tl.zeros((BLOCK_R,), acc_t)
    for k0 in range(0, K, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        mask = row_ok[:, None] & (cols < K)[None, :]
        x = tl.load(x_ptr + rows[:, None] * K + cols[None, :], mask=mask, other=float("-inf")).to(acc_t)
        m_new = tl.maximum(m, tl.max(x, axis=1))
        shift = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row of -inf so far: nothing to shift
        s = s * _exp(m - shift, PRECISE) + tl.sum(_exp(x - shift[:, None], PRECISE), axis=1)
        m = m_new
    shift = tl.where(m == float("-inf"), 0.0, m)
    tl.store(out_ptr + rows, (shift + _log(s, PRECISE)).to(out_ptr.dtype.element_ty), mask=row_ok)


@triton.jit
def _lse_bwd_kernel(
    x_ptr,  # input (R, K), contiguous
    lse_ptr,  # saved logsumexp (R,)
    g_ptr,  # grad_output (R,), contiguous
    dx_ptr,  # grad_input (R, K), contiguous
    R,
    K,
    PRECISE: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1).to(tl.int64) * BLOCK_K + tl.arange(0, BLOCK_K)
    row_ok = rows < R
    mask = row_ok[:, None] & (cols < K)[None, :]
    acc_t = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    lse = tl.load(lse_ptr + rows, mask=row_ok, other=0.0).to(acc_t)
    g = tl.load(g_ptr + rows, mask=row_ok, other=0.0).to(acc_t)
    x = tl.load(x_ptr + rows[:, None] * K + cols[None, :], mask=mask, other=0.0).to(acc_t)
    dx = g[:, None] * _exp(x - lse[:, None], PRECISE)
    tl.store(dx_ptr + rows[:, None] * K + cols[None, :], dx.to(dx_ptr.dtype.element_ty), mask=mask)


def _dims(dim: Sequence[int] | int, ndim: int) -> list[int]:
    dims = [dim] if isinstance(dim, int) else list(dim)
    out = sorted({rt.canonical_dim(d, ndim) for d in dims})
    if len(out) != len(dims):
        raise ValueError(f"dim {tuple(dims)} names a dim twice")
    return out


def _as_rows(x: torch.Tensor, dims: list[int]) -> tuple[torch.Tensor, list[int]]:
    """x as a contiguous (R, K) tensor with the reduced dims last, and the kept dims' sizes."""
    kept = [d for d in range(x.dim()) if d not in dims]
    moved = x.permute(*kept, *dims) if x.dim() else x.reshape(1)
    r = k = 1
    for d in kept:
        r *= x.shape[d]
    for d in dims:
        k *= x.shape[d]
    return moved.contiguous().reshape(r, k), [x.shape[d] for d in kept]


def _blocks(k: int) -> tuple[int, int]:
    block_k = min(rt.next_pow2(max(k, 1)), MAX_BLOCK_K)
    return max(1, TILE // block_k), block_k


@custom_op("logsumexp")
def logsumexp_op(input: torch.Tensor, dim: Sequence[int]) -> torch.Tensor:
    """logsumexp over the sorted, distinct, non-negative ``dim`` (the kept dims' shape, no keepdim)."""
    rows, kept = _as_rows(input, list(dim))
    r, k = rows.shape
    out = rt.empty((r,), dtype=input.dtype, device=input.device)
    if r:
        block_r, block_k = _blocks(k)
        _lse_fwd_kernel[(rt.cdiv(r, block_r),)](rows, out, r, k, PRECISE=_PRECISE, BLOCK_R=block_r, BLOCK_K=block_k)
    return out.reshape(kept)


@logsumexp_op.register_fake
def _(input, dim):
    return input.new_empty([s for d, s in enumerate(input.shape) if d not in dim])


@custom_op("logsumexp_backward")
def logsumexp_backward_op(
    input: torch.Tensor, output: torch.Tensor, grad_output: torch.Tensor, dim: Sequence[int]
) -> torch.Tensor:
    """grad_output * exp(input - output), broadcast over the reduced ``dim``, in a new tensor."""
    dims = list(dim)
    rows, kept = _as_rows(input, dims)
    r, k = rows.shape
    dx = rt.empty((r, k), dtype=input.dtype, device=input.device)
    if r and k:
        block_r, block_k = _blocks(k)
        grid = (rt.cdiv(r, block_r), rt.cdiv(k, block_k))
        lse = output.contiguous().reshape(-1)
        g = grad_output.contiguous().reshape(-1)
        _lse_bwd_kernel[grid](rows, lse, g, dx, r, k, PRECISE=_PRECISE, BLOCK_R=block_r, BLOCK_K=block_k)
    if input.dim() == 0:
        return dx.reshape(())
    kept_dims = [d for d in range(input.dim()) if d not in dims]
    moved = dx.reshape(*kept, *[input.shape[d] for d in dims])
    order = kept_dims + dims
    return moved.permute(*[order.index(d) for d in range(input.dim())]).contiguous()


@logsumexp_backward_op.register_fake
def _(input, output, grad_output, dim):
    return input.new_empty(input.shape)


def _setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(inputs[0], output)
    ctx.dims = inputs[1]


def _autograd_backward(ctx, g: torch.Tensor):
    x, out = ctx.saved_tensors
    return logsumexp_backward_op(x, out, g, ctx.dims), None


logsumexp_op.register_autograd(_autograd_backward, setup_context=_setup_context)


def logsumexp(input: torch.Tensor, dim: int | Sequence[int], keepdim: bool = False) -> torch.Tensor:
    """``torch.logsumexp(input, dim, keepdim)``: log(sum(exp(input))) over ``dim`` (an int or a
    tuple of ints); -inf over no elements or all -inf."""
    rt.check_float(input, "input")
    dims = _dims(dim, input.dim()) if input.dim() else []
    out = logsumexp_op(input, dims)
    if keepdim and input.dim():
        for d in dims:
            out = out.unsqueeze(d)
    return out
