"""sum, mean, amax/amin and max/min along dims in Triton: any strides, one pass, no atomics."""

from __future__ import annotations

import builtins
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kernels import _runtime as rt
from kernels._library import custom_op
from kernels._strided import collapse, int64_indexing, strided_offsets
from kernels._sums import acc_dtype

__all__ = [
    "PROLOGUE_DIV",
    "PROLOGUE_DIV_OTHER",
    "PROLOGUE_MUL",
    "PROLOGUE_NEG",
    "PROLOGUE_NONE",
    "amax",
    "amin",
    "div_rn",
    "max",
    "mean",
    "min",
    "reduce_sum",
    "reduction_dims",
    "sum",
]

# What the sum kernel adds up, per element of its operands (p0, p1, p2): the plain sum, and the
# terms of the binary ops' backward reduced over broadcast dims (p0 = grad_output, p1 = input,
# p2 = other; see kernels/elementwise.py).
PROLOGUE_NONE = 0  # p0
PROLOGUE_NEG = 1  # -p0                      (sub: grad of other)
PROLOGUE_MUL = 2  # p0 * p1                  (mul)
PROLOGUE_DIV = 3  # p0 / p1                  (div: grad of input)
PROLOGUE_DIV_OTHER = 4  # -p0 * ((p1 / p2) / p2)  (div: grad of other, torch's rounding order)


#: Elements one program loads per loop step: 4096 keeps 16 fp32 values per thread in flight with 8
#: warps on a GPU; under the interpreter (whose cost is per op, hardly per element) rows past 4096,
#: which the strategies draw, still take the loop.
_TILE = 4096
#: Rows per tile when rows are the contiguous axis: 256 rows of fp32 are 1 KiB per load, coalesced;
#: the interpreter takes as many as fit (fewer programs).
_ROW_CAP = _TILE if rt.INTERPRET else 256
#: A split of the reduction (second kernel pass over the partial results) only pays off when each
#: split still reads at least this many elements per row.
_SPLIT_MIN = 4096


# ---------------------------------------------------------------------------------------------
# Triton kernels
# ---------------------------------------------------------------------------------------------


@triton.jit
def div_rn(a, b):
    """a / b correctly rounded: ``tl.div_rn`` for fp32 (plain ``/`` on fp32 is approximate on a
    GPU), ``/`` for fp64 (which is IEEE there)."""
    q = a / b if a.dtype == tl.float64 else tl.div_rn(a, b)
    return q


