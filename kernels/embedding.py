"""embedding (rows of a table looked up by integer indices), forward and backward in Triton.

The backward sums, for each table row, the grad_output rows of every position that looked it up.
It does so without atomics: the positions are sorted by index once (a stable sort, so the sum
order is fixed and the result deterministic), and one program per (row, column block) sums its
row's run of positions in fp32 (fp64 for fp64), then writes the whole row, zero for rows never
looked up and for the padding row. Every gradient row is written exactly once.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels import _runtime as rt
from kernels._library import custom_op
from kernels._strided import collapse, int64_indexing, strided_offsets

__all__ = ["embedding", "embedding_backward_op", "embedding_op"]

#: Index dtypes torch's embedding accepts.
INDEX_DTYPES = (torch.int64, torch.int32)
#: Positions of a run per step of the backward (the interpreter: few, big steps); columns per
#: program (at most).
BLOCK_N = 256 if rt.INTERPRET else 32
MAX_BLOCK_D = 1024 if rt.INTERPRET else 256
#: Lookup elements per forward program (rows = this / columns): the interpreter runs programs one
#: by one in Python, so it gets few big ones.
FWD_ELEMENTS = 1 << 16 if rt.INTERPRET else 1 << 13
#: Table rows per backward program: one on a GPU (a program per row and column block); under the
#: interpreter 64 rows summed at once through a one-hot mask (the same sums in the same order).
BLOCK_V = 64 if rt.INTERPRET else 1


@triton.jit
def _embedding_fwd_kernel(
    idx_ptr,  # indices, any layout described by (S*, is*), int32 or int64
    w_ptr,  # weight (V, D), any layout
    out_ptr,  # result (N, D), contiguous
    n,  # number of lookups N
    D,  # embedding dim
    S1,
    S2,
    S3,  # collapsed sizes of the index shape (S0 implied by n)
    is0,
    is1,
    is2,
    is3,  # index strides
    w_s0,
    w_s1,  # weight strides (row, column)
    RANK: tl.constexpr,  # collapsed index dims in use (0: contiguous)
    INT64: tl.constexpr,  # positions and output offsets need 64 bits
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid_n = tl.program_id(0).to(tl.int64) if INT64 else tl.program_id(0)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,) lookup positions
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)  # (BLOCK_D,)
    row_ok = rows < n
    i_offs = rows if RANK == 0 else strided_offsets(rows, S1, S2, S3, is0, is1, is2, is3, RANK)
    idx = tl.load(idx_ptr + i_offs, mask=row_ok, other=0).to(tl.int64)  # validated in range before launch
    mask = row_ok[:, None] & (cols < D)[None, :]
    w = tl.load(w_ptr + idx[:, None] * w_s0 + cols[None, :].to(tl.int64) * w_s1, mask=mask)
    tl.store(out_ptr + rows[:, None] * D + cols[None, :], w, mask=mask)


@triton.jit
def _embedding_bwd_kernel(
    g_ptr,  # grad_output (*index shape, D), any layout: rows described by (S*, gs*), columns by g_sD
    sorted_ptr,  # the indices sorted (stable), int64, (N,)
    order_ptr,  # the position each sorted index came from, int64, (N,)
    start_ptr,  # first entry of each table row's run in the sorted order, int64, (V,)
    count_ptr,  # length of each table row's run, int64, (V,)
    dw_ptr,  # weight gradient (V, D), contiguous
    V,  # table rows
    D,  # embedding dim
    padding_idx,  # row whose gradient is zero (-1: none)
    S1,
    S2,
    S3,  # collapsed sizes of the index shape
    gs0,
    gs1,
    gs2,
    gs3,  # grad_output strides over those dims
    g_sD,  # grad_output's last-dim stride
    RANK: tl.constexpr,  # collapsed dims in use (0: grad_output contiguous)
    BLOCK_V: tl.constexpr,  # table rows per program (their runs are adjacent in the sorted order)
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    v0 = tl.program_id(0).to(tl.int64) * BLOCK_V
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    col_ok = cols < D
    acc_t = tl.float64 if g_ptr.dtype.element_ty == tl.float64 else tl.float32
    v_last = tl.minimum(v0 + BLOCK_V, V) - 1
    first = tl.load(start_ptr + v0)
    end = tl.load(start_ptr + v_last) + tl.load(count_ptr + v_last)
    if BLOCK_V == 1:
        acc = tl.zeros((BLOCK_D,), dtype=acc_t)
        if v0 == padding_idx:
            end = first
    else:
        vs = v0 + tl.arange(0, BLOCK_V)  # (BLOCK_V,) the rows of this program
        acc2 = tl.zeros((BLOCK_V, BLOCK_D), dtype=acc_t)
    for i in range(first, end, BLOCK_N):
        k = i + tl.arange(0, BLOCK_N)
        k_ok = k < end
        pos = tl.load(order_ptr + k, mask=k_ok, other=0)  # (BLOCK_N,) int64 positions
        if RANK == 0:
            g_rows = pos * D
        else:
            g_rows = strided_offsets(pos, S1, S2, S3, gs0, gs1, gs2, gs3, RANK)
        g = tl.load(
            g_ptr + g_rows[:, None] + cols[None, :].to(tl.int64) * g_sD, mask=k_ok[:, None] & col_ok[None, :], other=0.0
        ).to(acc_t)  # (BLOCK_N, BLOCK_D)
        if BLOCK_V == 1:
            acc += tl.sum(g, axis=0)
        else:
            sidx = tl.load(sorted_ptr + k, mask=k_ok, other=-1)
            hit = (sidx[:, None] == vs[None, :]) & (vs != padding_idx)[None, :]  # (BLOCK_N, BLOCK_V)
            acc2 += tl.sum(tl.where(hit[:, :, None], g[:, None, :], 0.0), axis=0)
    if BLOCK_V == 1:
        tl.store(dw_ptr + v0 * D + cols, acc.to(dw_ptr.dtype.element_ty), mask=col_ok)
    else:
        mask = (vs < V)[:, None] & col_ok[None, :]
        tl.store(dw_ptr + vs[:, None] * D + cols[None, :], acc2.to(dw_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------


def _layout(strides, shape, t: torch.Tensor) -> tuple[torch.Tensor, list[int], list[int], int]:
    """(t, sizes, strides, RANK): ``shape`` walked with ``strides`` collapsed to four dims, and
    RANK for strided_offsets (0 when ``t`` is contiguous: plain offsets). When the layout does not
    collapse, ``t`` is replaced by a contiguous copy (rare: five or more dims that cannot merge)."""
    try:
        sizes, (st,) = collapse(list(shape), [list(strides)])
    except ValueError:
        t = t.contiguous()
        return t, *_layout(t.stride()[: len(shape)], shape, t)[1:]
    if t.is_contiguous():
        return t, sizes, st, 0
    rank = 4
    while rank > 1 and sizes[4 - rank] == 1:
        rank -= 1
    return t, sizes, st, rank


def _block_d(d: int) -> int:
    return min(rt.next_pow2(max(d, 1)), MAX_BLOCK_D)


def _check_range(indices: torch.Tensor, num: int) -> None:
    """``IndexError`` for an index outside [0, num), before any launch (a kernel would read past
    the table). Inside the custom op, so ``torch.compile`` does not trace the data-dependent test."""
    if indices.numel():
        lo, hi = (int(v) for v in torch.aminmax(indices))
        if lo < 0 or hi >= num:
            bad = lo if lo < 0 else hi
            raise IndexError(
                f"index {bad} is out of range for an embedding table of {num} rows (expected 0..{num - 1})"
            )


def _forward(indices: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    _check_range(indices, weight.shape[0])
    d = weight.shape[1]
    out = rt.empty((*indices.shape, d), dtype=weight.dtype, device=weight.device)
    n = indices.numel()
    if n == 0 or d == 0:
        return out
    indices, sizes, i_s, rank = _layout(indices.stride(), indices.shape, indices)
    block_d = _block_d(d)
    block_n = max(16, min(FWD_ELEMENTS // block_d, rt.next_pow2(n)))
    grid = (rt.cdiv(n, block_n), rt.cdiv(d, block_d))
    _embedding_fwd_kernel[grid](
        indices, weight, out, n, d, *sizes[1:], *i_s, weight.stride(0), weight.stride(1),
        RANK=rank, INT64=int64_indexing(indices, out, n=n),
        BLOCK_N=block_n, BLOCK_D=block_d,
    )  # fmt: skip
    return out


def _backward(indices: torch.Tensor, g: torch.Tensor, num_weights: int, padding_idx: int) -> torch.Tensor:
    d = g.shape[-1]
    dw = rt.empty((num_weights, d), dtype=g.dtype, device=g.device)
    if num_weights == 0 or d == 0:
        return dw
    flat = indices.reshape(-1).to(torch.int64)
    # the runs of equal indices: a stable sort fixes the order each row's gradient is summed in
    sorted_idx, order = torch.sort(flat, stable=True)
    counts = torch.bincount(flat, minlength=num_weights)
    starts = torch.cumsum(counts, 0) - counts
    g, sizes, g_s, rank = _layout(g.stride()[:-1], indices.shape, g)
    block_d = _block_d(d)
    # the one-hot sum holds a (BLOCK_N, rows, BLOCK_D) tile: at most 2^20 elements (Triton's limit)
    block_v = max(1, min(BLOCK_V, (1 << 20) // (BLOCK_N * block_d)))
    grid = (rt.cdiv(num_weights, block_v), rt.cdiv(d, block_d))
    _embedding_bwd_kernel[grid](
        g, sorted_idx, order, starts, counts, dw, num_weights, d, padding_idx, *sizes[1:], *g_s, g.stride(-1),
        RANK=rank, BLOCK_V=block_v, BLOCK_N=BLOCK_N, BLOCK_D=block_d,
    )  # fmt: skip
    return dw


# ---------------------------------------------------------------------------------------------
# Custom ops (torch.ops.blitz.embedding, embedding_backward) and the public API
# ---------------------------------------------------------------------------------------------


@custom_op("embedding")
def embedding_op(indices: torch.Tensor, weight: torch.Tensor, padding_idx: int) -> torch.Tensor:
    """weight[indices] for indices ``embedding`` checked in range; ``padding_idx`` a row in
    [0, V) or -1 (none): it only affects the gradient."""
    return _forward(indices, weight)


@embedding_op.register_fake
def _(indices, weight, padding_idx):
    return weight.new_empty((*indices.shape, weight.shape[1]))


@custom_op("embedding_backward")
def embedding_backward_op(
    indices: torch.Tensor, grad_output: torch.Tensor, num_weights: int, padding_idx: int
) -> torch.Tensor:
    """The weight gradient (num_weights, D): grad_output rows summed per index, zero for the
    padding row (``padding_idx`` in [0, num_weights) or -1) and for rows never looked up."""
    return _backward(indices, grad_output, num_weights, padding_idx)


@embedding_backward_op.register_fake
def _(indices, grad_output, num_weights, padding_idx):
    return grad_output.new_empty((num_weights, grad_output.shape[-1]))


def _setup_context(ctx, inputs, output) -> None:
    indices, weight, padding_idx = inputs
    ctx.save_for_backward(indices)
    ctx.num_weights = weight.shape[0]
    ctx.padding_idx = padding_idx


def _embedding_autograd_backward(ctx, g: torch.Tensor):
    (indices,) = ctx.saved_tensors
    return None, embedding_backward_op(indices, g, ctx.num_weights, ctx.padding_idx), None


embedding_op.register_autograd(_embedding_autograd_backward, setup_context=_setup_context)


def embedding(
    input: torch.Tensor,
    weight: torch.Tensor,
    padding_idx: int | None = None,
    max_norm: float | None = None,
    norm_type: float = 2.0,
    scale_grad_by_freq: bool = False,
    sparse: bool = False,
) -> torch.Tensor:
    """``torch.nn.functional.embedding``: the rows of ``weight`` (V, D) at integer ``input``
    indices of any shape, of shape (*input.shape, D); the gradient of a row sums over repeated
    indices, and the ``padding_idx`` row (negative counts from the end) gets none. ``max_norm``,
    ``scale_grad_by_freq`` and ``sparse`` are not supported. Raises ``IndexError`` before launch
    for an index outside [0, V)."""
    if max_norm is not None or scale_grad_by_freq or sparse:
        raise NotImplementedError("embedding: max_norm, scale_grad_by_freq and sparse are not supported")
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor of indices, got {type(input).__name__}")
    if input.dtype not in INDEX_DTYPES:
        raise TypeError(
            f"input (the indices) has dtype {str(input.dtype).removeprefix('torch.')}; expected int64 or int32"
        )
    rt.check_float(weight, "weight")
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-d (num_embeddings, embedding_dim), got shape {tuple(weight.shape)}")
    rt.check_device(input, weight)
    num = weight.shape[0]
    if padding_idx is None:
        pad = -1
    else:
        if isinstance(padding_idx, bool) or not isinstance(padding_idx, int):
            raise TypeError(f"padding_idx must be an int or None, got {type(padding_idx).__name__}")
        if not -num <= padding_idx < num:
            raise ValueError(
                f"padding_idx={padding_idx} is outside the table of {num} rows (expected {-num}..{num - 1})"
            )
        pad = padding_idx % num
    return embedding_op(input, weight, pad)
