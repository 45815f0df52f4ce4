"""Rotary position embedding in Triton (the half-rotation layout of Llama-style models): forward
and backward, gradients for x and for the cos and sin tables.

x is (B, H, T, D) in any layout, cos and sin are (T, D) in any layout, D even;
out = x * cos + rotate_half(x) * sin with rotate_half(x) = cat(-x2, x1) (x1, x2 the halves of D).
Per column i < D/2 of one row: out1 = x1 c1 - x2 s1, out2 = x2 c2 + x1 s2 (c1 = cos[t, i],
c2 = cos[t, i + D/2], likewise s); the backward is its transpose, and the tables' gradients sum
over batch and heads in a fixed order (deterministic).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels import _runtime as rt
from kernels._library import custom_op

__all__ = ["rotary_embedding", "rotary_embedding_backward_op", "rotary_embedding_op"]

#: Elements of one half-row tile per program: 4096 (16 KiB of fp32 per operand in flight).
TILE = 4096
#: Half-row columns per program at most; longer heads take several programs along D.
MAX_COLS = 1024


def _blocks(rows: int, half: int) -> tuple[int, int]:
    """(BLOCK_R, BLOCK_C): all of a half row up to MAX_COLS columns, and as many rows as fill TILE."""
    block_c = min(rt.next_pow2(max(half, 1)), MAX_COLS)
    return max(1, min(TILE // block_c, rt.next_pow2(max(rows, 1)))), block_c


@triton.jit
def _rotary_fwd_kernel(
    x_ptr,  # (B, H, T, D), any layout (also the grad_output in the backward)
    cos_ptr,  # (T, D), any layout
    sin_ptr,  # (T, D), any layout
    out_ptr,  # (B, H, T, D) contiguous
    n_rows,  # B * H * T
    H,
    T,
    HALF,  # D / 2
    xs_b,
    xs_h,
    xs_t,
    xs_d,  # x's strides
    cs_t,
    cs_d,  # cos's strides
    ss_t,
    ss_d,  # sin's strides
    TRANSPOSE: tl.constexpr,  # 0: the forward; 1: its transpose (the backward for x: sin -> -sin, halves crossed)
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)  # (BLOCK_R,) int64
    cols = tl.program_id(1).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)  # (BLOCK_C,)
    mask = (rows < n_rows)[:, None] & (cols < HALF)[None, :]
    t = rows % T
    bh = rows // T
    x_row = (bh // H) * xs_b + (bh % H) * xs_h + t * xs_t
    acc_ty = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    x1 = tl.load(x_ptr + x_row[:, None] + cols[None, :] * xs_d, mask=mask, other=0.0).to(acc_ty)
    x2 = tl.load(x_ptr + x_row[:, None] + (cols + HALF)[None, :] * xs_d, mask=mask, other=0.0).to(acc_ty)
    c_row = t[:, None] * cs_t
    s_row = t[:, None] * ss_t
    c1 = tl.load(cos_ptr + c_row + cols[None, :] * cs_d, mask=mask, other=0.0).to(acc_ty)
    c2 = tl.load(cos_ptr + c_row + (cols + HALF)[None, :] * cs_d, mask=mask, other=0.0).to(acc_ty)
    s1 = tl.load(sin_ptr + s_row + cols[None, :] * ss_d, mask=mask, other=0.0).to(acc_ty)
    s2 = tl.load(sin_ptr + s_row + (cols + HALF)[None, :] * ss_d, mask=mask, other=0.0).to(acc_ty)
    if TRANSPOSE:
        # the transpose of [[c1, -s1], [s2, c2]] acting on (x1, x2): [[c1, s2], [-s1, c2]]
        y1 = x1 * c1 + x2 * s2
        y2 = x2 * c2 - x1 * s1
    else:
        y1 = x1 * c1 - x2 * s1
        y2 = x2 * c2 + x1 * s2
    out_row = rows[:, None] * (2 * HALF)
    ty = out_ptr.dtype.element_ty
    tl.store(out_ptr + out_row + cols[None, :], y1.to(ty), mask=mask)
    tl.store(out_ptr + out_row + (cols + HALF)[None, :], y2.to(ty), mask=mask)


@triton.jit
def _rotary_tables_bwd_kernel(
    g_ptr,  # grad_output (B, H, T, D), any layout
    x_ptr,  # x (B, H, T, D), any layout
    cos_ptr,  # (T, D), any layout (read for dx only)
    sin_ptr,  # (T, D), any layout (read for dx only)
    dx_ptr,  # (B, H, T, D) contiguous (written when NEED_X)
    dcos_ptr,  # (T, D) contiguous
    dsin_ptr,  # (T, D) contiguous
    BH,  # B * H: the sum each table element takes
    H,
    T,
    HALF,
    gs_b,
    gs_h,
    gs_t,
    gs_d,  # grad_output's strides
    xs_b,
    xs_h,
    xs_t,
    xs_d,  # x's strides
    cs_t,
    cs_d,  # cos's strides
    ss_t,
    ss_d,  # sin's strides
    NEED_X: tl.constexpr,  # also write dx (the grad_output tile is loaded anyway)
    BLOCK_R: tl.constexpr,  # positions t per program
    BLOCK_C: tl.constexpr,
):
    t = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = (t < T)[:, None] & (cols < HALF)[None, :]
    acc_ty = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    if NEED_X:
        c1 = tl.load(cos_ptr + t[:, None] * cs_t + cols[None, :] * cs_d, mask=mask, other=0.0).to(acc_ty)
        c2 = tl.load(cos_ptr + t[:, None] * cs_t + (cols + HALF)[None, :] * cs_d, mask=mask, other=0.0).to(acc_ty)
        s1 = tl.load(sin_ptr + t[:, None] * ss_t + cols[None, :] * ss_d, mask=mask, other=0.0).to(acc_ty)
        s2 = tl.load(sin_ptr + t[:, None] * ss_t + (cols + HALF)[None, :] * ss_d, mask=mask, other=0.0).to(acc_ty)
    dc1 = tl.zeros((BLOCK_R, BLOCK_C), dtype=acc_ty)
    dc2 = tl.zeros((BLOCK_R, BLOCK_C), dtype=acc_ty)
    ds1 = tl.zeros((BLOCK_R, BLOCK_C), dtype=acc_ty)
    ds2 = tl.zeros((BLOCK_R, BLOCK_C), dtype=acc_ty)
    for bh in range(0, BH):  # a fixed order: the sums are deterministic
        b = bh // H
        h = bh % H
        g_row = (b * gs_b + h * gs_h + t * gs_t)[:, None]
        x_row = (b * xs_b + h * xs_h + t * xs_t)[:, None]
        g1 = tl.load(g_ptr + g_row + cols[None, :] * gs_d, mask=mask, other=0.0).to(acc_ty)
        g2 = tl.load(g_ptr + g_row + (cols + HALF)[None, :] * gs_d, mask=mask, other=0.0).to(acc_ty)
        x1 = tl.load(x_ptr + x_row + cols[None, :] * xs_d, mask=mask, other=0.0).to(acc_ty)
        x2 = tl.load(x_ptr + x_row + (cols + HALF)[None, :] * xs_d, mask=mask, other=0.0).to(acc_ty)
        dc1 += g1 * x1
        dc2 += g2 * x2
        ds1 -= g1 * x2
        ds2 += g2 * x1
        if NEED_X:  # the transpose of the rotation, as _rotary_fwd_kernel with TRANSPOSE
            dx_row = ((bh * T + t) * (2 * HALF))[:, None]
            dx_ty = dx_ptr.dtype.element_ty
            tl.store(dx_ptr + dx_row + cols[None, :], (g1 * c1 + g2 * s2).to(dx_ty), mask=mask)
            tl.store(dx_ptr + dx_row + (cols + HALF)[None, :], (g2 * c2 - g1 * s1).to(dx_ty), mask=mask)
    out_row = t[:, None] * (2 * HALF)
    ty = dcos_ptr.dtype.element_ty
    tl.store(dcos_ptr + out_row + cols[None, :], dc1.to(ty), mask=mask)
    tl.store(dcos_ptr + out_row + (cols + HALF)[None, :], dc2.to(ty), mask=mask)
    tl.store(dsin_ptr + out_row + cols[None, :], ds1.to(ty), mask=mask)
    tl.store(dsin_ptr + out_row + (cols + HALF)[None, :], ds2.to(ty), mask=mask)


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, *, transpose: bool) -> torch.Tensor:
    """The rotation (or its transpose) of x by the tables, into a new contiguous tensor."""
    b, h, t, d = x.shape
    out = rt.empty_like(x)
    n_rows, half = b * h * t, d // 2
    if n_rows and half:
        block_r, block_c = _blocks(n_rows, half)
        grid = (rt.cdiv(n_rows, block_r), rt.cdiv(half, block_c))
        _rotary_fwd_kernel[grid](
            x,
            cos,
            sin,
            out,
            n_rows,
            h,
            t,
            half,
            *x.stride(),
            *cos.stride(),
            *sin.stride(),
            TRANSPOSE=int(transpose),
            BLOCK_R=block_r,
            BLOCK_C=block_c,
        )
    return out


def _table_grads(
    g: torch.Tensor, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, *, need_x: bool
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """dcos = sum over (B, H) of g x, dsin = sum over (B, H) of g rotate_half(x), and with
    ``need_x`` dx from the same pass over g (one launch: each program owns a tile of positions and
    walks batch and heads)."""
    b, h, t, d = x.shape
    dcos = rt.empty((t, d), dtype=x.dtype, device=x.device)
    dsin = rt.empty((t, d), dtype=x.dtype, device=x.device)
    dx = rt.empty_like(x) if need_x else None
    half = d // 2
    if t and half:  # with B * H = 0 the kernel's loop runs no step and stores zeros
        block_r, block_c = _blocks(t, half)
        grid = (rt.cdiv(t, block_r), rt.cdiv(half, block_c))
        _rotary_tables_bwd_kernel[grid](
            g,
            x,
            cos,
            sin,
            dx if need_x else dcos,
            dcos,
            dsin,
            b * h,
            h,
            t,
            half,
            *g.stride(),
            *x.stride(),
            *cos.stride(),
            *sin.stride(),
            NEED_X=need_x,
            BLOCK_R=block_r,
            BLOCK_C=block_c,
        )
    return dx, dcos, dsin


def _check(x, cos, sin) -> None:
    rt.check_float(x, "x")
    rt.check_float(cos, "cos")
    rt.check_float(sin, "sin")
    rt.check_same_dtype(x=x, cos=cos, sin=sin)
    rt.check_device(x, cos, sin)
    if x.ndim != 4:
        raise ValueError(f"x must be (B, H, T, D), got shape {tuple(x.shape)}")
    _, _, t, d = x.shape
    if d % 2:
        raise ValueError(f"the head dim D={d} must be even (the half-rotation layout rotates its two halves)")
    for name, table in (("cos", cos), ("sin", sin)):
        if tuple(table.shape) != (t, d):
            raise ValueError(
                f"{name} must be (T, D) = {(t, d)} for x of shape {tuple(x.shape)}, got {tuple(table.shape)}"
            )


# ---------------------------------------------------------------------------------------------
# Custom ops (torch.ops.blitz.rotary_embedding, rotary_embedding_backward) and the public API
# ---------------------------------------------------------------------------------------------


@custom_op("rotary_embedding")
def rotary_embedding_op(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x * cos + rotate_half(x) * sin, contiguous (``rotary_embedding`` checks the arguments)."""
    return _rotate(x, cos, sin, transpose=False)


