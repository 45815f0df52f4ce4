"""layer_norm and rms_norm in Triton: forward and backward (dx, and dweight/dbias from per-program partial sums)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from kernels import _runtime as rt
from kernels import elementwise
from kernels._library import custom_op
from kernels._strided import strided_offsets
from kernels.softmax import row_layout

__all__ = [
    "group_norm",
    "layer_norm",
    "layer_norm_op",
    "partial_rows",
    "rms_norm",
    "rms_norm_op",
]

# Longest row one program keeps in registers (a 16384-long fp32 row is 64 KiB); longer rows are
# streamed in chunks. Under the interpreter 2048, so the property tests' hidden sizes of 2049 and
# 4097 take the streamed path.
MAX_ROW = 2048 if rt.INTERPRET else 16384
# Elements per tile (several short rows per program): the interpreter runs fastest with big tiles.
TILE = 16384 if rt.INTERPRET else 4096
# Elements per chunk of a streamed row: under the interpreter a row of 2049 takes several chunks.
CHUNK = 1024 if rt.INTERPRET else 4096
# Backward programs: each owns a contiguous range of rows and one row of the dweight/dbias partial
# buffer. On the GPU a few per SM keep it busy while the partial buffer stays small (132 SMs x 4 x
# hidden 4096 fp32 = 8.6 MB); under the interpreter few programs run fastest.
PROGRAMS_PER_SM = 4
INTERPRET_PROGRAMS = 4


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------


@triton.jit
def _norm_fwd_kernel(
    x_ptr,  # input (rows, D), rows in any collapsed layout
    w_ptr,  # weight (D,), any stride; unused without HAS_W
    b_ptr,  # bias (D,), any stride; unused without HAS_B
    y_ptr,  # output, contiguous in the input's shape
    mean_ptr,  # (rows,) row means at the accumulation dtype (CENTRED only)
    rstd_ptr,  # (rows,) 1 / sqrt(var + eps) (RMS: 1 / sqrt(mean(x^2) + eps))
    eps_ptr,  # eps as a 1-element tensor of the accumulation dtype (a float argument is fp32)
    n_rows,
    D,  # row length (the normalized size)
    R1,
    R2,
    R3,  # collapsed row dims (R0 implied)
    xs0,
    xs1,
    xs2,
    xs3,
    xsd,  # input strides: rows, then along the row
    ys0,
    ys1,
    ys2,
    ys3,
    ysd,  # output strides
    ws,  # weight stride
    bs,  # bias stride
    CENTRED: tl.constexpr,  # layer norm (subtract the mean); else RMS norm
    HAS_W: tl.constexpr,
    HAS_B: tl.constexpr,
    RANK: tl.constexpr,  # collapsed row dims the offsets use: 1 or 4
    SINGLE: tl.constexpr,  # the whole row in one tile; else streamed in chunks (three passes)
    BLOCK_R: tl.constexpr,  # rows per program
    BLOCK_D: tl.constexpr,  # elements per row per tile
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = rows < n_rows
    if RANK == 1:  # inline: a nested @triton.jit call costs milliseconds under the interpreter
        x_row = (rows * xs3)[:, None]
    else:
        x_row = strided_offsets(rows, R1, R2, R3, xs0, xs1, xs2, xs3, RANK)[:, None]
    if RANK == 1:
        y_row = (rows * ys3)[:, None]
    else:
        y_row = strided_offsets(rows, R1, R2, R3, ys0, ys1, ys2, ys3, RANK)[:, None]
    cols = tl.arange(0, BLOCK_D).to(tl.int64)[None, :]  # int64: col * stride can pass 2^31
    acc_ty = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    eps = tl.load(eps_ptr).to(acc_ty)
    length = tl.cast(D, acc_ty)
    # the variance in two passes (mean, then squared deviations), never E[x^2] - E[x]^2 (which
    # cancels when the mean is far above the spread); padded lanes are zeroed before squaring
    if SINGLE:
        mask = row_ok[:, None] & (cols < D)
        x = tl.load(x_ptr + x_row + cols * xsd, mask=mask, other=0.0).to(acc_ty)
        if CENTRED:
            mean = tl.sum(x, axis=1) / length
            d = tl.where(mask, x - mean[:, None], 0.0)
        else:
            d = x
        rstd = 1.0 / tl.sqrt(tl.sum(d * d, axis=1) / length + eps)
        y = d * rstd[:, None]
        if HAS_W:
            y = y * tl.load(w_ptr + cols * ws, mask=cols < D, other=0.0).to(acc_ty)
        if HAS_B:
            y = y + tl.load(b_ptr + cols * bs, mask=cols < D, other=0.0).to(acc_ty)
        tl.store(y_ptr + y_row + cols * ysd, y.to(y_ptr.dtype.element_ty), mask=mask)
    else:
        mean = tl.zeros((BLOCK_R,), acc_ty)
        if CENTRED:
            for start in range(0, D, BLOCK_D):
                mask = row_ok[:, None] & (cols + start < D)
                x = tl.load(x_ptr + x_row + (cols + start) * xsd, mask=mask, other=0.0).to(acc_ty)
                mean += tl.sum(x, axis=1)
            mean = mean / length
        ss = tl.zeros((BLOCK_R,), acc_ty)
        for start in range(0, D, BLOCK_D):
            mask = row_ok[:, None] & (cols + start < D)
            x = tl.load(x_ptr + x_row + (cols + start) * xsd, mask=mask, other=0.0).to(acc_ty)
            d = tl.where(mask, x - mean[:, None], 0.0)
            ss += tl.sum(d * d, axis=1)
        rstd = 1.0 / tl.sqrt(ss / length + eps)
        for start in range(0, D, BLOCK_D):
            c = cols + start
            mask = row_ok[:, None] & (c < D)
            x = tl.load(x_ptr + x_row + c * xsd, mask=mask, other=0.0).to(acc_ty)
            y = (x - mean[:, None]) * rstd[:, None]
            if HAS_W:
                y = y * tl.load(w_ptr + c * ws, mask=c < D, other=0.0).to(acc_ty)
            if HAS_B:
                y = y + tl.load(b_ptr + c * bs, mask=c < D, other=0.0).to(acc_ty)
            tl.store(y_ptr + y_row + c * ysd, y.to(y_ptr.dtype.element_ty), mask=mask)
    if CENTRED:
        tl.store(mean_ptr + rows, mean, mask=row_ok)
    tl.store(rstd_ptr + rows, rstd, mask=row_ok)


@triton.jit
def _norm_bwd_kernel(
    x_ptr,  # saved input (rows, D), any collapsed layout
    w_ptr,  # weight (D,), any stride; unused without HAS_W
    g_ptr,  # grad_output, any layout (stride 0 where expanded)
    mean_ptr,  # (rows,) saved means (CENTRED)
    rstd_ptr,  # (rows,) saved 1 / sqrt(var + eps)
    dx_ptr,  # grad_input, contiguous in the input's shape
    dw_ptr,  # (n_partial, D) contiguous: this program's sum over its rows of g * xhat (DW); with
    # FINAL (one program, whole rows) the (D,) dweight itself, at the weight's dtype
    db_ptr,  # (n_partial, D) contiguous: this program's sum over its rows of g (DB); FINAL: dbias
    n_rows,
    D,
    rows_per_program,  # a multiple of BLOCK_R; program p owns rows [p * rows_per_program, ...)
    R1,
    R2,
    R3,
    xs0,
    xs1,
    xs2,
    xs3,
    xsd,  # input strides
    gs0,
    gs1,
    gs2,
    gs3,
    gsd,  # grad_output strides
    ds0,
    ds1,
    ds2,
    ds3,
    dsd,  # grad_input strides
    ws,  # weight stride
    CENTRED: tl.constexpr,
    HAS_W: tl.constexpr,
    DW: tl.constexpr,  # write dweight partials
    DB: tl.constexpr,  # write dbias partials
    RANK: tl.constexpr,
    SINGLE: tl.constexpr,  # the whole row in one tile: partials accumulate in registers
    FINAL: tl.constexpr,  # one program (SINGLE only): its sums are the results (saves two launches)
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    # dx = rstd * (wg - mean(wg) - xhat * mean(wg * xhat)), wg = g * weight, xhat = (x - mean) * rstd
    # (RMS: no mean(wg) term and xhat = x * rstd); dweight = sum over rows of g * xhat, dbias = sum of g
    pid = tl.program_id(0)
    first = pid.to(tl.int64) * rows_per_program
    cols = tl.arange(0, BLOCK_D).to(tl.int64)[None, :]
    acc_ty = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    length = tl.cast(D, acc_ty)
    part_row = pid.to(tl.int64) * D
    if SINGLE:
        col_ok = cols < D
        w = tl.full((1, BLOCK_D), 1.0, acc_ty)
        if HAS_W:
            w = tl.load(w_ptr + cols * ws, mask=col_ok, other=0.0).to(acc_ty)
        dw_acc = tl.zeros((1, BLOCK_D), acc_ty)
        db_acc = tl.zeros((1, BLOCK_D), acc_ty)
        for r0 in range(0, rows_per_program, BLOCK_R):
            rows = first + r0 + tl.arange(0, BLOCK_R)
            row_ok = rows < n_rows
            mask = row_ok[:, None] & col_ok
            if RANK == 1:
                x_row = (rows * xs3)[:, None]
            else:
                x_row = strided_offsets(rows, R1, R2, R3, xs0, xs1, xs2, xs3, RANK)[:, None]
            if RANK == 1:
                g_row = (rows * gs3)[:, None]
            else:
                g_row = strided_offsets(rows, R1, R2, R3, gs0, gs1, gs2, gs3, RANK)[:, None]
            if RANK == 1:
                d_row = (rows * ds3)[:, None]
            else:
                d_row = strided_offsets(rows, R1, R2, R3, ds0, ds1, ds2, ds3, RANK)[:, None]
            x = tl.load(x_ptr + x_row + cols * xsd, mask=mask, other=0.0).to(acc_ty)
            g = tl.load(g_ptr + g_row + cols * gsd, mask=mask, other=0.0).to(acc_ty)
            rstd = tl.load(rstd_ptr + rows, mask=row_ok, other=0.0)[:, None]
            if CENTRED:
                mean = tl.load(mean_ptr + rows, mask=row_ok, other=0.0)[:, None]
                xhat = tl.where(mask, (x - mean) * rstd, 0.0)
            else:
                xhat = x * rstd
            wg = g * w
            c1 = tl.sum(wg * xhat, axis=1)[:, None] / length
            inner = wg - xhat * c1
            if CENTRED:
                inner = inner - tl.sum(wg, axis=1)[:, None] / length
            tl.store(dx_ptr + d_row + cols * dsd, (rstd * inner).to(dx_ptr.dtype.element_ty), mask=mask)
            if DW:
                dw_acc += tl.sum(g * xhat, axis=0)[None, :]
            if DB:
                db_acc += tl.sum(g, axis=0)[None, :]
        # cast on store: the partial buffer's dtype (fp32/fp64), or with FINAL the parameter's
        if DW:
            tl.store(dw_ptr + part_row + cols, dw_acc.to(dw_ptr.dtype.element_ty), mask=col_ok)
        if DB:
            tl.store(db_ptr + part_row + cols, db_acc.to(db_ptr.dtype.element_ty), mask=col_ok)
    else:
        # streamed rows: pass 1 the two row sums, pass 2 dx and the partials (this program's row
        # of the partial buffer, zeroed by the launcher, updated chunk by chunk)
        for r0 in range(0, rows_per_program, BLOCK_R):
            rows = first + r0 + tl.arange(0, BLOCK_R)
            row_ok = rows < n_rows
            if RANK == 1:
                x_row = (rows * xs3)[:, None]
            else:
                x_row = strided_offsets(rows, R1, R2, R3, xs0, xs1, xs2, xs3, RANK)[:, None]
            if RANK == 1:
                g_row = (rows * gs3)[:, None]
            else:
                g_row = strided_offsets(rows, R1, R2, R3, gs0, gs1, gs2, gs3, RANK)[:, None]
            if RANK == 1:
                d_row = (rows * ds3)[:, None]
            else:
                d_row = strided_offsets(rows, R1, R2, R3, ds0, ds1, ds2, ds3, RANK)[:, None]
            rstd = tl.load(rstd_ptr + rows, mask=row_ok, other=0.0)[:, None]
            mean = tl.zeros((BLOCK_R, 1), acc_ty)
            if CENTRED:
                mean = tl.load(mean_ptr + rows, mask=row_ok, other=0.0)[:, None]
            s1 = tl.zeros((BLOCK_R,), acc_ty)
            s2 = tl.zeros((BLOCK_R,), acc_ty)
            for start in range(0, D, BLOCK_D):
                c = cols + start
                mask = row_ok[:, None] & (c < D)
                x = tl.load(x_ptr + x_row + c * xsd, mask=mask, other=0.0).to(acc_ty)
                g = tl.load(g_ptr + g_row + c * gsd, mask=mask, other=0.0).to(acc_ty)
                wg = g
                if HAS_W:
                    wg = g * tl.load(w_ptr + c * ws, mask=c < D, other=0.0).to(acc_ty)
                xhat = tl.where(mask, (x - mean) * rstd, 0.0)
                s1 += tl.sum(wg * xhat, axis=1)
                s2 += tl.sum(wg, axis=1)
            c1 = s1[:, None] / length
            c2 = s2[:, None] / length
            for start in range(0, D, BLOCK_D):
                c = cols + start
                col_ok = c < D
                mask = row_ok[:, None] & col_ok
                x = tl.load(x_ptr + x_row + c * xsd, mask=mask, other=0.0).to(acc_ty)
                g = tl.load(g_ptr + g_row + c * gsd, mask=mask, other=0.0).to(acc_ty)
                wg = g
                if HAS_W:
                    wg = g * tl.load(w_ptr + c * ws, mask=col_ok, other=0.0).to(acc_ty)
                xhat = tl.where(mask, (x - mean) * rstd, 0.0)
                inner = wg - xhat * c1
                if CENTRED:
                    inner = inner - c2
                tl.store(dx_ptr + d_row + c * dsd, (rstd * inner).to(dx_ptr.dtype.element_ty), mask=mask)
                if DW:
                    part = tl.load(dw_ptr + part_row + c, mask=col_ok, other=0.0)
                    tl.store(dw_ptr + part_row + c, part + tl.sum(g * xhat, axis=0)[None, :], mask=col_ok)
                if DB:
                    part = tl.load(db_ptr + part_row + c, mask=col_ok, other=0.0)
                    tl.store(db_ptr + part_row + c, part + tl.sum(g, axis=0)[None, :], mask=col_ok)


@triton.jit
def _sum_partials_kernel(
    src_ptr,  # (n_partial, D) contiguous partial sums at the accumulation dtype
    out_ptr,  # (D,) result at the parameter's dtype, contiguous
    n_partial,
    D,
    BLOCK_P: tl.constexpr,  # partial rows per step
    BLOCK_D: tl.constexpr,  # columns per program
):
    # one program per block of columns, partial rows summed in a fixed order: the same bits every run
    cols = tl.program_id(0).to(tl.int64) * BLOCK_D + tl.arange(0, BLOCK_D)
    col_ok = cols < D
    acc = tl.zeros((BLOCK_D,), src_ptr.dtype.element_ty)
    for start in range(0, n_partial, BLOCK_P):
        p = start + tl.arange(0, BLOCK_P).to(tl.int64)
        mask = (p < n_partial)[:, None] & col_ok[None, :]
        acc += tl.sum(tl.load(src_ptr + p[:, None] * D + cols[None, :], mask=mask, other=0.0), axis=0)
    tl.store(out_ptr + cols, acc.to(out_ptr.dtype.element_ty), mask=col_ok)


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _blocks(n_rows: int, d: int) -> tuple[int, int, bool, int]:
    """(BLOCK_R, BLOCK_D, SINGLE, num_warps): a whole row per tile up to MAX_ROW (several rows
    when short), else chunks of CHUNK elements of one row."""
    full = rt.next_pow2(max(d, 1))
    if full <= MAX_ROW:
        br = max(1, min(rt.next_pow2(max(n_rows, 1)), TILE // full))
        return br, full, True, min(16, max(4, br * full // 512))
    return 1, CHUNK, False, min(16, max(4, CHUNK // 512))


def _row_args(tensors: Sequence[torch.Tensor]) -> tuple:
    """Collapse the row dims (all but the last) of ``tensors`` jointly: (layout, flat strides)."""
    dims = list(range(tensors[0].dim() - 1))
    layout = row_layout(tuple(tensors[0].shape[:-1]), tensors, [dims] * len(tensors))
    strides = []
    for t, st in zip(layout.tensors, layout.strides, strict=True):
        strides += [*st, t.stride(-1)]
    return layout, strides


def partial_rows(n_rows: int, block_rows: int) -> tuple[int, int]:
    """(rows per program, programs) for the backward: rows per program a multiple of
    ``block_rows``; programs = ceil(n_rows / rows per program), so the last, partial range of
    rows has its own row in the partial buffer."""
    if rt.INTERPRET:
        target = INTERPRET_PROGRAMS
    else:
        target = PROGRAMS_PER_SM * torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count
    blocks = rt.cdiv(max(n_rows, 1), block_rows)
    per_program = rt.cdiv(blocks, min(blocks, target)) * block_rows
    return per_program, rt.cdiv(max(n_rows, 1), per_program)


def _forward(x, weight, bias, eps: float, centred: bool):
    """(y, mean, rstd) of ``x`` (..., D) normalized over its last dim."""
    d = x.shape[-1]
    n_rows = x.numel() // d if d else 0
    acc = _acc_dtype(x.dtype)
    y = rt.empty_like(x)
    mean = rt.empty((n_rows,), dtype=acc, device=x.device)
    rstd = rt.empty((n_rows,), dtype=acc, device=x.device)
    if n_rows == 0 or d == 0:
        return y, mean, rstd
    layout, strides = _row_args((x, y))
    br, bd, single, warps = _blocks(n_rows, d)
    eps_t = torch.tensor([eps], dtype=acc, device=x.device)
    _norm_fwd_kernel[(rt.cdiv(n_rows, br),)](
        *layout.tensors[:1],
        weight if weight is not None else x,
        bias if bias is not None else x,
        layout.tensors[1],
        mean,
        rstd,
        eps_t,
        n_rows,
        d,
        *layout.sizes,
        *strides,
        weight.stride(0) if weight is not None else 0,
        bias.stride(0) if bias is not None else 0,
        CENTRED=centred,
        HAS_W=weight is not None,
        HAS_B=bias is not None,
        RANK=1 if layout.flat else 4,
        SINGLE=single,
        BLOCK_R=br,
        BLOCK_D=bd,
        num_warps=warps,
    )
    return y, mean, rstd


def _sum_partials(partials: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The column sums of ``partials`` (P, D) as a (D,) tensor of ``like``'s dtype."""
    n_partial, d = partials.shape
    out = rt.empty((d,), dtype=like.dtype, device=like.device)
    bd = min(rt.next_pow2(d), 1024 if rt.INTERPRET else 256)
    bp = max(1, min(rt.next_pow2(n_partial), (16384 if rt.INTERPRET else 2048) // bd))
    _sum_partials_kernel[(rt.cdiv(d, bd),)](partials, out, n_partial, d, BLOCK_P=bp, BLOCK_D=bd)
    return out


def _backward(x, weight, g, mean, rstd, centred: bool, need_dw: bool, need_db: bool):
    """(dx, dweight or None, dbias or None) for ``x`` (..., D)."""
    d = x.shape[-1]
    n_rows = x.numel() // d if d else 0
    acc = _acc_dtype(x.dtype)
    dx = rt.empty_like(x)
    need_dw = need_dw and weight is not None
    if n_rows == 0 or d == 0:
        zeros = torch.zeros((d,), dtype=x.dtype, device=x.device)
        return dx, zeros.clone() if need_dw else _none(x), zeros.clone() if need_db else _none(x)
    layout, strides = _row_args((x, g, dx))
    br, bd, single, warps = _blocks(n_rows, d)
    per_program, programs = partial_rows(n_rows, br)
    # one program over whole rows writes dweight and dbias itself; else partials, summed below.
    # The streamed path adds to its partial row chunk by chunk: zeros; the single-tile path writes it
    final = single and programs == 1
    alloc = rt.empty if single else torch.zeros
    dw_part = dw_out = db_part = db_out = None
    if need_dw:
        dw_out = rt.empty((d,), dtype=weight.dtype, device=x.device) if final else None
        dw_part = dw_out if final else alloc((programs, d), dtype=acc, device=x.device)
    if need_db:
        db_out = rt.empty((d,), dtype=x.dtype, device=x.device) if final else None
        db_part = db_out if final else alloc((programs, d), dtype=acc, device=x.device)
    _norm_bwd_kernel[(programs,)](
        layout.tensors[0],
        weight if weight is not None else x,
        layout.tensors[1],
        mean,
        rstd,
        layout.tensors[2],
        dw_part if dw_part is not None else rstd,
        db_part if db_part is not None else rstd,
        n_rows,
        d,
        per_program,
        *layout.sizes,
        *strides,
        weight.stride(0) if weight is not None else 0,
        CENTRED=centred,
        HAS_W=weight is not None,
        DW=need_dw,
        DB=need_db,
        RANK=1 if layout.flat else 4,
        SINGLE=single,
        FINAL=final,
        BLOCK_R=br,
        BLOCK_D=bd,
        num_warps=warps,
    )
    dw = (dw_out if final else _sum_partials(dw_part, weight)) if need_dw else _none(x)
    db = (db_out if final else _sum_partials(db_part, x)) if need_db else _none(x)
    return dx, dw, db


def _none(x: torch.Tensor) -> torch.Tensor:
    """A gradient not asked for: an empty tensor (custom ops return tensors; the autograd
    formula turns it into None)."""
    return x.new_empty((0,))


# ---------------------------------------------------------------------------------------------
# Custom ops (torch.ops.blitz.layer_norm, rms_norm and their _backward) and the public API
# ---------------------------------------------------------------------------------------------


@custom_op("layer_norm")
def layer_norm_op(
    input: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, mean, rstd): layer norm of ``input`` (..., D) over its last dim; weight and bias (D,)
    or None (the public ``layer_norm`` checks shapes, dtypes and devices)."""
    return _forward(input, weight, bias, eps, centred=True)


@custom_op("rms_norm")
def rms_norm_op(input: torch.Tensor, weight: torch.Tensor | None, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, rstd): RMS norm of ``input`` (..., D) over its last dim; weight (D,) or None."""
    y, _, rstd = _forward(input, weight, None, eps, centred=False)
    return y, rstd


@custom_op("layer_norm_backward")
def layer_norm_backward_op(
    input: torch.Tensor,
    weight: torch.Tensor | None,
    grad_output: torch.Tensor,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    need_weight: bool,
    need_bias: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dweight, dbias) of layer norm from the saved input, mean and rstd; a gradient not
    asked for (``need_weight``/``need_bias`` False, or no weight) is an empty tensor."""
    return _backward(input, weight, grad_output, mean, rstd, True, need_weight, need_bias)


@custom_op("rms_norm_backward")
def rms_norm_backward_op(
    input: torch.Tensor, weight: torch.Tensor | None, grad_output: torch.Tensor, rstd: torch.Tensor, need_weight: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(dx, dweight) of RMS norm from the saved input and rstd (dweight empty when not asked for)."""
    dx, dw, _ = _backward(input, weight, grad_output, rstd, rstd, False, need_weight, False)
    return dx, dw


def _stats(input: torch.Tensor) -> torch.Tensor:
    rows = input.numel() // input.shape[-1] if input.shape[-1] else 0
    return input.new_empty((rows,), dtype=_acc_dtype(input.dtype))


@layer_norm_op.register_fake
def _(input, weight, bias, eps):
    return input.new_empty(input.shape), _stats(input), _stats(input)


@rms_norm_op.register_fake
def _(input, weight, eps):
    return input.new_empty(input.shape), _stats(input)


@layer_norm_backward_op.register_fake
def _(input, weight, grad_output, mean, rstd, need_weight, need_bias):
    d = input.shape[-1]
    dw = input.new_empty((d,) if need_weight and weight is not None else (0,))
    return input.new_empty(input.shape), dw, input.new_empty((d,) if need_bias else (0,))


@rms_norm_backward_op.register_fake
def _(input, weight, grad_output, rstd, need_weight):
    dw = input.new_empty((input.shape[-1],) if need_weight and weight is not None else (0,))
    return input.new_empty(input.shape), dw


def _layer_norm_setup(ctx, inputs, output) -> None:
    x, weight, bias, _ = inputs
    _, mean, rstd = output
    ctx.save_for_backward(x, weight, mean, rstd)
    ctx.has_bias = bias is not None
    ctx.mark_non_differentiable(mean, rstd)


def _layer_norm_backward(ctx, g, _g_mean, _g_rstd):
    x, weight, mean, rstd = ctx.saved_tensors
    need_w = weight is not None and ctx.needs_input_grad[1]
    need_b = ctx.has_bias and ctx.needs_input_grad[2]
    dx, dw, db = layer_norm_backward_op(x, weight, g, mean, rstd, need_w, need_b)
    return dx, dw if need_w else None, db if need_b else None, None


def _rms_norm_setup(ctx, inputs, output) -> None:
    x, weight, _ = inputs
    _, rstd = output
    ctx.save_for_backward(x, weight, rstd)
    ctx.mark_non_differentiable(rstd)


def _rms_norm_backward(ctx, g, _g_rstd):
    x, weight, rstd = ctx.saved_tensors
    need_w = weight is not None and ctx.needs_input_grad[1]
    dx, dw = rms_norm_backward_op(x, weight, g, rstd, need_w)
    return dx, dw if need_w else None, None


layer_norm_op.register_autograd(_layer_norm_backward, setup_context=_layer_norm_setup)
rms_norm_op.register_autograd(_rms_norm_backward, setup_context=_rms_norm_setup)


def _normalized(normalized_shape: int | Sequence[int]) -> tuple[int, ...]:
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in shape):
        raise ValueError(f"normalized_shape must be a non-empty sequence of ints >= 0, got {normalized_shape!r}")
    return shape


def _prepare(input, normalized_shape, params: dict[str, torch.Tensor | None], eps: float):
    """Validate; return (input as (..., D), the params as (D,), the shape to restore)."""
    rt.check_float(input, "input")
    shape = _normalized(normalized_shape)
    k = len(shape)
    if input.dim() < k or tuple(input.shape[input.dim() - k :]) != shape:
        raise ValueError(
            f"normalized_shape {shape} must match the trailing dims of the input, got an input of shape "
            f"{tuple(input.shape)}"
        )
    for name, p in params.items():
        if p is None:
            continue
        rt.check_float(p, name)
        if tuple(p.shape) != shape:
            raise ValueError(f"{name} must have shape {shape} (normalized_shape), got {tuple(p.shape)}")
    rt.check_same_dtype(input=input, **params)
    rt.check_device(input, *params.values())
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0 or math.isinf(eps):
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    d = math.prod(shape)
    # merging the normalized dims is a view when they are laid out as one dim, else a copy
    x = input.reshape(*input.shape[: input.dim() - k], d)
    flat = {name: (None if p is None else p.reshape(d)) for name, p in params.items()}
    return x, flat, tuple(input.shape)


def layer_norm(
    input: torch.Tensor,
    normalized_shape: int | Sequence[int],
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """``torch.nn.functional.layer_norm`` in Triton: (x - mean) / sqrt(var + eps) * weight + bias
    over the trailing ``normalized_shape`` dims (biased variance, computed in two passes)."""
    x, p, shape = _prepare(input, normalized_shape, {"weight": weight, "bias": bias}, eps)
    y, _, _ = layer_norm_op(x, p["weight"], p["bias"], float(eps))
    return y.view(shape)


def rms_norm(
    input: torch.Tensor,
    normalized_shape: int | Sequence[int],
    weight: torch.Tensor | None = None,
    eps: float | None = None,
) -> torch.Tensor:
    """``torch.nn.functional.rms_norm`` in Triton: x / sqrt(mean(x^2) + eps) * weight over the
    trailing ``normalized_shape`` dims; ``eps=None`` is the input dtype's machine epsilon, as torch."""
    if eps is None and isinstance(input, torch.Tensor) and input.is_floating_point():
        eps = torch.finfo(input.dtype).eps
    x, p, shape = _prepare(input, normalized_shape, {"weight": weight}, eps)
    y, _ = rms_norm_op(x, p["weight"], float(eps))
    return y.view(shape)


def group_norm(
    input: torch.Tensor,
    num_groups: int,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """``torch.nn.functional.group_norm`` from our kernels: each (sample, group) row of ``input``
    (N, C, *) standardized by the layer-norm kernel, then the per-channel weight and bias applied
    with the broadcasting elementwise kernels (their backward sums dweight and dbias)."""
    rt.check_float(input, "input")
    if input.dim() < 2:
        raise ValueError(f"group_norm needs an input of shape (N, C, *), got {tuple(input.shape)}")
    num_groups = rt.check_positive_int(num_groups, "num_groups")
    n, c = input.shape[0], input.shape[1]
    if c % num_groups:
        raise ValueError(f"num_groups={num_groups} must divide the number of channels, {c}")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None:
            rt.check_float(p, name)
            if tuple(p.shape) != (c,):
                raise ValueError(f"{name} must have shape ({c},) (the channels), got {tuple(p.shape)}")
    rt.check_same_dtype(input=input, weight=weight, bias=bias)
    rt.check_device(input, weight, bias)
    per_row = c // num_groups * math.prod(input.shape[2:])
    y = layer_norm(input.reshape(n, num_groups, per_row), (per_row,), None, None, eps).view(input.shape)
    channel = (1, c) + (1,) * (input.dim() - 2)
    if weight is not None:
        y = elementwise.mul(y, weight.view(channel))
    if bias is not None:
        y = elementwise.add(y, bias.view(channel))
    return y
