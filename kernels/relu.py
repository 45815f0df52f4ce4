"""relu, forward and backward in Triton, for tensors of any layout."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels import _runtime as rt
from kernels._library import custom_op
from kernels._strided import flat_strides, strided_offsets

__all__ = ["relu", "relu_backward_op", "relu_op"]

BLOCK = 1024  # elements per program: 4 KiB of fp32 in flight per program is enough to stream


@triton.jit
def _relu_fwd_kernel(
    x_ptr,  # input, any layout described by (S*, xs*)
    y_ptr,  # output, contiguous
    n,  # number of elements
    S1,
    S2,
    S3,  # collapsed sizes (S0 is implied by n)
    xs0,
    xs1,
    xs2,
    xs3,  # input strides, in elements
    CONTIGUOUS: tl.constexpr,  # input is contiguous: skip the index arithmetic
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    if CONTIGUOUS:
        x_offs = offs
    else:
        x_offs = strided_offsets(offs, S1, S2, S3, xs0, xs1, xs2, xs3, 4)
    x = tl.load(x_ptr + x_offs, mask=mask).to(tl.float32 if x_ptr.dtype.element_ty != tl.float64 else tl.float64)
    y = tl.where(x < 0, 0.0, x)  # NaN stays NaN, as in torch
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _relu_bwd_kernel(
    y_ptr,  # saved output, contiguous
    g_ptr,  # grad_output, any layout described by (S*, gs*)
    dx_ptr,  # grad_input, contiguous
    n,
    S1,
    S2,
    S3,
    gs0,
    gs1,
    gs2,
    gs3,  # grad_output strides (0 where it was expanded)
    CONTIGUOUS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    if CONTIGUOUS:
        g_offs = offs
    else:
        g_offs = strided_offsets(offs, S1, S2, S3, gs0, gs1, gs2, gs3, 4)
    acc_t = tl.float32 if g_ptr.dtype.element_ty != tl.float64 else tl.float64
    y = tl.load(y_ptr + offs, mask=mask).to(acc_t)
    g = tl.load(g_ptr + g_offs, mask=mask).to(acc_t)
    dx = tl.where(y > 0, g, 0.0)  # torch's rule: the gradient at 0 is 0
    tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)


def _forward(x: torch.Tensor) -> torch.Tensor:
    y = rt.empty_like(x)
    n = x.numel()
    if n == 0:
        return y
    sizes, (xs,), contiguous, _ = flat_strides(x)
    _relu_fwd_kernel[(rt.cdiv(n, BLOCK),)](x, y, n, *sizes[1:], *xs, CONTIGUOUS=contiguous, BLOCK=BLOCK)
    return y


def _backward(y: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """grad_input from the saved output and grad_output (autograd gives it the output's shape and dtype)."""
    dx = rt.empty_like(y)
    n = y.numel()
    if n == 0:
        return dx
    sizes, (gs,), contiguous, _ = flat_strides(g)
    _relu_bwd_kernel[(rt.cdiv(n, BLOCK),)](y, g, dx, n, *sizes[1:], *gs, CONTIGUOUS=contiguous, BLOCK=BLOCK)
    return dx


# ---------------------------------------------------------------------------------------------
# Custom ops (torch.ops.blitz.relu, torch.ops.blitz.relu_backward) and the public API
# ---------------------------------------------------------------------------------------------


@custom_op("relu")
def relu_op(input: torch.Tensor) -> torch.Tensor:
    """max(x, 0) of a floating tensor ``relu`` checked, in a new contiguous tensor."""
    return _forward(input)


@relu_op.register_fake
def _(input: torch.Tensor) -> torch.Tensor:
    return input.new_empty(input.shape)


@custom_op("relu_backward")
def relu_backward_op(output: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
    """grad_input of relu from its output (whose sign is the mask) and grad_output."""
    return _backward(output, grad_output)


@relu_backward_op.register_fake
def _(output: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
    return output.new_empty(output.shape)


def _setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(output)


def _relu_autograd_backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
    (output,) = ctx.saved_tensors
    return relu_backward_op(output, grad_output)


relu_op.register_autograd(_relu_autograd_backward, setup_context=_setup_context)


def relu(input: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """``torch.nn.functional.relu`` in Triton (``inplace`` is not supported: it would overwrite a
    tensor autograd may need)."""
    if inplace:
        raise NotImplementedError("relu(inplace=True) is not supported; use the out-of-place form")
    rt.check_float(input, "input")
    return relu_op(input)
