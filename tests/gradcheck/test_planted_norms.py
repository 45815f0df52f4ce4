"""Planted norm bugs, one of each class that shipped in real kernels (issue 12), each caught by
``verify_op`` with the catalog's default strategies and no aimed inputs:

- (a) the variance summed over padded lanes at a non-power-of-2 hidden size (Liger, unsloth);
- (b) an RMSNorm dweight reduced along the wrong axis (attorch);
- (c) an RMSNorm dweight accumulated in bf16 (Liger): partials rounded to bf16 and summed in bf16;
- (d) a dweight/dbias partial-sum buffer sized with floor instead of ceil, so the last, partial
  block of rows is dropped (attorch).

(a), (c) and (d) are flags of one small Triton layer/RMS norm written here (contiguous rows, a
partial-sum buffer per block of rows, reduced with torch); (b) is a torch function.
"""

from __future__ import annotations

import math

import pytest
import torch
import triton
import triton.language as tl

import gradcheck as gc
from gradcheck import profiles
from kernels import _runtime as rt

#: Rows per program of the planted backward (a usual block size): 17, 33 ... rows leave a partial block.
BLOCK_ROWS = 16


@triton.jit
def _planted_fwd(
    x_ptr,  # (n_rows, D) contiguous
    w_ptr,  # (D,) or unused
    b_ptr,  # (D,) or unused
    y_ptr,  # (n_rows, D) contiguous
    rstd_ptr,  # (n_rows,) fp32
    mean_ptr,  # (n_rows,) fp32
    n_rows,
    D,
    eps,
    CENTRED: tl.constexpr,
    HAS_W: tl.constexpr,
    HAS_B: tl.constexpr,
    MASK_VAR: tl.constexpr,  # False plants (a): padded lanes (x = 0, so x - mean = -mean) enter the variance
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_D)
    mask = (rows < n_rows)[:, None] & (cols < D)[None, :]
    offs = rows[:, None] * D + cols[None, :]
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    mean = tl.zeros((BLOCK_R,), tl.float32)
    if CENTRED:
        mean = tl.sum(x, axis=1) / D
    d = x - mean[:, None]
    if MASK_VAR:
        d = tl.where(mask, d, 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(d * d, axis=1) / D + eps)
    y = d * rstd[:, None]
    if HAS_W:
        y = y * tl.load(w_ptr + cols, mask=cols < D, other=0.0).to(tl.float32)[None, :]
    if HAS_B:
        y = y + tl.load(b_ptr + cols, mask=cols < D, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(rstd_ptr + rows, rstd, mask=rows < n_rows)
    tl.store(mean_ptr + rows, mean, mask=rows < n_rows)


@triton.jit
def _planted_bwd(
    x_ptr,
    w_ptr,
    g_ptr,  # (n_rows, D) contiguous
    rstd_ptr,
    mean_ptr,
    dx_ptr,
    dw_ptr,  # (n_partial, D): per-program sums of g * xhat over its BLOCK_R rows
    db_ptr,  # (n_partial, D): per-program sums of g
    n_rows,
    D,
    n_partial,  # rows of the partial buffers; a program past them has nowhere to write
    CENTRED: tl.constexpr,
    HAS_W: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_D)
    col_ok = cols < D
    mask = (rows < n_rows)[:, None] & col_ok[None, :]
    offs = rows[:, None] * D + cols[None, :]
    w = tl.full((BLOCK_D,), 1.0, tl.float32)
    if HAS_W:
        w = tl.load(w_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    rstd = tl.load(rstd_ptr + rows, mask=rows < n_rows, other=0.0)[:, None]
    mean = tl.load(mean_ptr + rows, mask=rows < n_rows, other=0.0)[:, None]
    xhat = tl.where(mask, (x - mean) * rstd, 0.0)
    wg = g * w[None, :]
    inner = wg - xhat * (tl.sum(wg * xhat, axis=1)[:, None] / D)
    if CENTRED:
        inner = inner - tl.sum(wg, axis=1)[:, None] / D
    tl.store(dx_ptr + offs, (rstd * inner).to(dx_ptr.dtype.element_ty), mask=mask)
    # a program whose row of the partial buffer does not exist drops its sums (a buffer sized with
    # floor: the last, partial block of rows); cast on store to the buffer's dtype
    keep = col_ok & ((cols * 0 + pid) < n_partial)  # a block mask (the interpreter takes no scalar one)
    tl.store(dw_ptr + pid * D + cols, tl.sum(g * xhat, axis=0).to(dw_ptr.dtype.element_ty), mask=keep)
    tl.store(db_ptr + pid * D + cols, tl.sum(g, axis=0).to(db_ptr.dtype.element_ty), mask=keep)


class _PlantedNorm(torch.autograd.Function):
    """A layer norm (``centred``) or RMS norm over the last dim of a contiguous (n_rows, D) input."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps, centred, bugs):
        n_rows, d = x.shape
        y = torch.empty_like(x)
        rstd = torch.empty(n_rows, dtype=torch.float32)
        mean = torch.empty(n_rows, dtype=torch.float32)
        bd = triton.next_power_of_2(d)
        br = max(1, min(triton.next_power_of_2(n_rows), 4096 // bd))
        _planted_fwd[(triton.cdiv(n_rows, br),)](
            x, weight if weight is not None else x, bias if bias is not None else x, y, rstd, mean, n_rows, d, eps,
            CENTRED=centred, HAS_W=weight is not None, HAS_B=bias is not None, MASK_VAR="padded_variance" not in bugs,
            BLOCK_R=br, BLOCK_D=bd,
        )  # fmt: skip
        ctx.save_for_backward(x, weight, rstd, mean)
        ctx.centred, ctx.bugs = centred, bugs
        return y

    @staticmethod
    def backward(ctx, g):
        x, weight, rstd, mean = ctx.saved_tensors
        n_rows, d = x.shape
        g = g.contiguous()
        programs = triton.cdiv(n_rows, BLOCK_ROWS)
        n_partial = max(1, n_rows // BLOCK_ROWS) if "floor_partials" in ctx.bugs else programs
        bf16 = "bf16_dweight" in ctx.bugs
        dw = torch.zeros(n_partial, d, dtype=torch.bfloat16 if bf16 else torch.float32)
        db = torch.zeros(n_partial, d, dtype=torch.float32)
        dx = torch.empty_like(x)
        _planted_bwd[(programs,)](
            x, weight if weight is not None else x, g, rstd, mean, dx, dw, db, n_rows, d, n_partial,
            CENTRED=ctx.centred, HAS_W=weight is not None, BLOCK_R=BLOCK_ROWS, BLOCK_D=triton.next_power_of_2(d),
        )  # fmt: skip
        if bf16:  # (c): bf16 partials added one by one in bf16
            total = torch.zeros(d, dtype=torch.bfloat16)
            for part in dw:
                total = total + part
            dw = total[None].float()
        dweight = dw.sum(0).to(x.dtype) if weight is not None and ctx.needs_input_grad[1] else None
        dbias = db.sum(0).to(x.dtype) if ctx.needs_input_grad[2] else None
        return dx, dweight, dbias, None, None, None


def _rows(x: torch.Tensor, normalized_shape) -> tuple[torch.Tensor, int]:
    d = math.prod(normalized_shape)
    return x.reshape(-1, d).contiguous(), d


def planted_layer_norm(*bugs: str):
    def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
        rows, d = _rows(x, normalized_shape)
        w = None if weight is None else weight.reshape(d).contiguous()
        b = None if bias is None else bias.reshape(d).contiguous()
        return _PlantedNorm.apply(rows, w, b, eps, True, bugs).view(x.shape)

    return layer_norm


def planted_rms_norm(*bugs: str):
    def rms_norm(x, normalized_shape, weight=None, eps=1e-6):
        rows, d = _rows(x, normalized_shape)
        w = None if weight is None else weight.reshape(d).contiguous()
        return _PlantedNorm.apply(rows, w, None, eps, False, bugs).view(x.shape)

    return rms_norm


class _RmsNormWrongAxis(torch.autograd.Function):
    """(b): RMSNorm whose dweight sums g * xhat over the hidden dim (then over the rows) and
    broadcasts that one number back to every feature, instead of summing over the rows."""

    @staticmethod
    def forward(ctx, x, weight, eps):
        r = torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)
        xhat = x.float() * r
        ctx.save_for_backward(xhat, r, weight)
        return (xhat * weight.float()).to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        xhat, r, weight = ctx.saved_tensors
        g = g.float()
        wg = g * weight.float()
        dx = r * (wg - xhat * (wg * xhat).mean(-1, keepdim=True))
        dweight = (g * xhat).sum(-1).sum().expand(weight.shape)  # the bug: hidden dim, not rows
        return dx.to(weight.dtype), dweight.to(weight.dtype).contiguous(), None


def rms_norm_wrong_axis(x, normalized_shape, weight=None, eps=1e-6):
    if weight is None:
        return torch.nn.functional.rms_norm(x, normalized_shape, None, eps)
    rows, d = _rows(x, normalized_shape)
    return _RmsNormWrongAxis.apply(rows, weight.reshape(d), eps).view(x.shape)


def _caught(name: str, impl) -> gc.VerificationError:
    """The failure ``verify_op`` raises at fp32 (the first failing example settles it: no shrinking)."""
    with profiles.without_shrinking(), pytest.raises(gc.VerificationError) as caught:
        gc.verify_op(name, impl=impl, dtypes=[torch.float32], max_findings=1)
    return caught.value


pytestmark = pytest.mark.skipif(not rt.INTERPRET, reason="the planted kernels take CPU tensors (interpreter)")


def test_the_planted_kernel_without_bugs_passes():
    """The planted kernel is right with no bug switched on: what the tests below catch is the bug."""
    gc.verify_op("layer_norm", impl=planted_layer_norm(), dtypes=[torch.float32], max_examples=3)
    gc.verify_op("rms_norm", impl=planted_rms_norm(), dtypes=[torch.float32], max_examples=3)


@pytest.mark.long(seconds=27)  # measured under load on 2 cores
def test_padded_lane_variance_is_caught():
    """(a) Liger/unsloth: x - mean on padded lanes (-mean) squared into the variance."""
    assert _caught("layer_norm", planted_layer_norm("padded_variance")).check == "forward"


def test_dweight_reduced_along_the_wrong_axis_is_caught():
    """(b) attorch: RMSNorm dweight summed over the hidden dim, broadcast back."""
    assert _caught("rms_norm", rms_norm_wrong_axis).check == "backward"


def test_dweight_accumulated_in_bf16_is_caught():
    """(c) Liger: RMSNorm dweight accumulated in bf16 (here at fp32 inputs)."""
    assert _caught("rms_norm", planted_rms_norm("bf16_dweight")).check == "backward"


def test_partial_buffer_sized_with_floor_is_caught():
    """(d) attorch: floor(rows / block) partial rows, so a last, partial block of rows (17, 33 ...
    rows past a block of 16) adds nothing to dweight and dbias. Fewer rows than a block still pass
    (the buffer keeps one row): only the strategy's rows past a block multiple catch it."""
    assert _caught("layer_norm", planted_layer_norm("floor_partials")).check == "backward"
