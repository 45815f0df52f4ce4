"""softmax and log_softmax over any dim in Triton: rows in registers or streamed (online max); forward and backward."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kernels import _runtime as rt
from kernels._library import custom_op
from kernels._strided import collapse, strided_offsets

__all__ = [
    "Blocks",
    "RowLayout",
    "log_softmax",
    "log_softmax_op",
    "log_top_plus_rest",
    "online_top_rest",
    "pick_blocks",
    "row_layout",
    "softmax",
    "softmax_op",
]

# Longest row one program keeps in registers: a 16384-long fp32 row is 64 KiB, 32 values per
# thread at 16 warps. Longer rows are streamed in chunks (read twice). Under the interpreter the
# limit is 2048, so the property tests' rows of 2049 and 4097 take the streamed path.
MAX_ROW = 2048 if rt.INTERPRET else 16384
# Largest tile (elements) one program holds in registers, several rows at once.
MAX_TILE = 16384
# Elements per program for short rows (several rows per program): 16 KiB of fp32 in flight per
# program is enough to stream from HBM; the interpreter runs fastest with few, big programs.
TILE = 16384 if rt.INTERPRET else 4096
# Elements per chunk of a streamed row: under the interpreter small enough that a row of 2049
# takes several chunks (so the online rescaling between chunks is exercised).
CHUNK = 1024 if rt.INTERPRET else 4096
# Rows per tile at least, when the rows, not the reduced dim, are contiguous in memory:
# 32 fp32 = 128 bytes, a cache line per reduced index.
ROWS_ACROSS = 32


# ---------------------------------------------------------------------------------------------
# Row layout, shared with kernels.cross_entropy: all dims but one collapse to at most four "row" dims
# ---------------------------------------------------------------------------------------------


@triton.jit
def log_top_plus_rest(c, r):
    """log(c + r), c >= 1 the sum of exp(x - max) over a row's max entries (each 1) and r over the
    rest: log(c) + log1p(r / c), log1p(u) = u log(1 + u) / ((1 + u) - 1) (Goldberg's formula, a
    few ulps), accurate where r << c and log(c + r) would round r away (the max entry's
    log-probability, close to 0). A row of -inf (c = r = 0) gives NaN."""
    u = r / c
    w = 1.0 + u
    return tl.log(c) + tl.where(w == 1.0, u, u * tl.log(w) / (w - 1.0))


@triton.jit
def online_top_rest(m, c, r, x, mask):
    """One chunk ``x`` (BLOCK_R, BLOCK) of rows streamed with a running max ``m`` and sums ``c``
    of exp(x - m) over the entries equal to it and ``r`` over the rest: when the max grows both
    rescale by exp(m - m_new) and the old max entries join the rest. Returns (m, shift, c, r),
    shift = m (0 for a row of -inf so far, where exp gives 0)."""
    m_new = tl.maximum(m, tl.max(x, axis=1))
    shift = tl.where(m_new == -float("inf"), 0.0, m_new)
    alpha = tl.exp(m - shift)
    grew = m_new > m
    r = r * alpha + tl.where(grew, c * alpha, 0.0)
    c = tl.where(grew, 0.0, c)
    e = tl.exp(x - shift[:, None])
    top = mask & (x == m_new[:, None])
    c += tl.sum(tl.where(top, e, 0.0), axis=1)
    r += tl.sum(tl.where(top, 0.0, e), axis=1)
    return m_new, shift, c, r


@dataclass(frozen=True)
class RowLayout:
    """Rows of tensors that share a row shape: ``sizes`` (R1, R2, R3) after collapsing (R0 implied),
    ``strides[i]`` the four row strides of ``tensors[i]`` (copied when its layout did not collapse)."""

    n_rows: int
    sizes: tuple[int, int, int]
    strides: list[list[int]]
    flat: bool
    tensors: tuple[torch.Tensor, ...]


def row_layout(
    row_shape: Sequence[int], tensors: Sequence[torch.Tensor], row_dims: Sequence[Sequence[int]]
) -> RowLayout:
    """Collapse the row dims of ``tensors`` jointly (row i is the same index in each); ``row_dims[i]``
    names the dims of ``tensors[i]`` that make up the rows, in order. A tensor whose layout keeps
    more than four row dims is copied (contiguous, its rows collapse to at most two dims)."""
    strides = [[t.stride(d) for d in dims] for t, dims in zip(tensors, row_dims, strict=True)]
    try:
        sizes, merged = collapse(row_shape, strides)
    except ValueError:
        tensors = [t.contiguous() for t in tensors]
        strides = [[t.stride(d) for d in dims] for t, dims in zip(tensors, row_dims, strict=True)]
        sizes, merged = collapse(row_shape, strides)
    return RowLayout(
        n_rows=math.prod(sizes),
        sizes=(sizes[1], sizes[2], sizes[3]),
        strides=merged,
        flat=sizes[0] * sizes[1] * sizes[2] == 1,
        tensors=tuple(tensors),
    )


@dataclass(frozen=True)
class Blocks:
    """How a row kernel tiles: BLOCK_R rows x BLOCK_L reduced elements per program."""

    rows: int
    length: int
    single: bool  # the whole row fits in one tile (read once)
    num_warps: int


def pick_blocks(n_rows: int, length: int, rows_contiguous: bool) -> Blocks:
    """Tile for rows of ``length`` elements. With ``rows_contiguous`` (the reduced dim is strided,
    neighbouring rows are neighbours in memory) a tile spans at least ROWS_ACROSS rows so loads
    coalesce across rows; otherwise one program takes one long row, or several short ones."""
    full = rt.next_pow2(max(length, 1))
    rows_pow2 = rt.next_pow2(max(n_rows, 1))
    min_rows = ROWS_ACROSS if rows_contiguous else 1
    if full <= MAX_ROW and full * min_rows <= MAX_TILE:
        br = max(min_rows, min(rows_pow2, TILE // full, MAX_TILE // full))
        return Blocks(br, full, True, _warps(br * full))
    br = min(rows_pow2, min_rows)
    bl = max(16, CHUNK // br)
    return Blocks(br, bl, False, _warps(br * bl))


def _warps(tile: int) -> int:
    # about 16 fp32 values per thread for big tiles (8192 -> 16 warps), at least 4 warps
    return min(16, max(4, tile // 512))


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------


@triton.jit
def _softmax_fwd_kernel(
    x_ptr,  # input, any layout
    y_ptr,  # output, contiguous in the input's shape
    n_rows,  # number of rows (every index but the one along dim)
    L,  # row length (size along dim)
    R1,
    R2,
    R3,  # collapsed row dims
    xs0,
    xs1,
    xs2,
    xs3,
    xsl,  # input strides: rows, then along dim
    ys0,
    ys1,
    ys2,
    ys3,
    ysl,  # output strides
    LOG: tl.constexpr,  # log_softmax instead of softmax
    RANK: tl.constexpr,  # collapsed dims the offsets use: 1 (offset = index * stride) or 4
    SINGLE: tl.constexpr,  # the whole row in one tile; else stream it twice
    BLOCK_R: tl.constexpr,  # rows per program
    BLOCK_L: tl.constexpr,  # elements per row per tile
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = rows < n_rows
    x_row = strided_offsets(rows, R1, R2, R3, xs0, xs1, xs2, xs3, RANK)[:, None]
    y_row = strided_offsets(rows, R1, R2, R3, ys0, ys1, ys2, ys3, RANK)[:, None]
    cols = tl.arange(0, BLOCK_L).to(tl.int64)[None, :]  # int64: col * stride can pass 2^31
    acc_ty = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    if SINGLE:
        mask = row_ok[:, None] & (cols < L)
        x = tl.load(x_ptr + x_row + cols * xsl, mask=mask, other=-float("inf")).to(acc_ty)
        m = tl.max(x, axis=1)[:, None]
        # a row of -inf: shift by 0, so exp gives 0, the sum 0, and 0/0 = NaN as in torch
        shift = tl.where(m == -float("inf"), 0.0, m)
        e = tl.exp(x - shift)
        if LOG:
            top = mask & (x == m)
            c = tl.sum(tl.where(top, e, 0.0), axis=1)[:, None]
            r = tl.sum(tl.where(top, 0.0, e), axis=1)[:, None]
            y = (x - shift) - log_top_plus_rest(c, r)
        else:
            y = e / tl.sum(e, axis=1)[:, None]
        tl.store(y_ptr + y_row + cols * ysl, y.to(y_ptr.dtype.element_ty), mask=mask)
    else:
        # pass 1, online: the running max m, the sum c of exp(x - m) over the entries equal to it
        # (each exp(0) = 1) and r over the rest; when the max grows, both rescale by exp(m - m_new)
        # and the old max entries join the rest
        m = tl.full((BLOCK_R,), -float("inf"), acc_ty)
        c = tl.zeros((BLOCK_R,), acc_ty)
        r = tl.zeros((BLOCK_R,), acc_ty)
        for start in range(0, L, BLOCK_L):
            mask = row_ok[:, None] & (cols + start < L)
            x = tl.load(x_ptr + x_row + (cols + start) * xsl, mask=mask, other=-float("inf")).to(acc_ty)
            m, shift, c, r = online_top_rest(m, c, r, x, mask)
        shift = tl.where(m == -float("inf"), 0.0, m)[:, None]
        c = c[:, None]
        r = r[:, None]
        log_s = log_top_plus_rest(c, r)
        # pass 2: normalise
        for start in range(0, L, BLOCK_L):
            mask = row_ok[:, None] & (cols + start < L)
            x = tl.load(x_ptr + x_row + (cols + start) * xsl, mask=mask, other=-float("inf")).to(acc_ty)
            if LOG:
                y = (x - shift) - log_s
            else:
                y = tl.exp(x - shift) / (c + r)
            tl.store(y_ptr + y_row + (cols + start) * ysl, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _softmax_bwd_kernel(
    x_ptr,  # saved forward input, any layout
    g_ptr,  # grad_output, any layout (stride 0 where expanded)
    dx_ptr,  # grad_input, contiguous
    n_rows,
    L,
    R1,
    R2,
    R3,
    xs0,
    xs1,
    xs2,
    xs3,
    xsl,  # input strides
    gs0,
    gs1,
    gs2,
    gs3,
    gsl,  # grad_output strides
    ds0,
    ds1,
    ds2,
    ds3,
    dsl,  # grad_input strides
    LOG: tl.constexpr,  # log_softmax's gradient instead of softmax's
    RANK: tl.constexpr,  # collapsed dims the offsets use: 1 (offset = index * stride) or 4
    SINGLE: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_L: tl.constexpr,
):
    # Both gradients are recomputed from x (e = exp(x - max), s = sum e, p = e / s), never from a
    # saved output rounded to the dtype, and arranged so that no result is a difference of nearly
    # equal rounded numbers where the exact result is small or 0:
    # - g is shifted by k, its value at the row's first element: g' = g - k (exact zeros when g is
    #   constant along the row, and no loss when it nearly is);
    # - softmax: dx = p (g - sum(g p)), and the bracket is invariant to the shift. Split the row
    #   into its max entries (e = 1, c of them, g' summing to G) and the rest (sum r of e, sum T of
    #   g' e): g'_i - sum(g' p) = (c g'_i - G + g'_i r - T) / s with s = c + r. Where p is close to
    #   1 the plain bracket cancels; this one does not.
    # - log_softmax: dx = g - p sum(g) = g'_i + k (s - L e_i) / s - e_i S / s with S = sum g'
    #   (exactly 0 for a constant g and x, where p = 1 / L).
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = rows < n_rows
    x_row = strided_offsets(rows, R1, R2, R3, xs0, xs1, xs2, xs3, RANK)[:, None]
    g_row = strided_offsets(rows, R1, R2, R3, gs0, gs1, gs2, gs3, RANK)[:, None]
    d_row = strided_offsets(rows, R1, R2, R3, ds0, ds1, ds2, ds3, RANK)[:, None]
    cols = tl.arange(0, BLOCK_L).to(tl.int64)[None, :]  # int64: col * stride can pass 2^31
    acc_ty = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    k = tl.load(g_ptr + g_row, mask=row_ok[:, None], other=0.0).to(acc_ty)
    length = tl.cast(L, acc_ty)
    if SINGLE:
        mask = row_ok[:, None] & (cols < L)
        x = tl.load(x_ptr + x_row + cols * xsl, mask=mask, other=-float("inf")).to(acc_ty)
        g = tl.load(g_ptr + g_row + cols * gsl, mask=mask, other=0.0).to(acc_ty)
        g = tl.where(mask, g - k, 0.0)
        m = tl.max(x, axis=1)
        shift = tl.where(m == -float("inf"), 0.0, m)  # a row of -inf: s = 0, NaN as in torch
        e = tl.exp(x - shift[:, None])
        if LOG:
            s = tl.sum(e, axis=1)[:, None]
            big_s = tl.sum(g, axis=1)[:, None]
            dx = g + k * ((s - length * e) / s) - e * (big_s / s)
        else:
            top = mask & (x == m[:, None])
            c = tl.sum(tl.where(top, e, 0.0), axis=1)[:, None]
            big_g = tl.sum(tl.where(top, g, 0.0), axis=1)[:, None]
            r = tl.sum(tl.where(top, 0.0, e), axis=1)[:, None]
            t = tl.sum(tl.where(top, 0.0, g * e), axis=1)[:, None]
            s = c + r
            dx = (e / s) * (((c * g - big_g) + g * r - t) / s)
        tl.store(dx_ptr + d_row + cols * dsl, dx.to(dx_ptr.dtype.element_ty), mask=mask)
    else:
        # pass 1, online: when the max grows, sums of e rescale by exp(m - m_new), and (softmax)
        # the old max entries join the rest
        m = tl.full((BLOCK_R,), -float("inf"), acc_ty)
        c = tl.zeros((BLOCK_R,), acc_ty)
        big_g = tl.zeros((BLOCK_R,), acc_ty)
        r = tl.zeros((BLOCK_R,), acc_ty)  # log_softmax: the whole sum of e
        t = tl.zeros((BLOCK_R,), acc_ty)  # log_softmax: the sum of g'
        for start in range(0, L, BLOCK_L):
            mask = row_ok[:, None] & (cols + start < L)
            x = tl.load(x_ptr + x_row + (cols + start) * xsl, mask=mask, other=-float("inf")).to(acc_ty)
            g = tl.load(g_ptr + g_row + (cols + start) * gsl, mask=mask, other=0.0).to(acc_ty)
            g = tl.where(mask, g - k, 0.0)
            m_new = tl.maximum(m, tl.max(x, axis=1))
            shift = tl.where(m_new == -float("inf"), 0.0, m_new)
            alpha = tl.exp(m - shift)
            e = tl.exp(x - shift[:, None])
            if LOG:
                r = r * alpha + tl.sum(e, axis=1)
                t += tl.sum(g, axis=1)
            else:
                grew = m_new > m
                r = r * alpha + tl.where(grew, c * alpha, 0.0)
                t = t * alpha + tl.where(grew, big_g * alpha, 0.0)
                c = tl.where(grew, 0.0, c)
                big_g = tl.where(grew, 0.0, big_g)
                top = mask & (x == m_new[:, None])
                c += tl.sum(tl.where(top, e, 0.0), axis=1)
                big_g += tl.sum(tl.where(top, g, 0.0), axis=1)
                r += tl.sum(tl.where(top, 0.0, e), axis=1)
                t += tl.sum(tl.where(top, 0.0, g * e), axis=1)
            m = m_new
        shift = tl.where(m == -float("inf"), 0.0, m)[:, None]
        c = c[:, None]
        big_g = big_g[:, None]
        r = r[:, None]
        t = t[:, None]
        s = r if LOG else c + r
        # pass 2
        for start in range(0, L, BLOCK_L):
            mask = row_ok[:, None] & (cols + start < L)
            x = tl.load(x_ptr + x_row + (cols + start) * xsl, mask=mask, other=-float("inf")).to(acc_ty)
            g = tl.load(g_ptr + g_row + (cols + start) * gsl, mask=mask, other=0.0).to(acc_ty)
            g = tl.where(mask, g - k, 0.0)
            e = tl.exp(x - shift)
            if LOG:
                dx = g + k * ((s - length * e) / s) - e * (t / s)
            else:
                dx = (e / s) * (((c * g - big_g) + g * r - t) / s)
            tl.store(dx_ptr + d_row + (cols + start) * dsl, dx.to(dx_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------


def _along(x: torch.Tensor, dim: int) -> tuple[list[int], tuple[int, ...]]:
    """The dims of ``x`` other than ``dim`` and their sizes."""
    dims = [d for d in range(x.dim()) if d != dim]
    return dims, tuple(x.shape[d] for d in dims)


def _launch(kernel, dim: int, tensors: Sequence[torch.Tensor], **flags: bool) -> None:
    """Run a row kernel over ``tensors`` (all of one shape, reduced along ``dim``); the first one
    decides the tile orientation."""
    dims, row_shape = _along(tensors[0], dim)
    layout = row_layout(row_shape, tensors, [dims] * len(tensors))
    length = tensors[0].shape[dim]
    first = layout.tensors[0]
    rows_contiguous = first.stride(dim) != 1 and layout.strides[0][3] == 1
    blocks = pick_blocks(layout.n_rows, length, rows_contiguous)
    strides = []
    for t, st in zip(layout.tensors, layout.strides, strict=True):
        strides += [*st, t.stride(dim)]
    kernel[(rt.cdiv(layout.n_rows, blocks.rows),)](
        *layout.tensors,
        layout.n_rows,
        length,
        *layout.sizes,
        *strides,
        **flags,
        RANK=1 if layout.flat else 4,
        SINGLE=blocks.single,
        BLOCK_R=blocks.rows,
        BLOCK_L=blocks.length,
        num_warps=blocks.num_warps,
    )


def _forward(x: torch.Tensor, dim: int, log: bool) -> torch.Tensor:
    """softmax (log_softmax when ``log``) of ``x`` (at least 1-d) along the non-negative ``dim``."""
    y = rt.empty_like(x)
    if y.numel():
        _launch(_softmax_fwd_kernel, dim, (x, y), LOG=log)
    return y


def _backward(x: torch.Tensor, g: torch.Tensor, dim: int, log: bool) -> torch.Tensor:
    """grad_input from the saved input and grad_output."""
    dx = rt.empty_like(x)
    if dx.numel():
        _launch(_softmax_bwd_kernel, dim, (x, g, dx), LOG=log)
    return dx


# ---------------------------------------------------------------------------------------------
# Custom ops (torch.ops.blitz.softmax, log_softmax and their _backward) and the public API
# ---------------------------------------------------------------------------------------------


@custom_op("softmax")
def softmax_op(input: torch.Tensor, dim: int) -> torch.Tensor:
    """softmax of a floating tensor of at least one dim along the non-negative ``dim`` (the public
    functions check both), in a new contiguous tensor."""
    return _forward(input, dim, log=False)


@custom_op("log_softmax")
def log_softmax_op(input: torch.Tensor, dim: int) -> torch.Tensor:
    """log_softmax along ``dim``, as ``softmax_op``."""
    return _forward(input, dim, log=True)


@custom_op("softmax_backward")
def softmax_backward_op(input: torch.Tensor, grad_output: torch.Tensor, dim: int) -> torch.Tensor:
    """grad_input of softmax, recomputed from the saved input (see _softmax_bwd_kernel)."""
    return _backward(input, grad_output, dim, log=False)


@custom_op("log_softmax_backward")
def log_softmax_backward_op(input: torch.Tensor, grad_output: torch.Tensor, dim: int) -> torch.Tensor:
    """grad_input of log_softmax, recomputed from the saved input."""
    return _backward(input, grad_output, dim, log=True)


@softmax_op.register_fake
@log_softmax_op.register_fake
def _(input, dim):
    return input.new_empty(input.shape)


@softmax_backward_op.register_fake
@log_softmax_backward_op.register_fake
def _(input, grad_output, dim):
    return input.new_empty(input.shape)


def _setup_context(ctx, inputs, output) -> None:
    # saves the input, not the output: the backward recomputes exp(x - max)
    x, dim = inputs
    ctx.save_for_backward(x)
    ctx.dim = dim


def _softmax_backward(ctx, g: torch.Tensor):
    (x,) = ctx.saved_tensors
    return softmax_backward_op(x, g, ctx.dim), None


def _log_softmax_backward(ctx, g: torch.Tensor):
    (x,) = ctx.saved_tensors
    return log_softmax_backward_op(x, g, ctx.dim), None


softmax_op.register_autograd(_softmax_backward, setup_context=_setup_context)
log_softmax_op.register_autograd(_log_softmax_backward, setup_context=_setup_context)


def _apply(input: torch.Tensor, dim: int, dtype: torch.dtype | None, log: bool) -> torch.Tensor:
    """Validate, apply torch's ``dtype=`` option (a cast of the input first: torch's, and
    differentiable) and run the op; a 0-d input is one element along the only dim."""
    x = input if dtype is None or not isinstance(input, torch.Tensor) else input.to(dtype)
    rt.check_float(x, "input")
    op = log_softmax_op if log else softmax_op
    if x.dim() == 0:  # softmax 1, log_softmax 0
        rt.canonical_dim(dim, 0)
        return op(x.reshape(1), 0).reshape(())
    return op(x, rt.canonical_dim(dim, x.dim()))


def softmax(input: torch.Tensor, dim: int, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``torch.nn.functional.softmax`` in Triton: exp(x - max) / sum along ``dim``."""
    return _apply(input, dim, dtype, log=False)


def log_softmax(input: torch.Tensor, dim: int, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``torch.nn.functional.log_softmax`` in Triton: (x - max) - log(sum(exp(x - max))) along ``dim``."""
    return _apply(input, dim, dtype, log=True)