@rotary_embedding_op.register_fake
def _(x, cos, sin):
    return x.new_empty(x.shape)


@custom_op("rotary_embedding_backward")
def rotary_embedding_backward_op(
    grad_output: torch.Tensor,
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    need_x: bool,
    need_tables: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dcos, dsin); an unneeded gradient is an empty (0,) tensor."""
    empty = rt.empty((0,), dtype=x.dtype, device=x.device)
    if not need_tables:
        return (_rotate(grad_output, cos, sin, transpose=True) if need_x else empty), empty.clone(), empty.clone()
    dx, dcos, dsin = _table_grads(grad_output, x, cos, sin, need_x=need_x)
    return (dx if need_x else empty), dcos, dsin


@rotary_embedding_backward_op.register_fake
def _(grad_output, x, cos, sin, need_x, need_tables):
    def like(t, need):
        return t.new_empty(t.shape if need else (0,))

    return like(x, need_x), like(cos, need_tables), like(sin, need_tables)


def _setup_context(ctx, inputs, output) -> None:
    x, cos, sin = inputs
    ctx.save_for_backward(x, cos, sin)


def _backward(ctx, g: torch.Tensor):
    x, cos, sin = ctx.saved_tensors
    need_x, need_cos, need_sin = ctx.needs_input_grad[:3]
    dx, dcos, dsin = rotary_embedding_backward_op(g, x, cos, sin, need_x, need_cos or need_sin)
    return (dx if need_x else None), (dcos if need_cos else None), (dsin if need_sin else None)


rotary_embedding_op.register_autograd(_backward, setup_context=_setup_context)


def rotary_embedding(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding, half-rotation layout: ``x * cos + rotate_half(x) * sin`` for x
    (B, H, T, D) and tables (T, D) (any layouts); x, cos and sin all get gradients."""
    _check(x, cos, sin)
    return rotary_embedding_op(x, cos, sin)
