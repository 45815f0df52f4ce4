"""mse_loss in Triton: (input - target)^2 elementwise or summed deterministically; forward and backward."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels import _runtime as rt
from kernels._library import custom_op
from kernels._reductions import REDUCTIONS, check_reduction, legacy_reduction
from kernels._strided import flat_strides, strided_offsets
from kernels._sums import acc_dtype, finish_sum
from kernels.softmax import TILE

__all__ = ["mse_loss", "mse_loss_backward_op", "mse_loss_op"]

# Elements per program: 16 KiB of fp32 in flight per program.
BLOCK = TILE


@triton.jit
def _mse_fwd_kernel(
    x_ptr,  # input, any layout
    y_ptr,  # target, any layout
    out_ptr,  # (x - y)^2, contiguous (REDUCE == 0), or per-program partial sums
    n,  # number of elements
    S1,
    S2,
    S3,  # collapsed sizes (S0 implied by n)
    xs0,
    xs1,
    xs2,
    xs3,  # input strides
    ys0,
    ys1,
    ys2,
    ys3,  # target strides
    REDUCE: tl.constexpr,  # 0: elementwise; else partial sums
    RANK: tl.constexpr,  # collapsed dims the offsets use: 1 (offset = index * stride) or 4
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    acc_ty = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    x = tl.load(x_ptr + strided_offsets(offs, S1, S2, S3, xs0, xs1, xs2, xs3, RANK), mask=mask, other=0.0).to(acc_ty)
    y = tl.load(y_ptr + strided_offsets(offs, S1, S2, S3, ys0, ys1, ys2, ys3, RANK), mask=mask, other=0.0).to(acc_ty)
    d = x - y
    if REDUCE == 0:
        tl.store(out_ptr + offs, (d * d).to(out_ptr.dtype.element_ty), mask=mask)
    else:
        tl.store(out_ptr + pid, tl.sum(d * d, axis=0))


@triton.jit
def _mse_bwd_kernel(
    x_ptr,
    y_ptr,  # input and target, any layout
    g_ptr,  # grad_output: elementwise (any layout) or one value (G_SCALAR)
    dx_ptr,
    dy_ptr,  # gradients, contiguous (NEED_X / NEED_Y)
    n,
    den,  # element count for 'mean', else 1: d/dx = 2 (x - y) g / den
    S1,
    S2,
    S3,
    xs0,
    xs1,
    xs2,
    xs3,
    ys0,
    ys1,
    ys2,
    ys3,
    gs0,
    gs1,
    gs2,
    gs3,
    G_SCALAR: tl.constexpr,
    NEED_X: tl.constexpr,
    NEED_Y: tl.constexpr,
    RANK: tl.constexpr,  # collapsed dims the offsets use: 1 (offset = index * stride) or 4
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    acc_ty = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    x = tl.load(x_ptr + strided_offsets(offs, S1, S2, S3, xs0, xs1, xs2, xs3, RANK), mask=mask, other=0.0).to(acc_ty)
    y = tl.load(y_ptr + strided_offsets(offs, S1, S2, S3, ys0, ys1, ys2, ys3, RANK), mask=mask, other=0.0).to(acc_ty)
    if G_SCALAR:
        g = tl.load(g_ptr).to(acc_ty)
    else:
        g_offs = strided_offsets(offs, S1, S2, S3, gs0, gs1, gs2, gs3, RANK)
        g = tl.load(g_ptr + g_offs, mask=mask, other=0.0).to(acc_ty)
    norm = 2.0 / tl.cast(den, acc_ty)  # as torch: norm * (x - y) * g
    dx = norm * (x - y) * g
    if NEED_X:
        tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)
    if NEED_Y:
        tl.store(dy_ptr + offs, (-dx).to(dy_ptr.dtype.element_ty), mask=mask)


def _check_mse(x, y, reduction) -> None:
    rt.check_float(x, "input")
    rt.check_float(y, "target")
    rt.check_same_dtype(input=x, target=y)
    rt.check_device(x, y)
    if x.shape != y.shape:
        raise ValueError(
            f"mse_loss input {tuple(x.shape)} and target {tuple(y.shape)} differ in shape "
            "(broadcasting them is not supported: torch warns it is likely a mistake)"
        )
    check_reduction(reduction)


# ---------------------------------------------------------------------------------------------
# Custom ops (torch.ops.blitz.mse_loss, mse_loss_backward) and the public API
# ---------------------------------------------------------------------------------------------


@custom_op("mse_loss")
def mse_loss_op(input: torch.Tensor, target: torch.Tensor, reduction: str) -> torch.Tensor:
    """(input - target)^2 elementwise ('none', contiguous) or summed deterministically ('sum',
    'mean'); input and target of one shape and dtype (``mse_loss`` checks)."""
    x, y = input, target
    reduce = REDUCTIONS[reduction]
    n = x.numel()
    sizes, (xs, ys), _, (x_l, y_l) = flat_strides(x, y)  # copies only past four uncollapsible dims
    flat = sizes[0] * sizes[1] * sizes[2] == 1
    n_programs = rt.cdiv(n, BLOCK)
    if reduce == 0:
        out = rt.empty_like(x)
    else:
        out = rt.empty((), dtype=x.dtype, device=x.device)
        partials = rt.empty((n_programs,), dtype=acc_dtype(x.dtype), device=x.device)
    if n_programs:
        _mse_fwd_kernel[(n_programs,)](
            x_l,
            y_l,
            out if reduce == 0 else partials,
            n,
            *sizes[1:],
            *xs,
            *ys,
            REDUCE=reduce,
            RANK=1 if flat else 4,
            BLOCK=BLOCK,
        )
    if reduce:
        finish_sum(partials, out.view(1), den_int=n if reduce == 2 else 1)
    return out


@mse_loss_op.register_fake
def _(input, target, reduction):
    return input.new_empty(input.shape if reduction == "none" else ())


@custom_op("mse_loss_backward")
def mse_loss_backward_op(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    target: torch.Tensor,
    reduction: str,
    need_input: bool,
    need_target: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of mse_loss for input and target (2 (x - y) g / den, and its negation); an
    unneeded one is an empty (0,) tensor."""
    x, y, g = input, target, grad_output
    reduce = REDUCTIONS[reduction]
    dx = rt.empty_like(x) if need_input else rt.empty((0,), dtype=x.dtype, device=x.device)
    dy = rt.empty_like(y) if need_target else rt.empty((0,), dtype=y.dtype, device=y.device)
    n = x.numel()
    if n and (need_input or need_target):
        g_scalar = reduce != 0
        sizes, strides, _, views = flat_strides(x, y, *([] if g_scalar else [g]))
        gs = [0, 0, 0, 0] if g_scalar else strides[2]
        _mse_bwd_kernel[(rt.cdiv(n, BLOCK),)](
            views[0],
            views[1],
            g if g_scalar else views[2],
            dx if need_input else x,
            dy if need_target else x,
            n,
            n if reduce == 2 else 1,
            *sizes[1:],
            *strides[0],
            *strides[1],
            *gs,
            G_SCALAR=g_scalar,
            NEED_X=need_input,
            NEED_Y=need_target,
            RANK=1 if sizes[0] * sizes[1] * sizes[2] == 1 else 4,
            BLOCK=BLOCK,
        )
    return dx, dy


@mse_loss_backward_op.register_fake
def _(grad_output, input, target, reduction, need_input, need_target):
    return input.new_empty(input.shape if need_input else (0,)), target.new_empty(target.shape if need_target else (0,))


def _setup_context(ctx, inputs, output) -> None:
    x, y, reduction = inputs
    ctx.save_for_backward(x, y)
    ctx.reduction = reduction


def _mse_backward(ctx, g: torch.Tensor):
    x, y = ctx.saved_tensors
    need_x, need_y = ctx.needs_input_grad[:2]
    dx, dy = mse_loss_backward_op(g, x, y, ctx.reduction, need_x, need_y)
    return (dx if need_x else None), (dy if need_y else None), None


mse_loss_op.register_autograd(_mse_backward, setup_context=_setup_context)


def mse_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """``torch.nn.functional.mse_loss`` in Triton: (input - target)^2, reduced by ``reduction``;
    both arguments get gradients. ``weight`` (torch >= 2.13) is not supported."""
    if weight is not None:
        raise NotImplementedError("mse_loss(weight=...) is not supported")
    reduction = legacy_reduction(size_average, reduce, reduction)
    _check_mse(input, target, reduction)
    return mse_loss_op(input, target, reduction)
