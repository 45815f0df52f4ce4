"""linear_cross_entropy in Triton: cross_entropy(hidden @ weight^T + bias, target) without ever
allocating the (N, V) logits, forward and backward.

Forward: one fused kernel. Each program takes BLOCK_N rows and walks the vocabulary in BLOCK_V
tiles; a tile of logits is ``hidden_tile @ weight_tile^T (+ bias)`` by ``tl.dot`` over H with fp32
accumulation (fp64 for fp64), folded at once into an online max and sum of exp per row (the same
streaming as ``kernels.cross_entropy``), while the target's logit is picked out of the tile that
holds it. What it keeps for the backward is (max logit, log of the shifted sum of exp) per row:
2 N floats (the log-sum-exp in two parts, so that exp(z - lse) keeps full precision at large
logits), and the count of counted targets (the mean's divisor).

Backward: the gradient of the logits is ``dZ = (softmax(Z) - onehot(target)) * r`` per row, with
``r`` the grad_output of that row ('none'), the scalar grad_output ('sum') or grad_output / count
('mean'), and 0 for an ignored row. dZ is recomputed tile by tile from the saved row statistics
(the same ``tl.dot`` over H as the forward) and never exists whole. Two ways, by H:

- fused, H <= FUSED_MAX_H (all of H fits one tile): one kernel per gradient. dhidden: a program per
  BLOCK_N rows loops over the vocabulary tiles and sums ``dZ_tile @ W_tile`` into its (BLOCK_N, H)
  registers; dweight and dbias: a program per BLOCK_V columns loops over the row tiles and sums
  ``dZ_tile^T @ hidden_tile`` and the columns of dZ. dZ lives only in registers.
- chunked, larger H (an LLM head: a register tile of all of H would not fit, and tiling H would
  recompute the logits once per H tile): pass 1 takes chunks of rows; a kernel writes that chunk's
  dZ (rows_c, V) and the matmul kernel of ``kernels.matmul`` writes ``dhidden[rows_c] = dZ_c @ W``.
  Pass 2 takes chunks of vocabulary columns; dZ (N, cols_c), then one matmul writes
  ``dweight[cols_c] = dZ_c^T @ hidden`` and, from the same pass (the row sums of its left operand),
  ``dbias[cols_c]``.

Either way each gradient element is one deterministic fp32 (fp64) sum, in a fixed order, and
nothing is accumulated across chunks or programs (no atomics); the price is one recomputation of
the logits per gradient pass, so forward + backward cost five products of the size of the logits'
(torch's unfused path: three). dZ goes into those products in the input dtype, as the unfused
path's matmuls read the logits' gradient.

Memory bound (besides the inputs, the outputs loss, dhidden, dweight, dbias and the 2 N row
statistics): fused, nothing (register tiles); chunked, one chunk of dZ in the input dtype at a
time, ``rows_c * V <= max(CHUNK_ELEMENTS, BLOCK_N * V)`` elements in pass 1 and
``N * cols_c <= max(CHUNK_ELEMENTS, N * BLOCK_V)`` in pass 2; on a GPU CHUNK_ELEMENTS = 2^27, 256
MiB in bf16 whatever N and V (for N = 16384, V = 128256: chunks of 1024 rows and 8192 columns,
against 4.2 GB for each (N, V) tensor of the unfused path: the logits, their log-softmax, and their
gradients in the backward). Extra memory is thus O(chunk * V) with chunk << N, and O(N * chunk).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from kernels import _runtime as rt
from kernels._library import custom_op
from kernels._reductions import REDUCTIONS, check_reduction
from kernels._sums import acc_dtype
from kernels.matmul import _FP64_DOT, _mm
from kernels.softmax import log_top_plus_rest, online_top_rest

__all__ = [
    "CHUNK_ELEMENTS",
    "FUSED_MAX_H",
    "linear_cross_entropy",
    "linear_cross_entropy_backward_op",
    "linear_cross_entropy_op",
]

#: Elements of dZ held at once in the backward (one chunk of rows or of vocabulary columns): 256
#: MiB in bf16 on a GPU. Under the interpreter 2^15, so that the property tests' shapes (N V up to
#: 2^14) take one chunk per pass (each launch there costs tens of ms); tests/kernels lower it to
#: cross chunk boundaries.
CHUNK_ELEMENTS = 1 << 15 if rt.INTERPRET else 1 << 27
#: Largest H (a power of two) the fused backward holds in one tile; above it the backward goes
#: by chunks of dZ and matmuls (an LLM head's H of 4096 would cost a recomputation per H tile).
FUSED_MAX_H = 128
#: Elements of one logits tile under the interpreter, where a few big tiles run fastest.
_INTERPRET_TILE = 1 << 15
#: Partial sums per step of the forward's final sum (one program).
_FINISH_BLOCK = 1 << 14 if rt.INTERPRET else 1 << 10


class _Blocks:
    """Tiles of the logits kernels: BLOCK_N rows x BLOCK_V vocabulary entries per tile, BLOCK_K of H
    per ``tl.dot`` step, BLOCK_H = all of H (the fused backward's output tiles). GPU tiles follow
    kernels.matmul's shapes for the dtype, smaller for the fused backward, which also holds a
    (BLOCK_N or BLOCK_V, BLOCK_H) sum (not tuned: no GPU measurement of this kernel yet). Under the
    interpreter, whose cost is per program and per operation rather than per element, the tile
    grows to the problem (up to 2^15 elements), so a small problem is one or two programs."""

    def __init__(self, dtype: torch.dtype, n: int, v: int, h: int, *, fused_backward: bool = False) -> None:
        self.h = max(16, rt.next_pow2(h))
        if rt.INTERPRET:
            self.v = min(max(rt.next_pow2(v), 16), 2048, _INTERPRET_TILE // 16)
            self.n = max(16, min(rt.next_pow2(n), _INTERPRET_TILE // self.v))
            self.k = min(max(rt.next_pow2(h), 16), 64)
            self.warps, self.stages = 4, 1
        elif dtype in (torch.float16, torch.bfloat16):
            self.n, self.v, self.k, self.warps, self.stages = 128, 128, 64, 8, 3
        elif dtype == torch.float32:
            self.n, self.v, self.k, self.warps, self.stages = 64, 128, 32, 4, 3
        elif _FP64_DOT:
            self.n, self.v, self.k, self.warps, self.stages = 64, 64, 16, 4, 2
        else:  # fp64 without an fp64 tl.dot: multiply and sum a (n, k, v) product in registers
            self.n, self.v, self.k, self.warps, self.stages = 16, 16, 16, 4, 1
        if fused_backward and not rt.INTERPRET:
            self.n, self.v = min(self.n, 64), min(self.v, 64)


def _dot_flags(dtype: torch.dtype) -> dict:
    """The constexprs every logits tile takes (as ``kernels.matmul._mm`` sets them)."""
    return {
        "UPCAST": rt.INTERPRET and dtype in (torch.float16, torch.bfloat16),
        "PRECISION": rt.dot_precision(dtype) if dtype == torch.float32 else "tf32",
        "DOT_FALLBACK": dtype == torch.float64 and not _FP64_DOT,
    }


# ---------------------------------------------------------------------------------------------
# Kernels (tl.full, not tl.zeros: under the interpreter each call of a @triton.jit function, which
# tl.zeros is and tl.full is not, patches triton.language anew, a few ms per call)
# ---------------------------------------------------------------------------------------------


@triton.jit
def _logits_tile(
    h_ptr,  # hidden (N, H), any strides
    w_ptr,  # weight (V, H), any strides
    b_ptr,  # bias (V,) (HAS_BIAS), else unused
    rows,  # (BLOCK_N,) int64 row indices
    cols,  # (BLOCK_V,) int64 vocabulary indices
    row_ok,
    col_ok,
    H,
    hs0,
    hs1,  # hidden strides
    ws0,
    ws1,  # weight strides
    bs,  # bias stride
    acc_ty: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    UPCAST: tl.constexpr,  # interpreter: dot on fp32 copies of fp16/bf16 tiles (bf16 dot is wrong there)
    PRECISION: tl.constexpr,  # tl.dot input_precision for fp32 ("ieee" or "tf32")
    DOT_FALLBACK: tl.constexpr,  # fp64 on a compiler without fp64 tl.dot: multiply and sum
    BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """Logits (BLOCK_N, BLOCK_V) = hidden[rows] @ weight[cols]^T (+ bias[cols]), accumulated in
    acc_ty over H in BLOCK_K steps (the same order in the forward and both backward passes)."""
    ks = tl.arange(0, BLOCK_K).to(tl.int64)
    h_rows = h_ptr + rows[:, None] * hs0  # int64: a row times its stride can pass 2^31
    w_cols = w_ptr + cols[None, :] * ws0
    acc = tl.full((BLOCK_N, BLOCK_V), 0.0, acc_ty)
    for k0 in range(0, H, BLOCK_K):
        k = k0 + ks
        k_ok = k < H
        a = tl.load(h_rows + k[None, :] * hs1, mask=row_ok[:, None] & k_ok[None, :], other=0.0)  # (BLOCK_N, BLOCK_K)
        b = tl.load(w_cols + k[:, None] * ws1, mask=k_ok[:, None] & col_ok[None, :], other=0.0)  # (BLOCK_K, BLOCK_V)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        if DOT_FALLBACK:
            acc += tl.sum(a[:, :, None] * b[None, :, :], axis=1)
        else:
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
    if HAS_BIAS:
        acc += tl.load(b_ptr + cols * bs, mask=col_ok, other=0.0).to(acc_ty)[None, :]
    return acc


@triton.jit
def _lce_fwd_kernel(
    h_ptr,  # hidden (N, H), any strides
    w_ptr,  # weight (V, H), any strides
    b_ptr,  # bias (V,) (HAS_BIAS), else unused
    t_ptr,  # target (N,) int64, any stride
    loss_ptr,  # per-row losses (N,), contiguous (REDUCE == 0), else unused (the finishing kernel's)
    part_ptr,  # (2, n_parts) acc dtype: per program, the summed loss and the count of counted targets
    stats_ptr,  # (N, 2) acc dtype: per row the shift (max logit) and log of the shifted sum of exp
    N,
    V,
    H,
    ignore_index,
    n_parts,
    hs0,
    hs1,
    ws0,
    ws1,
    bs,
    ts,  # strides of hidden, weight, bias, target
    HAS_BIAS: tl.constexpr,
    REDUCE: tl.constexpr,  # 0 none (store per-row losses), 1 sum, 2 mean
    UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
    DOT_FALLBACK: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    # loss_n = lse_n - z[n, t_n], lse_n = shift + log(sum exp(z - shift)) streamed over the
    # vocabulary tiles (online_top_rest: the max entries' sum kept apart for an accurate log)
    pid = tl.program_id(0)
    rows = pid.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    acc_ty = stats_ptr.dtype.element_ty
    t = tl.load(t_ptr + rows * ts, mask=row_ok, other=ignore_index)
    # an out-of-range target counts as ignored here (nothing read out of bounds); the launcher raised
    valid = row_ok & (t != ignore_index) & (t >= 0) & (t < V)
    m = tl.full((BLOCK_N,), -float("inf"), acc_ty)
    shift = tl.full((BLOCK_N,), 0.0, acc_ty)
    c = tl.full((BLOCK_N,), 0.0, acc_ty)
    r = tl.full((BLOCK_N,), 0.0, acc_ty)
    z_t = tl.full((BLOCK_N,), 0.0, acc_ty)
    v_range = tl.arange(0, BLOCK_V).to(tl.int64)
    for v0 in range(0, V, BLOCK_V):
        cols = v0 + v_range
        col_ok = cols < V
        z = _logits_tile(
            h_ptr, w_ptr, b_ptr, rows, cols, row_ok, col_ok, H, hs0, hs1, ws0, ws1, bs,
            acc_ty, HAS_BIAS, UPCAST, PRECISION, DOT_FALLBACK, BLOCK_N, BLOCK_V, BLOCK_K,
        )  # fmt: skip
        mask = row_ok[:, None] & col_ok[None, :]
        z = tl.where(mask, z, -float("inf"))
        z_t += tl.sum(tl.where(cols[None, :] == t[:, None], z, 0.0), axis=1)
        m, shift, c, r = online_top_rest(m, c, r, z, mask)
    log_s = log_top_plus_rest(c, r)
    loss = tl.where(valid, log_s - (z_t - shift), 0.0)
    if REDUCE == 0:
        tl.store(loss_ptr + rows, loss.to(loss_ptr.dtype.element_ty), mask=row_ok)
    tl.store(part_ptr + pid, tl.sum(loss, axis=0))
    tl.store(part_ptr + n_parts + pid, tl.sum(valid.to(acc_ty), axis=0))
    tl.store(stats_ptr + 2 * rows, shift, mask=row_ok)
    tl.store(stats_ptr + 2 * rows + 1, log_s, mask=row_ok)


@triton.jit
def _lce_finish_kernel(
    part_ptr,  # (2, n_parts) the forward's partial sums of the loss and of the counted targets
    n_parts,
    count_ptr,  # (1,) the count of counted targets
    loss_ptr,  # the reduced loss (REDUCE 1 or 2), else unused
    REDUCE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # one program, a fixed order: the same bits on every run; 'mean' over no target is 0 / 0 = NaN
    acc_ty = part_ptr.dtype.element_ty
    loss = tl.full((BLOCK,), 0.0, acc_ty)
    count = tl.full((BLOCK,), 0.0, acc_ty)
    for start in range(0, n_parts, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        ok = offs < n_parts
        loss += tl.load(part_ptr + offs, mask=ok, other=0.0)
        count += tl.load(part_ptr + n_parts + offs, mask=ok, other=0.0)
    total = tl.sum(count, axis=0)
    tl.store(count_ptr, total)
    if REDUCE == 1:
        tl.store(loss_ptr, tl.sum(loss, axis=0).to(loss_ptr.dtype.element_ty))
    elif REDUCE == 2:
        tl.store(loss_ptr, (tl.sum(loss, axis=0) / total).to(loss_ptr.dtype.element_ty))


@triton.jit
def _row_terms(
    t_ptr, g_ptr, stats_ptr, count_ptr, rows, row_ok, V, ignore_index, ts, gs,
    acc_ty: tl.constexpr, REDUCE: tl.constexpr,
):  # fmt: skip
    """Per row: the target, the factor r of its gradient (grad_output, grad_output / count for
    'mean'; 0 for an ignored row), and the forward's shift and log of the shifted sum."""
    t = tl.load(t_ptr + rows * ts, mask=row_ok, other=ignore_index)
    valid = row_ok & (t != ignore_index) & (t >= 0) & (t < V)
    if REDUCE == 0:  # one grad_output per row (stride 0 when expanded)
        g = tl.load(g_ptr + rows * gs, mask=valid, other=0.0).to(acc_ty)
    elif REDUCE == 1:
        g = tl.load(g_ptr).to(acc_ty)
    else:
        g = tl.load(g_ptr).to(acc_ty) / tl.load(count_ptr).to(acc_ty)
    scale = tl.where(valid, g, 0.0)  # ignored rows get 0, even when the count is 0 (g / 0)
    shift = tl.load(stats_ptr + 2 * rows, mask=row_ok, other=0.0)
    log_s = tl.load(stats_ptr + 2 * rows + 1, mask=row_ok, other=0.0)
    return t, scale, shift, log_s


@triton.jit
def _dlogits_tile(
    h_ptr, w_ptr, b_ptr, rows, cols, row_ok, col_ok, t, scale, shift, log_s, H, hs0, hs1, ws0, ws1, bs,
    acc_ty: tl.constexpr, HAS_BIAS: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    DOT_FALLBACK: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """dZ (BLOCK_N, BLOCK_V) = r (exp(z - shift - log_s) - [v == t]) from a recomputed logits tile;
    exactly 0 outside the rows and columns (a padded row's exp may overflow: it must not reach a sum)."""
    z = _logits_tile(
        h_ptr, w_ptr, b_ptr, rows, cols, row_ok, col_ok, H, hs0, hs1, ws0, ws1, bs,
        acc_ty, HAS_BIAS, UPCAST, PRECISION, DOT_FALLBACK, BLOCK_N, BLOCK_V, BLOCK_K,
    )  # fmt: skip
    p = tl.exp((z - shift[:, None]) - log_s[:, None])
    d = scale[:, None] * (p - tl.where(cols[None, :] == t[:, None], 1.0, 0.0))
    return tl.where(row_ok[:, None] & col_ok[None, :], d, 0.0)


@triton.jit
def _lce_dlogits_kernel(
    h_ptr,  # hidden (N, H), any strides
    w_ptr,  # weight (V, H), any strides
    b_ptr,  # bias (V,) (HAS_BIAS), else unused
    t_ptr,  # target (N,) int64, any stride
    g_ptr,  # grad_output: (N,) any stride (REDUCE == 0), else a scalar
    stats_ptr,  # (N, 2) the forward's row statistics
    count_ptr,  # the count of counted targets (REDUCE == 2), else unused
    d_ptr,  # dZ of the chunk (n_rows, n_cols), strides ds0, ds1
    row0,
    col0,  # the chunk's first row and vocabulary column
    n_rows,
    n_cols,  # the chunk's extent
    V,
    H,
    ignore_index,
    hs0,
    hs1,
    ws0,
    ws1,
    bs,
    ts,
    gs,  # grad_output stride (REDUCE == 0)
    ds0,
    ds1,
    HAS_BIAS: tl.constexpr,
    REDUCE: tl.constexpr,
    UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
    DOT_FALLBACK: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    # chunked backward (H too large for one tile): one tile of dZ, stored for the matmuls
    local_rows = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    local_cols = tl.program_id(1).to(tl.int64) * BLOCK_V + tl.arange(0, BLOCK_V)
    row_ok = local_rows < n_rows
    col_ok = local_cols < n_cols
    rows = row0 + local_rows
    cols = col0 + local_cols
    acc_ty = stats_ptr.dtype.element_ty
    t, scale, shift, log_s = _row_terms(
        t_ptr, g_ptr, stats_ptr, count_ptr, rows, row_ok, V, ignore_index, ts, gs, acc_ty, REDUCE
    )
    d = _dlogits_tile(
        h_ptr, w_ptr, b_ptr, rows, cols, row_ok, col_ok, t, scale, shift, log_s, H, hs0, hs1, ws0, ws1, bs,
        acc_ty, HAS_BIAS, UPCAST, PRECISION, DOT_FALLBACK, BLOCK_N, BLOCK_V, BLOCK_K,
    )  # fmt: skip
    d_ptrs = d_ptr + local_rows[:, None] * ds0 + local_cols[None, :] * ds1
    tl.store(d_ptrs, d.to(d_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])


@triton.jit
def _lce_dhidden_kernel(
    h_ptr,  # hidden (N, H), any strides
    w_ptr,  # weight (V, H), any strides
    b_ptr,  # bias (V,) (HAS_BIAS), else unused
    t_ptr,  # target (N,) int64, any stride
    g_ptr,  # grad_output: (N,) any stride (REDUCE == 0), else a scalar
    stats_ptr,  # (N, 2) the forward's row statistics
    count_ptr,  # the count of counted targets (REDUCE == 2), else unused
    dh_ptr,  # dhidden (N, H), contiguous
    N,
    V,
    H,
    ignore_index,
    hs0,
    hs1,
    ws0,
    ws1,
    bs,
    ts,
    gs,
    HAS_BIAS: tl.constexpr,
    REDUCE: tl.constexpr,
    UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
    DOT_FALLBACK: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_H: tl.constexpr,  # all of H in one tile (the fused path's condition)
):
    # dhidden[rows] = sum over vocabulary tiles of dZ[rows, tile] @ W[tile]: dZ recomputed tile by
    # tile, the (BLOCK_N, H) sum kept in registers
    rows = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    acc_ty = stats_ptr.dtype.element_ty
    t, scale, shift, log_s = _row_terms(
        t_ptr, g_ptr, stats_ptr, count_ptr, rows, row_ok, V, ignore_index, ts, gs, acc_ty, REDUCE
    )
    hs = tl.arange(0, BLOCK_H).to(tl.int64)
    h_ok = hs < H
    v_range = tl.arange(0, BLOCK_V).to(tl.int64)
    acc = tl.full((BLOCK_N, BLOCK_H), 0.0, acc_ty)
    for v0 in range(0, V, BLOCK_V):
        cols = v0 + v_range
        col_ok = cols < V
        d = _dlogits_tile(
            h_ptr, w_ptr, b_ptr, rows, cols, row_ok, col_ok, t, scale, shift, log_s, H, hs0, hs1, ws0, ws1, bs,
            acc_ty, HAS_BIAS, UPCAST, PRECISION, DOT_FALLBACK, BLOCK_N, BLOCK_V, BLOCK_K,
        )  # fmt: skip
        w = tl.load(w_ptr + cols[:, None] * ws0 + hs[None, :] * ws1, mask=col_ok[:, None] & h_ok[None, :], other=0.0)
        d = d.to(w_ptr.dtype.element_ty)  # dZ in the input dtype, as the unfused path's matmul reads it
        if UPCAST:
            d = d.to(tl.float32)
            w = w.to(tl.float32)
        if DOT_FALLBACK:
            acc += tl.sum(d[:, :, None] * w[None, :, :], axis=1)
        else:
            acc = tl.dot(d, w, acc, input_precision=PRECISION)
    dh_ptrs = dh_ptr + rows[:, None] * H + hs[None, :]
    tl.store(dh_ptrs, acc.to(dh_ptr.dtype.element_ty), mask=row_ok[:, None] & h_ok[None, :])


@triton.jit
def _lce_dweight_kernel(
    h_ptr,  # hidden (N, H), any strides
    w_ptr,  # weight (V, H), any strides
    b_ptr,  # bias (V,) (HAS_BIAS), else unused
    t_ptr,  # target (N,) int64, any stride
    g_ptr,  # grad_output: (N,) any stride (REDUCE == 0), else a scalar
    stats_ptr,  # (N, 2) the forward's row statistics
    count_ptr,  # the count of counted targets (REDUCE == 2), else unused
    dw_ptr,  # dweight (V, H), contiguous (STORE_W)
    db_ptr,  # dbias (V,) (STORE_B)
    N,
    V,
    H,
    ignore_index,
    hs0,
    hs1,
    ws0,
    ws1,
    bs,
    ts,
    gs,
    HAS_BIAS: tl.constexpr,
    REDUCE: tl.constexpr,
    STORE_W: tl.constexpr,
    STORE_B: tl.constexpr,
    UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
    DOT_FALLBACK: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    # dweight[cols] = sum over row tiles of dZ[tile, cols]^T @ hidden[tile], dbias[cols] the column
    # sums of dZ: recomputed tile by tile, in a fixed order (no atomics: the same bits every run)
    cols = tl.program_id(0).to(tl.int64) * BLOCK_V + tl.arange(0, BLOCK_V)
    col_ok = cols < V
    acc_ty = stats_ptr.dtype.element_ty
    hs = tl.arange(0, BLOCK_H).to(tl.int64)
    h_ok = hs < H
    n_range = tl.arange(0, BLOCK_N).to(tl.int64)
    acc = tl.full((BLOCK_V, BLOCK_H), 0.0, acc_ty)
    col_sums = tl.full((BLOCK_V,), 0.0, acc_ty)
    for n0 in range(0, N, BLOCK_N):
        rows = n0 + n_range
        row_ok = rows < N
        t, scale, shift, log_s = _row_terms(
            t_ptr, g_ptr, stats_ptr, count_ptr, rows, row_ok, V, ignore_index, ts, gs, acc_ty, REDUCE
        )
        d = _dlogits_tile(
            h_ptr, w_ptr, b_ptr, rows, cols, row_ok, col_ok, t, scale, shift, log_s, H, hs0, hs1, ws0, ws1, bs,
            acc_ty, HAS_BIAS, UPCAST, PRECISION, DOT_FALLBACK, BLOCK_N, BLOCK_V, BLOCK_K,
        )  # fmt: skip
        col_sums += tl.sum(d, axis=0)
        if STORE_W:
            x = tl.load(
                h_ptr + rows[:, None] * hs0 + hs[None, :] * hs1, mask=row_ok[:, None] & h_ok[None, :], other=0.0
            )  # (BLOCK_N, BLOCK_H)
            d_t = tl.trans(d.to(h_ptr.dtype.element_ty))  # (BLOCK_V, BLOCK_N), in the input dtype
            if UPCAST:
                d_t = d_t.to(tl.float32)
                x = x.to(tl.float32)
            if DOT_FALLBACK:
                acc += tl.sum(d_t[:, :, None] * x[None, :, :], axis=1)
            else:
                acc = tl.dot(d_t, x, acc, input_precision=PRECISION)
    if STORE_W:
        dw_ptrs = dw_ptr + cols[:, None] * H + hs[None, :]
        tl.store(dw_ptrs, acc.to(dw_ptr.dtype.element_ty), mask=col_ok[:, None] & h_ok[None, :])
    if STORE_B:
        tl.store(db_ptr + cols, col_sums.to(db_ptr.dtype.element_ty), mask=col_ok)


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------


def _check_linear_cross_entropy(hidden, weight, target, bias, ignore_index, reduction) -> None:
    """Shapes, dtypes, devices and options: everything but the target values (checked on the
    device data, in the op, before its first launch). Messages use torch's argument names: input
    (hidden), linear_weight, linear_bias."""
    rt.check_float(hidden, "input")
    rt.check_float(weight, "linear_weight")
    if bias is not None:
        rt.check_float(bias, "linear_bias")
    rt.check_same_dtype(input=hidden, linear_weight=weight, linear_bias=bias)
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor of int64 class indices, got {type(target).__name__}")
    if target.dtype != torch.int64:
        raise TypeError(f"target has dtype {str(target.dtype).removeprefix('torch.')}; expected int64 class indices")
    rt.check_device(hidden, weight, target, bias)
    if hidden.dim() != 2:
        raise ValueError(f"input must be 2-D (N, H); got shape {tuple(hidden.shape)}")
    if weight.dim() != 2:
        raise ValueError(f"linear_weight must be 2-D (V, H); got shape {tuple(weight.shape)}")
    n, h = hidden.shape
    v = weight.shape[0]
    if weight.shape[1] != h:
        raise ValueError(
            f"input {tuple(hidden.shape)} has H={h} features but linear_weight {tuple(weight.shape)} has "
            f"{weight.shape[1]}"
        )
    if v == 0:
        raise ValueError(f"linear_weight {tuple(weight.shape)} has no classes (V=0)")
    if bias is not None and tuple(bias.shape) != (v,):
        raise ValueError(f"linear_bias has shape {tuple(bias.shape)}; expected ({v},), one per class")
    if tuple(target.shape) != (n,):
        raise ValueError(f"target has shape {tuple(target.shape)}; expected ({n},), one class index per row of input")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise TypeError(f"ignore_index must be an int, got {type(ignore_index).__name__}")
    check_reduction(reduction)


def _check_target_values(target: torch.Tensor, n_classes: int, ignore_index: int) -> None:
    """IndexError for a target outside [0, V) that is not ignore_index (one read of a flag from
    the device; nothing is launched before it)."""
    bad = (target != ignore_index) & ((target < 0) | (target >= n_classes))
    if bool(bad.any()):
        values = target[bad]
        raise IndexError(
            f"target {int(values[0])} is out of range [0, {n_classes}) for {n_classes} classes "
            f"({values.numel()} bad target(s); ignore_index={ignore_index})"
        )


def _lce_forward(hidden, weight, target, bias, ignore_index, reduction):
    """(loss, row stats (N, 2), count (1,)) for checked arguments."""
    n, h = hidden.shape
    v = weight.shape[0]
    dev, acc = hidden.device, acc_dtype(hidden.dtype)
    reduce = REDUCTIONS[reduction]
    _check_target_values(target, v, ignore_index)
    stats = rt.empty((n, 2), dtype=acc, device=dev)
    count = rt.empty((1,), dtype=acc, device=dev)
    if n == 0:  # an empty batch, as torch: 'mean' NaN (0 / 0), 'sum' 0, 'none' empty; nothing launched
        count.zero_()
        loss = torch.full((), math.nan if reduce == 2 else 0.0, dtype=hidden.dtype, device=dev)
        return (rt.empty((0,), dtype=hidden.dtype, device=dev) if reduce == 0 else loss), stats, count
    blocks = _Blocks(hidden.dtype, n, v, h)
    n_parts = rt.cdiv(n, blocks.n)
    parts = rt.empty((2, n_parts), dtype=acc, device=dev)
    loss = rt.empty((n,) if reduce == 0 else (), dtype=hidden.dtype, device=dev)
    _lce_fwd_kernel[(n_parts,)](
        hidden,
        weight,
        bias if bias is not None else weight,
        target,
        loss,
        parts,
        stats,
        n,
        v,
        h,
        ignore_index,
        n_parts,
        *hidden.stride(),
        *weight.stride(),
        bias.stride(0) if bias is not None else 0,
        target.stride(0),
        HAS_BIAS=bias is not None,
        REDUCE=reduce,
        **_dot_flags(hidden.dtype),
        BLOCK_N=blocks.n,
        BLOCK_V=blocks.v,
        BLOCK_K=blocks.k,
        num_warps=blocks.warps,
        num_stages=blocks.stages,
    )
    _lce_finish_kernel[(1,)](parts, n_parts, count, loss, REDUCE=reduce, BLOCK=_FINISH_BLOCK)
    return loss, stats, count


def _chunk(length: int, other: int, block: int) -> int:
    """Indices of a dZ chunk along a dim of ``length`` whose every index spans ``other`` elements:
    a multiple of ``block`` holding about CHUNK_ELEMENTS elements (at least one block)."""
    per = max(block, CHUNK_ELEMENTS // max(other, 1) // block * block)
    return max(1, min(per, length))


class _Backward:
    """The launches of the backward, which share the recomputation's arguments: the fused kernels
    (H in one tile: dZ lives only in registers) or chunks of dZ followed by matmuls."""

    def __init__(self, grad_output, hidden, weight, target, bias, stats, count, ignore_index, reduction):
        self.n, self.h = hidden.shape
        self.v = weight.shape[0]
        self.hidden, self.weight = hidden, weight
        self.ignore_index = ignore_index
        reduce = REDUCTIONS[reduction]
        self.fused = self.h == 0 or rt.next_pow2(self.h) <= FUSED_MAX_H
        self.blocks = _Blocks(hidden.dtype, self.n, self.v, self.h, fused_backward=self.fused)
        bl = self.blocks
        self.pointers = (hidden, weight, bias if bias is not None else weight, target, grad_output, stats, count)
        self.strides = (
            *hidden.stride(),
            *weight.stride(),
            bias.stride(0) if bias is not None else 0,
            target.stride(0),
            grad_output.stride(0) if reduce == 0 else 0,
        )
        self.meta = {
            "HAS_BIAS": bias is not None,
            "REDUCE": reduce,
            **_dot_flags(hidden.dtype),
            "BLOCK_N": bl.n,
            "BLOCK_V": bl.v,
            "BLOCK_K": bl.k,
            "num_warps": bl.warps,
            "num_stages": bl.stages,
        }

    def dhidden(self, dh: torch.Tensor) -> None:
        """Fused: dhidden (N, H) contiguous, one program per BLOCK_N rows."""
        _lce_dhidden_kernel[(rt.cdiv(self.n, self.blocks.n),)](
            *self.pointers, dh, self.n, self.v, self.h, self.ignore_index, *self.strides,
            BLOCK_H=self.blocks.h, **self.meta,
        )  # fmt: skip

    def dweight(self, dw: torch.Tensor | None, db: torch.Tensor | None) -> None:
        """Fused: dweight (V, H) contiguous and/or dbias (V,), one program per BLOCK_V columns."""
        _lce_dweight_kernel[(rt.cdiv(self.v, self.blocks.v),)](
            *self.pointers, dw if dw is not None else self.weight, db if db is not None else self.weight,
            self.n, self.v, self.h, self.ignore_index, *self.strides,
            STORE_W=dw is not None, STORE_B=db is not None, BLOCK_H=self.blocks.h, **self.meta,
        )  # fmt: skip

    def dlogits(self, d: torch.Tensor, row0: int, col0: int) -> torch.Tensor:
        """Chunked: dZ[row0:row0 + d.shape[0], col0:col0 + d.shape[1]] into ``d``."""
        n_rows, n_cols = d.shape
        grid = (rt.cdiv(n_rows, self.blocks.n), rt.cdiv(n_cols, self.blocks.v))
        _lce_dlogits_kernel[grid](
            *self.pointers, d, row0, col0, n_rows, n_cols, self.v, self.h, self.ignore_index, *self.strides,
            *d.stride(), **self.meta,
        )  # fmt: skip
        return d

    def chunked(self, dh: torch.Tensor | None, dw: torch.Tensor | None, db: torch.Tensor | None) -> None:
        """dhidden by chunks of rows, then dweight and dbias by chunks of vocabulary columns (H > 0)."""
        n, v, h = self.n, self.v, self.h
        dtype, dev = self.hidden.dtype, self.hidden.device
        if dh is not None:  # pass 1: dhidden[rows] = dZ[rows] @ W
            step = _chunk(n, v, self.blocks.n)
            buf = rt.empty((step * v,), dtype=dtype, device=dev)
            for row0 in range(0, n, step):
                rows = min(step, n - row0)
                d = self.dlogits(buf[: rows * v].view(rows, v), row0, 0)
                _mm(d.unsqueeze(0), self.weight.unsqueeze(0), dh[row0 : row0 + rows].unsqueeze(0))
            del buf, d  # one chunk of dZ at a time, also across the two passes
        if dw is not None or db is not None:  # pass 2: dweight[cols] = dZ[:, cols]^T @ hidden, dbias its row sums
            step = _chunk(v, n, self.blocks.v)
            buf = rt.empty((n * step,), dtype=dtype, device=dev)
            dw_out = dw if dw is not None else rt.empty((v, h), dtype=dtype, device=dev)  # the sums' carrier
            for col0 in range(0, v, step):
                cols = min(step, v - col0)
                d = self.dlogits(buf[: n * cols].view(n, cols), 0, col0)
                _mm(
                    d.t().unsqueeze(0),
                    self.hidden.unsqueeze(0),
                    dw_out[col0 : col0 + cols].unsqueeze(0),
                    rowsum=db[col0 : col0 + cols] if db is not None else None,
                )


def _lce_backward(grad_output, hidden, weight, target, bias, stats, count, ignore_index, reduction, output_mask):
    """(dhidden, dweight, dbias) as asked by ``output_mask`` (None where not)."""
    need_h, need_w, need_b = output_mask
    n, h = hidden.shape
    v = weight.shape[0]
    dev, dtype = hidden.device, hidden.dtype
    dh = rt.empty((n, h), dtype=dtype, device=dev) if need_h else None
    dw = rt.empty((v, h), dtype=dtype, device=dev) if need_w else None
    db = rt.empty((v,), dtype=dtype, device=dev) if need_b and bias is not None else None
    if n == 0:  # no rows: the weight and bias gradients are sums over nothing; nothing launched
        for grad in (dw, db):
            if grad is not None:
                grad.zero_()
        return dh, dw, db
    back = _Backward(grad_output, hidden, weight, target, bias, stats, count, ignore_index, reduction)
    if back.fused:
        if dh is not None:
            back.dhidden(dh)
        if dw is not None or db is not None:
            back.dweight(dw, db)
    else:
        back.chunked(dh, dw, db)
    return dh, dw, db


# ---------------------------------------------------------------------------------------------
# Custom ops (torch.ops.blitz.linear_cross_entropy and its backward) and the public API
# ---------------------------------------------------------------------------------------------


@custom_op("linear_cross_entropy")
def linear_cross_entropy_op(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    bias: torch.Tensor | None,
    ignore_index: int,
    reduction: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, row_stats, count) on arguments ``linear_cross_entropy`` checked: row_stats (N, 2)
    (each row's max logit and log of its shifted sum of exp) and count (1,) (the counted targets),
    in the accumulation dtype, are what the backward recomputes dZ from; only the loss is
    differentiable. An out-of-range target raises IndexError."""
    return _lce_forward(hidden, weight, target, bias, ignore_index, reduction)


@linear_cross_entropy_op.register_fake
def _(hidden, weight, target, bias, ignore_index, reduction):
    acc = acc_dtype(hidden.dtype)
    loss = hidden.new_empty(target.shape if reduction == "none" else ())
    return loss, hidden.new_empty((hidden.shape[0], 2), dtype=acc), hidden.new_empty((1,), dtype=acc)


def _placeholder(like: torch.Tensor) -> torch.Tensor:
    """What the backward op returns for a gradient not asked for (a schema cannot return None)."""
    return like.new_empty((0,))


@custom_op("linear_cross_entropy_backward")
def linear_cross_entropy_backward_op(
    grad_output: torch.Tensor,
    hidden: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    bias: torch.Tensor | None,
    row_stats: torch.Tensor,
    count: torch.Tensor,
    ignore_index: int,
    reduction: str,
    output_mask: list[bool],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dhidden, dweight, dbias), each only where ``output_mask`` asks (else an empty placeholder),
    from dZ recomputed from the forward's row statistics (fused kernels, or chunks of dZ and
    matmuls past FUSED_MAX_H)."""
    dh, dw, db = _lce_backward(
        grad_output, hidden, weight, target, bias, row_stats, count, ignore_index, reduction, output_mask
    )
    return (
        dh if dh is not None else _placeholder(hidden),
        dw if dw is not None else _placeholder(weight),
        db if db is not None else _placeholder(weight),
    )


@linear_cross_entropy_backward_op.register_fake
def _(grad_output, hidden, weight, target, bias, row_stats, count, ignore_index, reduction, output_mask):
    need_h, need_w, need_b = output_mask
    return (
        hidden.new_empty(hidden.shape) if need_h else _placeholder(hidden),
        weight.new_empty(weight.shape) if need_w else _placeholder(weight),
        weight.new_empty((weight.shape[0],)) if need_b and bias is not None else _placeholder(weight),
    )


def _setup_context(ctx, inputs, output) -> None:
    hidden, weight, target, bias, ignore_index, reduction = inputs
    _, stats, count = output
    ctx.mark_non_differentiable(stats, count)
    ctx.save_for_backward(hidden, weight, target, bias, stats, count)
    ctx.options = (ignore_index, reduction)


def _autograd_backward(ctx, g, _g_stats, _g_count):
    hidden, weight, target, bias, stats, count = ctx.saved_tensors
    need = [bool(ctx.needs_input_grad[0]), bool(ctx.needs_input_grad[1]), bool(ctx.needs_input_grad[3])]
    need[2] = need[2] and bias is not None
    if not any(need):
        return None, None, None, None, None, None
    grads = linear_cross_entropy_backward_op(g, hidden, weight, target, bias, stats, count, *ctx.options, need)
    dh, dw, db = (grad if wanted else None for grad, wanted in zip(grads, need, strict=True))
    return dh, dw, None, db, None, None


linear_cross_entropy_op.register_autograd(_autograd_backward, setup_context=_setup_context)


def linear_cross_entropy(
    input: torch.Tensor,
    linear_weight: torch.Tensor,
    target: torch.Tensor,
    *,
    linear_bias: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    reduction: str = "mean",
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """``torch.nn.functional.linear_cross_entropy`` (its signature, torch >= 2.13), i.e.
    ``F.cross_entropy(F.linear(input, linear_weight, linear_bias), target, ...)``, without
    materialising the (N, V) logits: input (N, H), linear_weight (V, H), linear_bias (V,) or None,
    target (N,) int64 class indices; ``ignore_index=None`` means -100, as torch. An out-of-range
    target (other than ``ignore_index``) raises IndexError; all targets ignored gives NaN for
    'mean', as torch. input, linear_weight and linear_bias get gradients. Class weights
    (``weight``) and ``label_smoothing`` are not implemented and raise NotImplementedError."""
    if weight is not None:
        raise NotImplementedError(
            "linear_cross_entropy: class weights (weight=) are not supported by this kernel; use "
            "F.cross_entropy(F.linear(...), weight=...)"
        )
    if label_smoothing != 0.0:
        raise NotImplementedError(
            f"linear_cross_entropy: label_smoothing={label_smoothing!r} is not supported by this kernel (only 0.0)"
        )
    ignore_index = -100 if ignore_index is None else ignore_index
    _check_linear_cross_entropy(input, linear_weight, target, linear_bias, ignore_index, reduction)
    loss, _, _ = linear_cross_entropy_op(input, linear_weight, target, linear_bias, ignore_index, reduction)
    return loss