@triton.jit(do_not_specialize=["divisor"])
def _sum_kernel(
    p0_ptr,  # operand 0 (the tensor summed, or grad_output for a binary op's backward)
    p1_ptr,  # operand 1 (unused unless PROLOGUE >= 2)
    p2_ptr,  # operand 2 (unused unless PROLOGUE == 4)
    out_ptr,  # sums, contiguous (M, n_splits): one per row, or one partial per row and split
    M,  # rows (kept elements)
    K,  # columns summed per row
    k_per_split,  # columns per program along grid axis 1 (K when the reduction is not split)
    divisor,  # MEAN: the whole reduction length, which the result is divided by
    R1, R2, R3,  # collapsed row sizes (R0 is implied by M)
    C1, C2, C3,  # collapsed column sizes (C0 is implied by K)
    a_r0, a_r1, a_r2, a_r3, a_c0, a_c1, a_c2, a_c3,  # operand 0: row strides, column strides
    b_r0, b_r1, b_r2, b_r3, b_c0, b_c1, b_c2, b_c3,  # operand 1
    c_r0, c_r1, c_r2, c_r3, c_c0, c_c1, c_c2, c_c3,  # operand 2
    PROLOGUE: tl.constexpr,  # the term summed: 0 p0, 1 -p0, 2 p0*p1, 3 p0/p1, 4 -p0*((p1/p2)/p2)
    MEAN: tl.constexpr,  # divide the total by divisor
    ROW_RANK: tl.constexpr,  # collapsed row dims in use (1..4)
    COL_RANK: tl.constexpr,  # collapsed column dims in use (1..4)
    INT64: tl.constexpr,  # indices and offsets need 64 bits
    BLOCK_M: tl.constexpr,  # rows per program
    BLOCK_K: tl.constexpr,  # columns per loop step
):
    pid_m = tl.program_id(0)
    pid_s = tl.program_id(1)
    if INT64:
        rows = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
        k_start = pid_s.to(tl.int64) * k_per_split
    else:
        rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        k_start = pid_s * k_per_split
    row_mask = rows < M
    k_end = tl.minimum(k_start + k_per_split, K)
    acc_t = tl.float64 if p0_ptr.dtype.element_ty == tl.float64 else tl.float32
    a_rows = strided_offsets(rows, R1, R2, R3, a_r0, a_r1, a_r2, a_r3, ROW_RANK)
    if PROLOGUE >= 2:
        b_rows = strided_offsets(rows, R1, R2, R3, b_r0, b_r1, b_r2, b_r3, ROW_RANK)
    if PROLOGUE == 4:
        c_rows = strided_offsets(rows, R1, R2, R3, c_r0, c_r1, c_r2, c_r3, ROW_RANK)
    acc = tl.zeros([BLOCK_M, BLOCK_K], dtype=acc_t)
    for k0 in range(k_start, k_end, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        mask = row_mask[:, None] & (cols < k_end)[None, :]
        a_cols = strided_offsets(cols, C1, C2, C3, a_c0, a_c1, a_c2, a_c3, COL_RANK)
        term = tl.load(p0_ptr + (a_rows[:, None] + a_cols[None, :]), mask=mask, other=0.0).to(acc_t)
        if PROLOGUE == 1:
            term = -term
        elif PROLOGUE >= 2:
            b_cols = strided_offsets(cols, C1, C2, C3, b_c0, b_c1, b_c2, b_c3, COL_RANK)
            b = tl.load(p1_ptr + (b_rows[:, None] + b_cols[None, :]), mask=mask, other=1.0).to(acc_t)
            if PROLOGUE == 2:
                term = term * b
            elif PROLOGUE == 3:
                term = div_rn(term, b)
            else:
                c_cols = strided_offsets(cols, C1, C2, C3, c_c0, c_c1, c_c2, c_c3, COL_RANK)
                c = tl.load(p2_ptr + (c_rows[:, None] + c_cols[None, :]), mask=mask, other=1.0).to(acc_t)
                term = -term * div_rn(div_rn(b, c), c)
        acc += tl.where(mask, term, 0.0)
    total = tl.sum(acc, axis=1)
    if MEAN:
        total = div_rn(total, divisor.to(acc_t))
    tl.store(out_ptr + rows * tl.num_programs(1) + pid_s, total.to(out_ptr.dtype.element_ty), mask=row_mask)


@triton.jit
def _max_kernel(
    x_ptr,  # values, or the partial maxima of a split first pass (contiguous (M, splits))
    aux_in_ptr,  # AUX_IN: the partial indices or counts next to x (contiguous (M, splits)); else unused
    out_ptr,  # maxima, contiguous (M, n_splits)
    aux_ptr,  # int64 indices of the first maximum (INDEX) or counts of ties (else), same layout
    M,  # rows (kept elements)
    K,  # columns reduced per row
    k_per_split,  # columns per program along grid axis 1 (K when not split)
    R1, R2, R3,  # collapsed row sizes (R0 is implied by M)
    C1, C2, C3,  # collapsed column sizes (C0 is implied by K)
    r0, r1, r2, r3,  # row strides of x (and of aux_in)
    c0, c1, c2, c3,  # column strides of x (and of aux_in)
    INDEX: tl.constexpr,  # track the index of the first maximum (max/min); else count ties (amax/amin)
    AUX_IN: tl.constexpr,  # second pass: combine (value, aux) pairs instead of raw values
    NEG_IN: tl.constexpr,  # negate loaded values (a minimum is the maximum of the negated values)
    NEG_OUT: tl.constexpr,  # negate stored values
    ROW_RANK: tl.constexpr,
    COL_RANK: tl.constexpr,
    INT64: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_s = tl.program_id(1)
    if INT64:
        rows = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
        k_start = pid_s.to(tl.int64) * k_per_split
        aux_t = tl.int64
    else:
        rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        k_start = pid_s * k_per_split
        aux_t = tl.int32
    row_mask = rows < M
    k_end = tl.minimum(k_start + k_per_split, K)
    acc_t = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    x_rows = strided_offsets(rows, R1, R2, R3, r0, r1, r2, r3, ROW_RANK)
    best = tl.full([BLOCK_M, BLOCK_K], float("-inf"), dtype=acc_t)
    # INDEX: the column of the best value so far (-1: none yet); else how many elements equal it
    aux = tl.full([BLOCK_M, BLOCK_K], -1, dtype=aux_t) if INDEX else tl.zeros([BLOCK_M, BLOCK_K], dtype=aux_t)
    for k0 in range(k_start, k_end, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        mask = row_mask[:, None] & (cols < k_end)[None, :]
        offs = x_rows[:, None] + strided_offsets(cols, C1, C2, C3, c0, c1, c2, c3, COL_RANK)[None, :]
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(acc_t)
        if NEG_IN:
            x = -x
        if AUX_IN:
            incoming = tl.load(aux_in_ptr + offs, mask=mask, other=0).to(aux_t)
        elif INDEX:
            incoming = tl.zeros([BLOCK_M, BLOCK_K], dtype=aux_t) + cols[None, :]
        else:
            incoming = tl.full([BLOCK_M, BLOCK_K], 1, dtype=aux_t)
        # a lane sees its columns in increasing order, so only a strictly better value replaces
        # the best one (the first maximum stays); a NaN is better than any number
        better = (x > best) | ((x != x) & (best == best))
        if INDEX:
            take = mask & (better | (aux < 0))
            aux = tl.where(take, incoming, aux)
        else:
            take = mask & better
            aux = tl.where(take, incoming, tl.where(mask & (x == best), aux + incoming, aux))
        best = tl.where(take, x, best)
    # across lanes with built-in reductions (a custom combine runs element by element in the
    # interpreter): the row's maximum, NaN if any lane holds one, and the lanes that hold it
    lane_nan = best != best
    row_nan = tl.max(lane_nan.to(tl.int32), axis=1) > 0
    value = tl.max(tl.where(lane_nan, float("-inf"), best), axis=1)
    hit = tl.where(row_nan[:, None], lane_nan, best == value[:, None])
    if INDEX:
        # the first index among the lanes holding the maximum; lanes that saw no column hold -1
        none = 2**62 if INT64 else 2**31 - 1  # above every index (in a second pass K counts splits)
        aux_out = tl.min(tl.where(hit & (aux >= 0), aux, none), axis=1)
    else:
        aux_out = tl.sum(tl.where(hit, aux, 0), axis=1)
    value = tl.where(row_nan, float("nan"), value)
    if NEG_OUT:
        value = -value
    out_offs = rows * tl.num_programs(1) + pid_s
    tl.store(out_ptr + out_offs, value.to(out_ptr.dtype.element_ty), mask=row_mask)
    tl.store(aux_ptr + out_offs, aux_out.to(aux_ptr.dtype.element_ty), mask=row_mask)


@triton.jit
def _select_bwd_kernel(
    x_ptr,  # input of amax/amin (unused for max/min), rows x columns at any strides
    y_ptr,  # amax/amin result, contiguous over rows (unused for max/min)
    aux_ptr,  # int64: tie counts (amax/amin) or the indices picked (max/min), contiguous over rows
    g_ptr,  # grad of the result, rows at any strides
    dx_ptr,  # grad of the input, rows x columns at the strides of its layout
    M,  # rows
    K,  # columns (reduced elements per row)
    n_col_blocks,  # cdiv(K, BLOCK_K): program ids enumerate (row block, column block)
    R1, R2, R3,  # collapsed row sizes (R0 is implied by M)
    C1, C2, C3,  # collapsed column sizes (C0 is implied by K)
    x_r0, x_r1, x_r2, x_r3, x_c0, x_c1, x_c2, x_c3,  # input strides
    g_r0, g_r1, g_r2, g_r3,  # grad_output row strides
    d_r0, d_r1, d_r2, d_r3, d_c0, d_c1, d_c2, d_c3,  # grad_input strides
    INDEX: tl.constexpr,  # max/min: the gradient goes to the indexed column; else split among ties
    ROW_RANK: tl.constexpr,
    COL_RANK: tl.constexpr,
    INT64: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    if INT64:
        pid = pid.to(tl.int64)
    rows = (pid // n_col_blocks) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = (pid % n_col_blocks) * BLOCK_K + tl.arange(0, BLOCK_K)
    row_mask = rows < M
    mask = row_mask[:, None] & (cols < K)[None, :]
    acc_t = tl.float64 if g_ptr.dtype.element_ty == tl.float64 else tl.float32
    g = tl.load(g_ptr + strided_offsets(rows, R1, R2, R3, g_r0, g_r1, g_r2, g_r3, ROW_RANK), mask=row_mask).to(acc_t)
    aux = tl.load(aux_ptr + rows, mask=row_mask, other=0)
    if INDEX:
        dx = tl.where(cols[None, :] == aux[:, None], g[:, None], 0.0)
    else:
        y = tl.load(y_ptr + rows, mask=row_mask, other=0.0).to(acc_t)
        # torch: (g / count) * (x == y); a NaN row has no element equal to y, count 0, and
        # g / 0 * 0 = NaN everywhere in it
        share = tl.where(y != y, float("nan"), div_rn(g, aux.to(acc_t)))
        x_offs = (strided_offsets(rows, R1, R2, R3, x_r0, x_r1, x_r2, x_r3, ROW_RANK)[:, None]
                  + strided_offsets(cols, C1, C2, C3, x_c0, x_c1, x_c2, x_c3, COL_RANK)[None, :])
        x = tl.load(x_ptr + x_offs, mask=mask, other=0.0).to(acc_t)
        dx = tl.where((x == y[:, None]) | (y != y)[:, None], share[:, None], 0.0)
    d_offs = (strided_offsets(rows, R1, R2, R3, d_r0, d_r1, d_r2, d_r3, ROW_RANK)[:, None]
              + strided_offsets(cols, C1, C2, C3, d_c0, d_c1, d_c2, d_c3, COL_RANK)[None, :])
    tl.store(dx_ptr + d_offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------------
# Layout planning: rows = kept dims, columns = reduced dims, each collapsed to at most 4 dims
# ---------------------------------------------------------------------------------------------


def reduction_dims(dim: int | Sequence[int] | None, ndim: int, name: str = "dim") -> tuple[int, ...]:
    """``dim`` (an int, a sequence of ints, or None/() for every dim) as sorted non-negative dims."""
    if dim is None:
        return tuple(range(ndim))
    if isinstance(dim, int) and not isinstance(dim, bool):
        dims = [dim]
    elif isinstance(dim, Sequence) and not isinstance(dim, str):
        dims = list(dim)
        if not dims:
            return tuple(range(ndim))
    else:
        raise TypeError(f"{name} must be an int, a tuple of ints or None, got {type(dim).__name__}")
    out = [rt.canonical_dim(d, ndim, name) for d in dims]
    seen: set[int] = set()
    for d, c in zip(dims, out, strict=True):
        if c in seen:
            raise ValueError(f"{name}={tuple(dims)}: dim {d} appears more than once")
        seen.add(c)
    return tuple(sorted(seen)) if ndim else ()


def _rank(sizes: Sequence[int]) -> int:
    """Collapsed dims in use: the leading size-1 padding costs nothing."""
    lead = 0
    while lead < len(sizes) - 1 and sizes[lead] == 1:
        lead += 1
    return len(sizes) - lead


@dataclass
class _Layout:
    """A (rows x columns) view of tensors of one shape: rows are the kept dims, columns the reduced
    ones, each group collapsed to 4 dims (``kernels._strided.collapse``)."""

    rows: list[int]  # collapsed row sizes, outermost first
    cols: list[int]  # collapsed column sizes
    row_strides: list[list[int]]  # per tensor
    col_strides: list[list[int]]  # per tensor
    M: int
    K: int

    @property
    def row_rank(self) -> int:
        return _rank(self.rows)

    @property
    def col_rank(self) -> int:
        return _rank(self.cols)

    def strides(self, i: int, *, cols: bool = True) -> list[int]:
        return self.row_strides[i] + (self.col_strides[i] if cols else [])

    def rows_contiguous(self) -> bool:
        """Whether memory runs along the rows (reducing outer dims) rather than the columns."""
        for rs, cs in zip(self.row_strides, self.col_strides, strict=True):
            if self.cols[-1] > 1 and cs[-1] == 1:
                return False
            if self.rows[-1] > 1 and rs[-1] == 1:
                return True
        return False


def _aligned(t: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """``t`` broadcast to ``shape`` (a view: leading dims added, size-1 dims expanded)."""
    return t[(None,) * (len(shape) - t.dim())].expand(tuple(shape))


def _kept_outer(shape: Sequence[int], dims: Sequence[int]) -> tuple[list[int], list[int]]:
    """The dim order with the kept dims outermost, and its inverse permutation."""
    order = [d for d in range(len(shape)) if d not in dims] + list(dims)
    return order, [order.index(d) for d in range(len(shape))]


def _plan(shape: Sequence[int], dims: Sequence[int], tensors: Sequence[torch.Tensor]) -> _Layout:
    """Rows x columns view of ``tensors`` (each already of ``shape``); ``ValueError`` when a group
    does not collapse to 4 dims for all of them."""
    kept = [d for d in range(len(shape)) if d not in dims]
    row_sizes, row_strides = collapse([shape[d] for d in kept], [[t.stride(d) for d in kept] for t in tensors])
    col_sizes, col_strides = collapse([shape[d] for d in dims], [[t.stride(d) for d in dims] for t in tensors])
    m = math.prod(shape[d] for d in kept)
    k = math.prod(shape[d] for d in dims)
    return _Layout(row_sizes, col_sizes, row_strides, col_strides, m, k)


def _plan_inputs(
    shape: Sequence[int], dims: Sequence[int], inputs: Sequence[torch.Tensor], outputs: Sequence[torch.Tensor] = ()
) -> tuple[_Layout, list[torch.Tensor]]:
    """:func:`_plan` for ``inputs`` broadcastable to ``shape`` and ``outputs`` of ``shape`` laid out
    with the kept dims outermost (or contiguous). When the layouts do not collapse (five or more
    dims that cannot merge: rare), the inputs are copied in that order (before broadcasting, so a
    stride-0 dim is not materialised), after which rows and columns are one dim each."""
    aligned = [_aligned(t, shape) for t in inputs]
    try:
        return _plan(shape, dims, [*aligned, *outputs]), aligned
    except ValueError:
        order, inverse = _kept_outer(shape, dims)
        copies = [t[(None,) * (len(shape) - t.dim())].permute(order).contiguous().permute(inverse) for t in inputs]
        aligned = [c.expand(tuple(shape)) for c in copies]
        return _plan(shape, dims, [*aligned, *outputs]), aligned


@functools.cache
def _sm_count() -> int:
    return torch.cuda.get_device_properties(rt.device()).multi_processor_count


def _tiles(m: int, k: int, rows_contiguous: bool) -> tuple[int, int]:
    """(BLOCK_M, BLOCK_K): a tile of about ``_TILE`` elements, long along the axis memory runs on."""
    if rows_contiguous:
        block_m = builtins.min(rt.next_pow2(m), _ROW_CAP)
        block_k = builtins.min(rt.next_pow2(k), builtins.max(1, _TILE // block_m))
    else:
        block_k = builtins.min(rt.next_pow2(k), _TILE)
        block_m = builtins.min(rt.next_pow2(m), builtins.max(1, _TILE // block_k))
    return block_m, block_k


def _num_warps(block_m: int, block_k: int) -> int:
    """About 16 elements per thread, between 1 and 8 warps."""
    return builtins.max(1, builtins.min(8, block_m * block_k // 512))


def _splits(m: int, k: int, block_m: int, block_k: int) -> tuple[int, int]:
    """(number of splits, columns per split) of the reduction: a second, tiny pass over per-split
    partial results keeps the GPU busy when there are few rows, without atomics (deterministic)."""
    row_programs = rt.cdiv(m, block_m)
    target = 2 if rt.INTERPRET else 2 * _sm_count()  # two waves of programs
    if row_programs >= target or k < 2 * _SPLIT_MIN:
        return 1, builtins.max(k, 1)
    n = builtins.min(rt.cdiv(target, row_programs), rt.cdiv(k, _SPLIT_MIN))
    per = rt.cdiv(rt.cdiv(k, n), block_k) * block_k  # whole loop steps per split
    return rt.cdiv(k, per), per


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------


def reduce_sum(
    operands: Sequence[torch.Tensor],
    shape: Sequence[int],
    dims: Sequence[int],
    out_shape: Sequence[int],
    *,
    prologue: int = PROLOGUE_NONE,
    divisor: int | None = None,
) -> torch.Tensor:
    """Sum of a per-element term of ``operands`` (broadcastable to ``shape``) over ``dims``, in a
    new contiguous tensor of ``out_shape`` (the kept sizes, in order, with or without size-1 dims);
    accumulated in fp32 (fp64 for fp64) and divided by ``divisor`` when given (mean). One pass over
    the operands; with few rows the reduction is split and a second pass sums the partials."""
    dtype = operands[0].dtype
    out = rt.empty(out_shape, dtype=dtype, device=operands[0].device)
    layout, ops = _plan_inputs(shape, dims, operands)
    if layout.M == 0:
        return out
    block_m, block_k = _tiles(layout.M, layout.K, layout.rows_contiguous())
    n_splits, per_split = _splits(layout.M, layout.K, block_m, block_k)
    int64 = int64_indexing(*ops, n=layout.M * n_splits)
    strides = [layout.strides(i) for i in range(len(ops))]
    strides += [[0] * 8] * (3 - len(ops))
    ptrs = [*ops, *[ops[0]] * (3 - len(ops))]
    target = out if n_splits == 1 else rt.empty((layout.M, n_splits), dtype=acc_dtype(dtype), device=out.device)
    _sum_kernel[(rt.cdiv(layout.M, block_m), n_splits)](
        *ptrs, target, layout.M, layout.K, per_split, 1 if divisor is None else divisor,
        *layout.rows[1:], *layout.cols[1:], *strides[0], *strides[1], *strides[2],
        PROLOGUE=prologue, MEAN=divisor is not None and n_splits == 1,
        ROW_RANK=layout.row_rank, COL_RANK=layout.col_rank, INT64=int64,
        BLOCK_M=block_m, BLOCK_K=block_k, num_warps=_num_warps(block_m, block_k),
    )  # fmt: skip
    if n_splits > 1:
        block_m, block_k = _tiles(layout.M, n_splits, False)
        _sum_kernel[(rt.cdiv(layout.M, block_m), 1)](
            target, target, target, out, layout.M, n_splits, n_splits, 1 if divisor is None else divisor,
            1, 1, 1, 1, 1, 1, *([0, 0, 0, n_splits, 0, 0, 0, 1] * 3),
            PROLOGUE=PROLOGUE_NONE, MEAN=divisor is not None, ROW_RANK=1, COL_RANK=1, INT64=int64,
            BLOCK_M=block_m, BLOCK_K=block_k, num_warps=_num_warps(block_m, block_k),
        )  # fmt: skip
    return out


def _reduce_max(
    x: torch.Tensor, dims: Sequence[int], out_shape: Sequence[int], *, index: bool, negate: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Maximum (minimum when ``negate``) over ``dims`` and, per row, the int64 index of the first
    one along the single reduced dim (``index``) or how many elements equal it."""
    y = rt.empty(out_shape, dtype=x.dtype, device=x.device)
    aux = rt.empty(out_shape, dtype=torch.int64, device=x.device)
    layout, (xs,) = _plan_inputs(x.shape, dims, [x])
    if layout.M == 0:
        return y, aux
    block_m, block_k = _tiles(layout.M, layout.K, layout.rows_contiguous())
    n_splits, per_split = _splits(layout.M, layout.K, block_m, block_k)
    int64 = int64_indexing(xs, n=builtins.max(layout.K, layout.M * n_splits))
    if n_splits == 1:
        values, counts = y, aux
    else:
        values = rt.empty((layout.M, n_splits), dtype=x.dtype, device=x.device)
        counts = rt.empty((layout.M, n_splits), dtype=torch.int64, device=x.device)
    _max_kernel[(rt.cdiv(layout.M, block_m), n_splits)](
        xs, xs, values, counts, layout.M, layout.K, per_split,
        *layout.rows[1:], *layout.cols[1:], *layout.strides(0),
        INDEX=index, AUX_IN=False, NEG_IN=negate, NEG_OUT=negate and n_splits == 1,
        ROW_RANK=layout.row_rank, COL_RANK=layout.col_rank, INT64=int64,
        BLOCK_M=block_m, BLOCK_K=block_k, num_warps=_num_warps(block_m, block_k),
    )  # fmt: skip
    if n_splits > 1:
        block_m, block_k = _tiles(layout.M, n_splits, False)
        _max_kernel[(rt.cdiv(layout.M, block_m), 1)](
            values, counts, y, aux, layout.M, n_splits, n_splits,
            1, 1, 1, 1, 1, 1, 0, 0, 0, n_splits, 0, 0, 0, 1,
            INDEX=index, AUX_IN=True, NEG_IN=False, NEG_OUT=negate, ROW_RANK=1, COL_RANK=1, INT64=int64,
            BLOCK_M=block_m, BLOCK_K=block_k, num_warps=_num_warps(block_m, block_k),
        )  # fmt: skip
    return y, aux


def _select_backward(
    shape: Sequence[int],
    dims: Sequence[int],
    x: torch.Tensor | None,
    y: torch.Tensor | None,
    aux: torch.Tensor,
    g: torch.Tensor,
) -> torch.Tensor:
    """Gradient of amax/amin (``x`` and ``y`` given: g / count to every element of ``x`` equal to
    the result ``y``) or of max/min along a dim (``x`` None: g to the element at the index in
    ``aux``). ``y``, ``aux`` and ``g`` have the reduced shape, with or without size-1 dims."""
    shape = list(shape)
    keep = [1 if d in dims else s for d, s in enumerate(shape)]
    g = g.reshape(keep)  # a view: only size-1 dims are added
    dx = rt.empty(shape, dtype=g.dtype, device=g.device)
    if dx.numel() == 0:
        return dx
    inputs = [x if x is not None else g, g]
    try:
        layout, (xs, gs) = _plan_inputs(shape, dims, inputs, [dx])
    except ValueError:  # dx itself does not collapse (nine or more dims): lay it out kept dims outermost
        order, inverse = _kept_outer(shape, dims)
        dx = rt.empty([shape[d] for d in order], dtype=g.dtype, device=g.device).permute(inverse)
        layout, (xs, gs) = _plan_inputs(shape, dims, inputs, [dx])
    block_m, block_k = _tiles(layout.M, layout.K, layout.rows_contiguous())
    n_col_blocks = rt.cdiv(layout.K, block_k)
    programs = rt.cdiv(layout.M, block_m) * n_col_blocks
    int64 = int64_indexing(xs, gs, dx, n=programs * builtins.max(block_m, block_k))
    _select_bwd_kernel[(programs,)](
        xs, y if y is not None else aux, aux, gs, dx, layout.M, layout.K, n_col_blocks,
        *layout.rows[1:], *layout.cols[1:],
        *layout.strides(0), *layout.strides(1, cols=False), *layout.strides(2),
        INDEX=x is None, ROW_RANK=layout.row_rank, COL_RANK=layout.col_rank, INT64=int64,
        BLOCK_M=block_m, BLOCK_K=block_k, num_warps=_num_warps(block_m, block_k),
    )  # fmt: skip
    return dx


# ---------------------------------------------------------------------------------------------
# Custom ops (torch.ops.blitz.<name>, <name>_backward) and the public API
# ---------------------------------------------------------------------------------------------


def _out_shape(shape: Sequence[int], dims: Sequence[int], keepdim: bool) -> list[int]:
    if keepdim:
        return [1 if d in dims else s for d, s in enumerate(shape)]
    return [s for d, s in enumerate(shape) if d not in dims]


def _grad_view(g: torch.Tensor, shape: Sequence[int], dims: Sequence[int]) -> torch.Tensor:
    """``g`` (the reduced shape, with or without size-1 dims) as a stride-0 view of ``shape``."""
    keep = [1 if d in dims else s for d, s in enumerate(shape)]
    return g.reshape(keep).expand(tuple(shape))


def _reduced_count(shape: Sequence[int], dims: Sequence[int]):
    return math.prod(shape[d] for d in dims)


# sum / mean -----------------------------------------------------------------------------------


@custom_op("sum")
def sum_op(input: torch.Tensor, dim: Sequence[int], keepdim: bool) -> torch.Tensor:
    """Sum over the sorted, non-negative, distinct ``dim`` (empty for a 0-d input: a copy), in a new
    contiguous tensor; accumulated in fp32 (fp64 for fp64)."""
    return reduce_sum([input], input.shape, dim, _out_shape(input.shape, dim, keepdim))


@custom_op("mean")
def mean_op(input: torch.Tensor, dim: Sequence[int], keepdim: bool) -> torch.Tensor:
    """Mean over ``dim`` (as ``sum_op``); over no elements NaN."""
    return reduce_sum(
        [input], input.shape, dim, _out_shape(input.shape, dim, keepdim), divisor=_reduced_count(input.shape, dim)
    )


@sum_op.register_fake
@mean_op.register_fake
def _(input, dim, keepdim):
    return input.new_empty(_out_shape(input.shape, dim, keepdim))


@custom_op("mean_backward")
def mean_backward_op(grad_output: torch.Tensor, count: int) -> torch.Tensor:
    """grad_output / count, once per output element (torch rounds the same way); the autograd
    backward broadcasts it over the reduced dims."""
    return reduce_sum([grad_output], grad_output.shape, (), grad_output.shape, divisor=count)


@mean_backward_op.register_fake
def _(grad_output, count):
    return grad_output.new_empty(grad_output.shape)


def _sum_setup_context(ctx, inputs, output) -> None:
    x, dim, _ = inputs
    ctx.shape, ctx.dims = x.shape, dim


def _sum_backward(ctx, g: torch.Tensor):
    # grad_output broadcast back over the reduced dims: a stride-0 view, as torch's sum backward
    return _grad_view(g, ctx.shape, ctx.dims), None, None


def _mean_backward(ctx, g: torch.Tensor):
    g = mean_backward_op(g, _reduced_count(ctx.shape, ctx.dims))
    return _grad_view(g, ctx.shape, ctx.dims), None, None


sum_op.register_autograd(_sum_backward, setup_context=_sum_setup_context)
mean_op.register_autograd(_mean_backward, setup_context=_sum_setup_context)


# amax / amin ----------------------------------------------------------------------------------


@custom_op("amax")
def amax_op(input: torch.Tensor, dim: Sequence[int], keepdim: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(maximum over ``dim``, int64 count of the elements equal to it): NaN if the slice has one.
    The counts are what the backward splits the gradient by (not differentiable)."""
    return _reduce_max(input, dim, _out_shape(input.shape, dim, keepdim), index=False, negate=False)


@custom_op("amin")
def amin_op(input: torch.Tensor, dim: Sequence[int], keepdim: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(minimum over ``dim``, int64 count of the elements equal to it), as ``amax_op``."""
    return _reduce_max(input, dim, _out_shape(input.shape, dim, keepdim), index=False, negate=True)


@amax_op.register_fake
@amin_op.register_fake
def _(input, dim, keepdim):
    shape = _out_shape(input.shape, dim, keepdim)
    return input.new_empty(shape), input.new_empty(shape, dtype=torch.int64)


@custom_op("amax_amin_backward")
def amax_amin_backward_op(
    grad_output: torch.Tensor, input: torch.Tensor, result: torch.Tensor, counts: torch.Tensor, dim: Sequence[int]
) -> torch.Tensor:
    """grad_input of amax or amin: grad_output / count to every element equal to the result."""
    return _select_backward(input.shape, dim, input, result, counts, grad_output)


@amax_amin_backward_op.register_fake
def _(grad_output, input, result, counts, dim):
    return grad_output.new_empty(input.shape)


def _amax_setup_context(ctx, inputs, output) -> None:
    x, dim, _ = inputs
    y, counts = output
    ctx.mark_non_differentiable(counts)
    ctx.save_for_backward(x, y, counts)
    ctx.dims = dim


def _amax_backward(ctx, g: torch.Tensor, _g_counts: torch.Tensor | None):
    x, y, counts = ctx.saved_tensors
    return amax_amin_backward_op(g, x, y, counts, ctx.dims), None, None


amax_op.register_autograd(_amax_backward, setup_context=_amax_setup_context)
amin_op.register_autograd(_amax_backward, setup_context=_amax_setup_context)


# max / min along a dim ------------------------------------------------------------------------


def _one_dim(x_dim: int, dim: int) -> tuple[int, ...]:
    """max/min's reduced dims: ``dim``, or none for a 0-d input."""
    return (dim,) if x_dim else ()


@custom_op("max")
def max_op(input: torch.Tensor, dim: int, keepdim: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, int64 indices) of the first maximum along the non-negative ``dim`` (of the first
    NaN if any)."""
    dims = _one_dim(input.dim(), dim)
    return _reduce_max(input, dims, _out_shape(input.shape, dims, keepdim), index=True, negate=False)


@custom_op("min")
def min_op(input: torch.Tensor, dim: int, keepdim: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, int64 indices) of the first minimum along ``dim``, as ``max_op``."""
    dims = _one_dim(input.dim(), dim)
    return _reduce_max(input, dims, _out_shape(input.shape, dims, keepdim), index=True, negate=True)


@max_op.register_fake
@min_op.register_fake
def _(input, dim, keepdim):
    shape = _out_shape(input.shape, _one_dim(input.dim(), dim), keepdim)
    return input.new_empty(shape), input.new_empty(shape, dtype=torch.int64)


@custom_op("max_min_backward")
def max_min_backward_op(
    grad_output: torch.Tensor, indices: torch.Tensor, input_shape: Sequence[int], dim: int
) -> torch.Tensor:
    """grad_input of max or min along ``dim``: grad_output at the indexed element, 0 elsewhere."""
    return _select_backward(input_shape, _one_dim(len(input_shape), dim), None, None, indices, grad_output)


@max_min_backward_op.register_fake
def _(grad_output, indices, input_shape, dim):
    return grad_output.new_empty(input_shape)


def _max_setup_context(ctx, inputs, output) -> None:
    x, dim, _ = inputs
    _, indices = output
    ctx.mark_non_differentiable(indices)
    ctx.save_for_backward(indices)
    ctx.shape, ctx.dim = x.shape, dim


def _max_backward(ctx, g: torch.Tensor, _g_indices: torch.Tensor | None):
    (indices,) = ctx.saved_tensors
    return max_min_backward_op(g, indices, list(ctx.shape), ctx.dim), None, None


max_op.register_autograd(_max_backward, setup_context=_max_setup_context)
min_op.register_autograd(_max_backward, setup_context=_max_setup_context)


# public API -----------------------------------------------------------------------------------


def _nonempty(x: torch.Tensor, dims: Sequence[int], op: str) -> None:
    for d in dims:
        if x.shape[d] == 0:
            raise IndexError(
                f"{op}(): reduction dim {d} has size 0 (input shape {tuple(x.shape)}); there is no extreme value"
            )


def sum(input: torch.Tensor, dim: int | Sequence[int] | None = None, keepdim: bool = False) -> torch.Tensor:
    """``torch.sum(input, dim, keepdim)`` (dim None or () sums everything); accumulates in fp32
    (fp64 for fp64)."""
    rt.check_float(input, "input")
    return sum_op(input, list(reduction_dims(dim, input.dim())), bool(keepdim))


def mean(input: torch.Tensor, dim: int | Sequence[int] | None = None, keepdim: bool = False) -> torch.Tensor:
    """``torch.mean(input, dim, keepdim)``; the mean over no elements is NaN, as torch's."""
    rt.check_float(input, "input")
    return mean_op(input, list(reduction_dims(dim, input.dim())), bool(keepdim))


def amax(input: torch.Tensor, dim: int | Sequence[int] = (), keepdim: bool = False) -> torch.Tensor:
    """``torch.amax(input, dim, keepdim)`` (dim () reduces every dim); NaN if the slice has one."""
    rt.check_float(input, "input")
    dims = reduction_dims(dim, input.dim())
    _nonempty(input, dims, "amax")
    return amax_op(input, list(dims), bool(keepdim))[0]


def amin(input: torch.Tensor, dim: int | Sequence[int] = (), keepdim: bool = False) -> torch.Tensor:
    """``torch.amin(input, dim, keepdim)``."""
    rt.check_float(input, "input")
    dims = reduction_dims(dim, input.dim())
    _nonempty(input, dims, "amin")
    return amin_op(input, list(dims), bool(keepdim))[0]


def _max_min(input: torch.Tensor, dim: int, keepdim: bool, negate: bool):
    op = "min" if negate else "max"
    rt.check_float(input, "input")
    d = rt.canonical_dim(dim, input.dim())
    if input.dim():
        _nonempty(input, (d,), op)
    values, indices = (min_op if negate else max_op)(input, d, bool(keepdim))
    result = torch.return_types.min if negate else torch.return_types.max
    return result((values, indices))


def max(input: torch.Tensor, dim: int, keepdim: bool = False):
    """``torch.max(input, dim, keepdim)``: (values, indices) with the index of the first maximum
    (of the first NaN when the slice has one), as a ``torch.return_types.max``."""
    return _max_min(input, dim, keepdim, False)


def min(input: torch.Tensor, dim: int, keepdim: bool = False):
    """``torch.min(input, dim, keepdim)``, as a ``torch.return_types.min``."""
    return _max_min(input, dim, keepdim, True)
