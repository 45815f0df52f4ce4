"""scaled_dot_product_attention as flash attention in Triton: forward and backward for q, k and v of
shape (B, H, T, D) in any layout, causal or not, at fp16, bf16, fp32 and fp64.

Forward: each program owns BLOCK_M query rows of one (batch, head) and streams the keys in blocks
of BLOCK_N with an online softmax (a running row max m and sum l; the output accumulator and l are
rescaled by exp(m_old - m_new) when the max grows). Causal programs stop at the diagonal, and only
the key blocks that cross the diagonal or the end of the keys are masked. Only the output and each
row's logsumexp (m + log l) are saved for the backward: the (T, T) probabilities never exist.

Backward (FlashAttention-2's split, two kernels): one program per query block computes
delta_i = rowsum(dO_i * O_i) for its rows (stored), then walks the key blocks, recomputes
P = exp(S - lse) and accumulates dq = scale * dS k with dS = P * (dP - delta), dP = dO v^T; then
one program per key block walks the query blocks the same way for dv = P^T dO and
dk = scale * dS^T q. No atomics: the results are deterministic.

Numerics: fp16 and bf16 run their dots on the input dtype with fp32 accumulation, and round P and
dS to the input dtype before the dots that take them (FlashAttention's choice: tensor cores take
fp16/bf16 operands); softmax, logsumexp and the accumulators are fp32. fp32 dots follow
``torch.get_float32_matmul_precision()`` (TF32 unless "highest"). fp64 inputs are computed in fp64
throughout (libdevice exp and log when compiled). Under the Triton interpreter (triton 3.9) a cast
from fp32 to bf16 truncates where the GPU rounds to nearest, so there P, dS and the stored bf16
results carry up to one unit of bf16 roundoff per cast instead of half a unit.

Conventions, as ``torch.nn.functional.scaled_dot_product_attention``: the scale defaults to
1/sqrt(D); the causal mask is aligned top-left (query i sees key j iff j <= i), also when the
query and key lengths differ, so every query row sees key 0 and no row is ever fully masked (a
row whose scores are all -inf, from infinite inputs, is NaN, as torch's softmax); no keys
(T_k = 0) give zeros and an empty head dim (D = 0) uniform weights, as torch. v's head dim may
differ from q's and k's. A NaN (or an inf that makes inf - inf) in query row i makes output row i
NaN and no other; masked scores are dropped, not added to, so a NaN in key j reaches only the
queries that see it (torch's math backend adds its -inf mask to the NaN score and makes every row
NaN; its CPU flash kernel agrees with this one). Nothing is launched when B, H, T_q or T_k is 0.
Not supported (a clear error before any launch): an ``attn_mask`` tensor, dropout, fewer key/value
heads than query heads (``enable_gqa``), head dims above ``MAX_HEAD_DIM``.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from kernels import _runtime as rt
from kernels._library import custom_op

__all__ = [
    "MAX_HEAD_DIM",
    "scaled_dot_product_attention",
    "scaled_dot_product_attention_backward_op",
    "scaled_dot_product_attention_op",
]

#: Largest head dim (q/k and v): a whole head row lives in registers (torch's flash kernels stop at 256 too).
MAX_HEAD_DIM = 256


def _config(bm: int, bn: int, warps: int, stages: int) -> triton.Config:
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=warps, num_stages=stages)


# The first config of each list is the only one under the interpreter (and, compiled, the one for
# short sequences: see _prune): 32 x 32 tiles make the property tests' sequences (up to 129) cross
# several blocks, so the online softmax, the unmasked and masked loops and the tails all run. The
# others are flash-attention tiles for H100-class parts that compile without register spills at
# D = 128 in bf16 (sm_90, triton 3.9, checked with ptxas's resource usage; not yet timed on a GPU,
# so the autotuner times them); the last, 16 x 16, is the one whose shared memory fits fp64 at
# D = 256 (its backward needs 272 KiB at 32 x 32, past the 227 KiB of an H100's block; a tile that
# does not fit is skipped by the autotuner).
_FWD_CONFIGS = [
    _config(32, 32, 4, 2),
    _config(128, 64, 8, 3),
    _config(128, 64, 8, 4),
    _config(128, 32, 8, 3),
    _config(64, 64, 8, 3),
    _config(64, 32, 4, 3),
    _config(16, 16, 4, 1),
]
# dq: BLOCK_M queries per program, walking BLOCK_N keys at a time
_DQ_CONFIGS = [
    _config(32, 32, 4, 2),
    _config(128, 32, 8, 3),
    _config(64, 32, 8, 3),
    _config(64, 64, 8, 3),
    _config(64, 16, 4, 2),
    _config(16, 16, 4, 1),
]
# dk/dv: BLOCK_N keys per program, walking BLOCK_M queries at a time (two (BLOCK_N, D) fp32
# accumulators and k, v stay in registers: 64 keys at 8 warps is the widest tile without spills)
_DKDV_CONFIGS = [
    _config(32, 32, 4, 2),
    _config(32, 64, 8, 3),
    _config(32, 64, 8, 2),
    _config(16, 64, 8, 3),
    _config(64, 64, 8, 3),
    _config(16, 16, 4, 1),
]
#: fp64 tiles take twice fp32's registers and shared memory: the big ones spill or do not fit.
_FP64_MAX_TILE = 64 * 64
#: Sequences up to this length take the first config without timing any (the property tests draw
#: up to 129, each shape a new autotuning key): one compile per kernel variant instead of one per
#: config, and no benchmark runs.
_TUNE_MIN_T = 256


def _tile(config: triton.Config) -> int:
    return config.kwargs["BLOCK_M"] * config.kwargs["BLOCK_N"]


def _prune(configs, named_args, **kwargs):
    """The configs the autotuner times (compiled only; the interpreter has one): fp64 keeps the
    tiles up to ``_FP64_MAX_TILE``; short sequences take one config, the first (the smallest, 16 x
    16, for fp64 heads past 128, where the first does not fit in shared memory)."""
    if len(configs) == 1:
        return configs
    fp64 = named_args["q_ptr"].dtype == torch.float64
    if fp64:
        configs = [c for c in configs if _tile(c) <= _FP64_MAX_TILE]
    if max(named_args["Tq"], named_args["Tk"]) <= _TUNE_MIN_T:
        wide = fp64 and max(kwargs["BLOCK_D"], kwargs["BLOCK_DV"]) > 128
        return [min(configs, key=_tile) if wide else configs[0]]
    return configs


_KEY = ["Tq", "Tk", "BLOCK_D", "BLOCK_DV", "IS_CAUSAL"]


# ---------------------------------------------------------------------------------------------
# Triton kernels
# ---------------------------------------------------------------------------------------------
# Registers: a loop carries only scalar base pointers and 1-D offset vectors; each step builds its
# 2-D pointer tiles from them (a (64, 128) tile of 64-bit pointers carried across the loop takes
# 64 registers per thread at 8 warps, and the compiled forward spilled).
# Interpreter: every call of a @triton.jit function costs milliseconds there (the interpreter
# re-patches triton.language on each call; tl.zeros, tl.max and tl.sum are such functions), so
# loads, casts and exp are written inline, tl.full replaces tl.zeros, and a kernel calls its loop
# helper once per non-empty segment.


@triton.jit
def _fwd_keys(
    acc,  # (BLOCK_M, BLOCK_DV) running sum of p v, relative to the running max
    l_i,  # (BLOCK_M,) running sum of p
    m_i,  # (BLOCK_M,) running max of the scores
    q,  # (BLOCK_M, BLOCK_D) this program's queries
    offs_m,  # (BLOCK_M,) int64 query positions
    k_cur,  # k at (b, h, n_lo, 0)
    v_cur,  # v at (b, h, n_lo, 0)
    k_cols,  # (BLOCK_N,) int64 offsets of a block's keys in k (j * sk_t)
    k_rows,  # (BLOCK_D,) int64 offsets of the head dim in k (d * sk_d)
    v_rows,  # (BLOCK_N,) int64 offsets of a block's keys in v
    v_cols,  # (BLOCK_DV,) int64 offsets of v's head dim
    d_ok,  # (BLOCK_D, 1) head-dim mask of k^T
    dv_ok,  # (1, BLOCK_DV) head-dim mask of v
    n_lo,  # first key, a multiple of BLOCK_N
    n_hi,  # keys [n_lo, n_hi)
    Tk,
    k_step,  # BLOCK_N * k's T stride (int64)
    v_step,
    scale,
    MASK: tl.constexpr,  # mask the causal diagonal and the keys past Tk (else every score counts)
    IS_CAUSAL: tl.constexpr,
    UPCAST: tl.constexpr,
    PRECISE: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """The online softmax over the key blocks in [n_lo, n_hi); returns the state and the base
    pointers advanced to n_hi."""
    in_ty = k_cur.dtype.element_ty
    tile_ty = tl.float32 if UPCAST else in_ty
    offs_n = n_lo + tl.arange(0, BLOCK_N)
    for _ in range(n_lo, n_hi, BLOCK_N):
        k_ptrs = k_cur + k_rows[:, None] + k_cols[None, :]  # (BLOCK_D, BLOCK_N): k^T
        v_ptrs = v_cur + v_rows[:, None] + v_cols[None, :]  # (BLOCK_N, BLOCK_DV)
        if MASK:
            n_ok = offs_n < Tk
            k_t = tl.load(k_ptrs, mask=d_ok & n_ok[None, :], other=0.0).to(tile_ty)
            v = tl.load(v_ptrs, mask=n_ok[:, None] & dv_ok, other=0.0).to(tile_ty)
        else:
            k_t = tl.load(k_ptrs, mask=d_ok, other=0.0).to(tile_ty)
            v = tl.load(v_ptrs, mask=dv_ok, other=0.0).to(tile_ty)
        s = tl.dot(q, k_t, input_precision=PRECISION) * scale  # (BLOCK_M, BLOCK_N)
        if MASK:
            ok = n_ok[None, :]
            if IS_CAUSAL:
                ok = ok & (offs_n[None, :] <= offs_m[:, None])
            s = tl.where(ok, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        shift = tl.where(m_new == float("-inf"), 0.0, m_new)  # no key seen yet: nothing to shift
        if PRECISE:
            alpha = libdevice.exp(m_i - shift)
            p = libdevice.exp(s - shift[:, None])
        else:
            alpha = tl.exp(m_i - shift)
            p = tl.exp(s - shift[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        # P rounded to the input dtype for the dot, as the tensor cores take it
        acc = acc * alpha[:, None] + tl.dot(p.to(in_ty).to(tile_ty), v, input_precision=PRECISION)
        m_i = m_new
        offs_n += BLOCK_N
        k_cur += k_step
        v_cur += v_step
    return acc, l_i, m_i, k_cur, v_cur


@rt.autotune(_FWD_CONFIGS, key=_KEY, prune_configs_by={"early_config_prune": _prune})
@triton.jit
def _attn_fwd_kernel(
    q_ptr,  # (B, H, Tq, D), any strides
    k_ptr,  # (B, H, Tk, D), any strides
    v_ptr,  # (B, H, Tk, DV), any strides
    o_ptr,  # output (B, H, Tq, DV), contiguous
    lse_ptr,  # logsumexp of each query's scores (B, H, Tq), contiguous, fp32 (fp64 for fp64)
    scale_ptr,  # (1,) the softmax scale at the compute precision
    H,
    Tq,
    Tk,
    D,
    DV,
    sq_b,
    sq_h,
    sq_t,
    sq_d,  # q's strides
    sk_b,
    sk_h,
    sk_t,
    sk_d,  # k's strides
    sv_b,
    sv_h,
    sv_t,
    sv_d,  # v's strides
    IS_CAUSAL: tl.constexpr,
    UPCAST: tl.constexpr,  # interpreter: fp16/bf16 tiles as fp32 (bf16 arithmetic and dots are wrong there)
    PRECISE: tl.constexpr,  # libdevice exp/log (compiled fp64)
    PRECISION: tl.constexpr,  # tl.dot input_precision for fp32 ("ieee" or "tf32")
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,  # D padded to a power of 2 (>= 16: tl.dot's minimum when compiled)
    BLOCK_DV: tl.constexpr,
):
    # program -> (batch * head, query block), the longest causal rows first
    num_m = (Tq + BLOCK_M - 1) // BLOCK_M
    pid = tl.program_id(0)
    bh = pid // num_m
    m0 = (num_m - 1 - pid % num_m) * BLOCK_M
    b = (bh // H).to(tl.int64)  # int64 offsets: a batch stride times B can pass 2^31
    h = (bh % H).to(tl.int64)
    tile_ty = tl.float32 if UPCAST else q_ptr.dtype.element_ty
    acc_ty = tl.float64 if q_ptr.dtype.element_ty == tl.float64 else tl.float32
    offs_m = m0 + tl.arange(0, BLOCK_M).to(tl.int64)
    offs_d = tl.arange(0, BLOCK_D).to(tl.int64)
    offs_n = tl.arange(0, BLOCK_N).to(tl.int64)
    offs_dv = tl.arange(0, BLOCK_DV).to(tl.int64)
    m_ok = offs_m < Tq
    q_ptrs = q_ptr + b * sq_b + h * sq_h + offs_m[:, None] * sq_t + offs_d[None, :] * sq_d
    q = tl.load(q_ptrs, mask=m_ok[:, None] & (offs_d < D)[None, :], other=0.0).to(tile_ty)
    scale = tl.load(scale_ptr)
    m_i = tl.full((BLOCK_M,), float("-inf"), acc_ty)
    l_i = tl.full((BLOCK_M,), 0.0, acc_ty)
    acc = tl.full((BLOCK_M, BLOCK_DV), 0.0, acc_ty)
    k_cur = k_ptr + b * sk_b + h * sk_h
    v_cur = v_ptr + b * sv_b + h * sv_h
    k_cols, k_rows = offs_n * sk_t, offs_d * sk_d
    v_rows, v_cols = offs_n * sv_t, offs_dv * sv_d
    k_step = BLOCK_N * tl.cast(sk_t, tl.int64)
    v_step = BLOCK_N * tl.cast(sv_t, tl.int64)
    d_ok = (offs_d < D)[:, None]
    dv_ok = (offs_dv < DV)[None, :]
    # keys [0, full) need no mask in any of these rows; [full, hi) cross the diagonal or the end
    if IS_CAUSAL:
        hi = tl.minimum(Tk, m0 + BLOCK_M)
        full = (tl.minimum(Tk, m0 + 1) // BLOCK_N) * BLOCK_N
    else:
        hi = Tk
        full = (Tk // BLOCK_N) * BLOCK_N
    if full > 0:
        acc, l_i, m_i, k_cur, v_cur = _fwd_keys(
            acc, l_i, m_i, q, offs_m, k_cur, v_cur, k_cols, k_rows, v_rows, v_cols, d_ok, dv_ok, 0, full, Tk,
            k_step, v_step, scale, False, IS_CAUSAL, UPCAST, PRECISE, PRECISION, BLOCK_N,
        )  # fmt: skip
    if full < hi:
        acc, l_i, m_i, k_cur, v_cur = _fwd_keys(
            acc, l_i, m_i, q, offs_m, k_cur, v_cur, k_cols, k_rows, v_rows, v_cols, d_ok, dv_ok, full, hi, Tk,
            k_step, v_step, scale, True, IS_CAUSAL, UPCAST, PRECISE, PRECISION, BLOCK_N,
        )  # fmt: skip
    out = acc / l_i[:, None]  # a row whose scores are all -inf: 0 / 0 = NaN, as torch's softmax
    shift = tl.where(m_i == float("-inf"), 0.0, m_i)
    if PRECISE:
        lse = shift + libdevice.log(l_i)
    else:
        lse = shift + tl.log(l_i)
    row = bh.to(tl.int64) * Tq + offs_m
    o_ptrs = o_ptr + row[:, None] * DV + offs_dv[None, :]
    tl.store(o_ptrs, out.to(o_ptr.dtype.element_ty), mask=m_ok[:, None] & dv_ok)
    tl.store(lse_ptr + row, lse.to(lse_ptr.dtype.element_ty), mask=m_ok)


@triton.jit
def _dq_keys(
    dq,  # (BLOCK_M, BLOCK_D) running sum of dS k (scaled at the end)
    q,  # (BLOCK_M, BLOCK_D) this program's queries
    do,  # (BLOCK_M, BLOCK_DV) their grad_output rows
    lse,  # (BLOCK_M,)
    delta,  # (BLOCK_M,)
    offs_m,  # (BLOCK_M,) int64 query positions
    k_cur,  # k at (b, h, n_lo, 0)
    v_cur,  # v at (b, h, n_lo, 0)
    k_cols,  # (BLOCK_N,) int64 offsets of a block's keys in k
    k_rows,  # (BLOCK_D,) int64 offsets of k's head dim
    v_cols,  # (BLOCK_N,) int64 offsets of a block's keys in v
    v_rows,  # (BLOCK_DV,) int64 offsets of v's head dim
    d_ok,  # (BLOCK_D, 1) head-dim mask of k^T
    dv_ok,  # (BLOCK_DV, 1) head-dim mask of v^T
    n_lo,  # first key, a multiple of BLOCK_N
    n_hi,  # keys [n_lo, n_hi)
    Tk,
    k_step,
    v_step,
    scale,
    MASK: tl.constexpr,  # mask the causal diagonal and the keys past Tk
    IS_CAUSAL: tl.constexpr,
    UPCAST: tl.constexpr,
    PRECISE: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """dq over the key blocks in [n_lo, n_hi), P recomputed from the saved lse; returns it and the
    base pointers advanced to n_hi."""
    in_ty = k_cur.dtype.element_ty
    tile_ty = tl.float32 if UPCAST else in_ty
    offs_n = n_lo + tl.arange(0, BLOCK_N)
    for _ in range(n_lo, n_hi, BLOCK_N):
        k_ptrs = k_cur + k_rows[:, None] + k_cols[None, :]  # (BLOCK_D, BLOCK_N): k^T
        v_ptrs = v_cur + v_rows[:, None] + v_cols[None, :]  # (BLOCK_DV, BLOCK_N): v^T
        if MASK:
            n_ok = offs_n < Tk
            k_t = tl.load(k_ptrs, mask=d_ok & n_ok[None, :], other=0.0).to(tile_ty)
            v_t = tl.load(v_ptrs, mask=dv_ok & n_ok[None, :], other=0.0).to(tile_ty)
        else:
            k_t = tl.load(k_ptrs, mask=d_ok, other=0.0).to(tile_ty)
            v_t = tl.load(v_ptrs, mask=dv_ok, other=0.0).to(tile_ty)
        s = tl.dot(q, k_t, input_precision=PRECISION) * scale - lse[:, None]  # (BLOCK_M, BLOCK_N)
        if PRECISE:
            p = libdevice.exp(s)
        else:
            p = tl.exp(s)
        dp = tl.dot(do, v_t, input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        if MASK:
            ok = n_ok[None, :]
            if IS_CAUSAL:
                ok = ok & (offs_n[None, :] <= offs_m[:, None])
            ds = tl.where(ok, ds, 0.0)
        dq += tl.dot(ds.to(in_ty).to(tile_ty), tl.trans(k_t), input_precision=PRECISION)
        offs_n += BLOCK_N
        k_cur += k_step
        v_cur += v_step
    return dq, k_cur, v_cur


@rt.autotune(_DQ_CONFIGS, key=_KEY, prune_configs_by={"early_config_prune": _prune})
@triton.jit
def _attn_bwd_dq_kernel(
    q_ptr,  # (B, H, Tq, D), any strides
    k_ptr,  # (B, H, Tk, D), any strides
    v_ptr,  # (B, H, Tk, DV), any strides
    do_ptr,  # grad_output (B, H, Tq, DV), any strides
    o_ptr,  # output (B, H, Tq, DV), contiguous, from the forward
    lse_ptr,  # (B, H, Tq) contiguous, from the forward
    delta_ptr,  # (B, H, Tq) contiguous: rowsum(dO * O), written here for the dk/dv kernel
    dq_ptr,  # (B, H, Tq, D) contiguous
    scale_ptr,  # (1,)
    H,
    Tq,
    Tk,
    D,
    DV,
    sq_b,
    sq_h,
    sq_t,
    sq_d,
    sk_b,
    sk_h,
    sk_t,
    sk_d,
    sv_b,
    sv_h,
    sv_t,
    sv_d,
    sdo_b,
    sdo_h,
    sdo_t,
    sdo_d,
    IS_CAUSAL: tl.constexpr,
    UPCAST: tl.constexpr,
    PRECISE: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,  # queries per program
    BLOCK_N: tl.constexpr,  # keys per step
    BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr,
):
    num_m = (Tq + BLOCK_M - 1) // BLOCK_M
    pid = tl.program_id(0)
    bh = pid // num_m
    m0 = (num_m - 1 - pid % num_m) * BLOCK_M
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    tile_ty = tl.float32 if UPCAST else q_ptr.dtype.element_ty
    acc_ty = tl.float64 if q_ptr.dtype.element_ty == tl.float64 else tl.float32
    offs_m = m0 + tl.arange(0, BLOCK_M).to(tl.int64)
    offs_d = tl.arange(0, BLOCK_D).to(tl.int64)
    offs_n = tl.arange(0, BLOCK_N).to(tl.int64)
    offs_dv = tl.arange(0, BLOCK_DV).to(tl.int64)
    m_ok = (offs_m < Tq)[:, None]
    d_ok = (offs_d < D)[None, :]
    dv_ok = (offs_dv < DV)[None, :]
    # query rows past Tq load as 0 and are never stored: no row of dq depends on another
    q_ptrs = q_ptr + b * sq_b + h * sq_h + offs_m[:, None] * sq_t + offs_d[None, :] * sq_d
    do_ptrs = do_ptr + b * sdo_b + h * sdo_h + offs_m[:, None] * sdo_t + offs_dv[None, :] * sdo_d
    q = tl.load(q_ptrs, mask=m_ok & d_ok, other=0.0).to(tile_ty)
    do = tl.load(do_ptrs, mask=m_ok & dv_ok, other=0.0)
    row = bh.to(tl.int64) * Tq + offs_m
    lse = tl.load(lse_ptr + row, mask=offs_m < Tq, other=0.0)
    # delta = rowsum(dO * O) for these rows (FlashAttention's preprocessing, fused here; the dk/dv
    # kernel, launched next, reads it)
    o = tl.load(o_ptr + row[:, None] * DV + offs_dv[None, :], mask=m_ok & dv_ok, other=0.0)
    delta = tl.sum(o.to(acc_ty) * do.to(acc_ty), axis=1)
    tl.store(delta_ptr + row, delta, mask=offs_m < Tq)
    do = do.to(tile_ty)
    scale = tl.load(scale_ptr)
    dq = tl.full((BLOCK_M, BLOCK_D), 0.0, acc_ty)
    k_cur = k_ptr + b * sk_b + h * sk_h
    v_cur = v_ptr + b * sv_b + h * sv_h
    k_cols, k_rows = offs_n * sk_t, offs_d * sk_d
    v_cols, v_rows = offs_n * sv_t, offs_dv * sv_d
    k_step = BLOCK_N * tl.cast(sk_t, tl.int64)
    v_step = BLOCK_N * tl.cast(sv_t, tl.int64)
    d_ok_t = (offs_d < D)[:, None]
    dv_ok_t = (offs_dv < DV)[:, None]
    if IS_CAUSAL:
        hi = tl.minimum(Tk, m0 + BLOCK_M)
        full = (tl.minimum(Tk, m0 + 1) // BLOCK_N) * BLOCK_N
    else:
        hi = Tk
        full = (Tk // BLOCK_N) * BLOCK_N
    if full > 0:
        dq, k_cur, v_cur = _dq_keys(
            dq, q, do, lse, delta, offs_m, k_cur, v_cur, k_cols, k_rows, v_cols, v_rows, d_ok_t, dv_ok_t, 0, full,
            Tk, k_step, v_step, scale, False, IS_CAUSAL, UPCAST, PRECISE, PRECISION, BLOCK_N,
        )  # fmt: skip
    if full < hi:
        dq, k_cur, v_cur = _dq_keys(
            dq, q, do, lse, delta, offs_m, k_cur, v_cur, k_cols, k_rows, v_cols, v_rows, d_ok_t, dv_ok_t, full, hi,
            Tk, k_step, v_step, scale, True, IS_CAUSAL, UPCAST, PRECISE, PRECISION, BLOCK_N,
        )  # fmt: skip
    dq = dq * scale
    tl.store(dq_ptr + row[:, None] * D + offs_d[None, :], dq.to(dq_ptr.dtype.element_ty), mask=m_ok & d_ok)


@triton.jit
def _dkdv_queries(
    dk,  # (BLOCK_N, BLOCK_D) running sum of dS^T q (scaled at the end)
    dv,  # (BLOCK_N, BLOCK_DV) running sum of P^T dO
    k,  # (BLOCK_N, BLOCK_D) this program's keys
    v,  # (BLOCK_N, BLOCK_DV) this program's values
    offs_n,  # (BLOCK_N,) int64 key positions
    q_cur,  # q at (b, h, m_lo, 0)
    do_cur,  # grad_output at (b, h, m_lo, 0)
    stats_cur,  # lse and delta at (b, h, m_lo): one offset for both (same layout)
    lse_ptr,
    delta_ptr,
    q_cols,  # (BLOCK_M,) int64 offsets of a block's queries in q
    q_rows,  # (BLOCK_D,) int64 offsets of q's head dim
    do_rows,  # (BLOCK_M,) int64 offsets of a block's rows in grad_output
    do_cols,  # (BLOCK_DV,) int64 offsets of grad_output's head dim
    d_ok,  # (BLOCK_D, 1) head-dim mask of q^T
    dv_ok,  # (1, BLOCK_DV) head-dim mask of grad_output
    m_lo,  # first query, a multiple of BLOCK_M
    m_hi,  # queries [m_lo, m_hi)
    Tq,
    q_step,
    do_step,
    scale,
    MASK: tl.constexpr,  # mask the causal diagonal and the queries past Tq
    IS_CAUSAL: tl.constexpr,
    UPCAST: tl.constexpr,
    PRECISE: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    """dk and dv over the query blocks in [m_lo, m_hi), P recomputed from the saved lse; returns
    them and the base pointers advanced to m_hi."""
    in_ty = q_cur.dtype.element_ty
    tile_ty = tl.float32 if UPCAST else in_ty
    offs_m = m_lo + tl.arange(0, BLOCK_M)
    for _ in range(m_lo, m_hi, BLOCK_M):
        q_ptrs = q_cur + q_rows[:, None] + q_cols[None, :]  # (BLOCK_D, BLOCK_M): q^T
        do_ptrs = do_cur + do_rows[:, None] + do_cols[None, :]  # (BLOCK_M, BLOCK_DV)
        if MASK:
            m_ok = offs_m < Tq
            q_t = tl.load(q_ptrs, mask=d_ok & m_ok[None, :], other=0.0).to(tile_ty)
            do = tl.load(do_ptrs, mask=m_ok[:, None] & dv_ok, other=0.0).to(tile_ty)
            lse = tl.load(lse_ptr + stats_cur + offs_m, mask=m_ok, other=0.0)
            delta = tl.load(delta_ptr + stats_cur + offs_m, mask=m_ok, other=0.0)
        else:
            q_t = tl.load(q_ptrs, mask=d_ok, other=0.0).to(tile_ty)
            do = tl.load(do_ptrs, mask=dv_ok, other=0.0).to(tile_ty)
            lse = tl.load(lse_ptr + stats_cur + offs_m)
            delta = tl.load(delta_ptr + stats_cur + offs_m)
        s_t = tl.dot(k, q_t, input_precision=PRECISION) * scale - lse[None, :]  # (BLOCK_N, BLOCK_M)
        if PRECISE:
            p_t = libdevice.exp(s_t)
        else:
            p_t = tl.exp(s_t)
        if MASK:
            ok = m_ok[None, :]
            if IS_CAUSAL:
                ok = ok & (offs_m[None, :] >= offs_n[:, None])
            p_t = tl.where(ok, p_t, 0.0)
        dv += tl.dot(p_t.to(in_ty).to(tile_ty), do, input_precision=PRECISION)
        dp_t = tl.dot(v, tl.trans(do), input_precision=PRECISION)  # (BLOCK_N, BLOCK_M)
        ds_t = p_t * (dp_t - delta[None, :])
        if MASK:  # a masked query adds nothing, even where an inf in v made dP inf or NaN
            ds_t = tl.where(ok, ds_t, 0.0)
        dk += tl.dot(ds_t.to(in_ty).to(tile_ty), tl.trans(q_t), input_precision=PRECISION)
        offs_m += BLOCK_M
        q_cur += q_step
        do_cur += do_step
    return dk, dv, q_cur, do_cur


@rt.autotune(_DKDV_CONFIGS, key=_KEY, prune_configs_by={"early_config_prune": _prune})
@triton.jit
def _attn_bwd_dkdv_kernel(
    q_ptr,  # (B, H, Tq, D), any strides
    k_ptr,  # (B, H, Tk, D), any strides
    v_ptr,  # (B, H, Tk, DV), any strides
    do_ptr,  # grad_output (B, H, Tq, DV), any strides
    lse_ptr,  # (B, H, Tq) contiguous, from the forward
    delta_ptr,  # (B, H, Tq) contiguous, from _attn_bwd_dq_kernel
    dk_ptr,  # (B, H, Tk, D) contiguous
    dv_ptr,  # (B, H, Tk, DV) contiguous
    scale_ptr,  # (1,)
    H,
    Tq,
    Tk,
    D,
    DV,
    sq_b,
    sq_h,
    sq_t,
    sq_d,
    sk_b,
    sk_h,
    sk_t,
    sk_d,
    sv_b,
    sv_h,
    sv_t,
    sv_d,
    sdo_b,
    sdo_h,
    sdo_t,
    sdo_d,
    IS_CAUSAL: tl.constexpr,
    UPCAST: tl.constexpr,
    PRECISE: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,  # queries per step
    BLOCK_N: tl.constexpr,  # keys per program
    BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr,
):
    num_n = (Tk + BLOCK_N - 1) // BLOCK_N
    pid = tl.program_id(0)
    bh = pid // num_n
    n0 = (pid % num_n) * BLOCK_N
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    tile_ty = tl.float32 if UPCAST else q_ptr.dtype.element_ty
    acc_ty = tl.float64 if q_ptr.dtype.element_ty == tl.float64 else tl.float32
    offs_n = n0 + tl.arange(0, BLOCK_N).to(tl.int64)
    offs_m = tl.arange(0, BLOCK_M).to(tl.int64)
    offs_d = tl.arange(0, BLOCK_D).to(tl.int64)
    offs_dv = tl.arange(0, BLOCK_DV).to(tl.int64)
    n_ok = (offs_n < Tk)[:, None]
    d_ok = (offs_d < D)[None, :]
    dv_ok = (offs_dv < DV)[None, :]
    # key rows past Tk load as 0 and are never stored: no row of dk or dv depends on another
    k_ptrs = k_ptr + b * sk_b + h * sk_h + offs_n[:, None] * sk_t + offs_d[None, :] * sk_d
    v_ptrs = v_ptr + b * sv_b + h * sv_h + offs_n[:, None] * sv_t + offs_dv[None, :] * sv_d
    k = tl.load(k_ptrs, mask=n_ok & d_ok, other=0.0).to(tile_ty)
    v = tl.load(v_ptrs, mask=n_ok & dv_ok, other=0.0).to(tile_ty)
    scale = tl.load(scale_ptr)
    dk = tl.full((BLOCK_N, BLOCK_D), 0.0, acc_ty)
    dv = tl.full((BLOCK_N, BLOCK_DV), 0.0, acc_ty)
    # query blocks: [lo, mid) cross the causal diagonal, [mid, full) need no mask, [tail, Tq) is the
    # partial last block (causal: with any diagonal block past full); one walk from lo to Tq
    full = (Tq // BLOCK_M) * BLOCK_M
    if IS_CAUSAL:
        lo = (n0 // BLOCK_M) * BLOCK_M  # queries before the first key see none of these keys
        mid = ((n0 + BLOCK_N - 1 + BLOCK_M - 1) // BLOCK_M) * BLOCK_M  # first block past the last key
        mid = tl.maximum(lo, tl.minimum(mid, full))
        tail = tl.maximum(mid, full)
    else:
        lo = 0
        mid = 0
        tail = full
    q_cur = q_ptr + b * sq_b + h * sq_h + lo * tl.cast(sq_t, tl.int64)
    do_cur = do_ptr + b * sdo_b + h * sdo_h + lo * tl.cast(sdo_t, tl.int64)
    stats_cur = bh.to(tl.int64) * Tq
    q_cols, q_rows = offs_m * sq_t, offs_d * sq_d
    do_rows, do_cols = offs_m * sdo_t, offs_dv * sdo_d
    q_step = BLOCK_M * tl.cast(sq_t, tl.int64)
    do_step = BLOCK_M * tl.cast(sdo_t, tl.int64)
    d_ok_t = (offs_d < D)[:, None]
    if lo < mid:
        dk, dv, q_cur, do_cur = _dkdv_queries(
            dk, dv, k, v, offs_n, q_cur, do_cur, stats_cur, lse_ptr, delta_ptr, q_cols, q_rows, do_rows, do_cols,
            d_ok_t, dv_ok, lo, mid, Tq, q_step, do_step, scale, True, IS_CAUSAL, UPCAST, PRECISE, PRECISION, BLOCK_M,
        )  # fmt: skip
    if mid < full:
        dk, dv, q_cur, do_cur = _dkdv_queries(
            dk, dv, k, v, offs_n, q_cur, do_cur, stats_cur, lse_ptr, delta_ptr, q_cols, q_rows, do_rows, do_cols,
            d_ok_t, dv_ok, mid, full, Tq, q_step, do_step, scale, False, IS_CAUSAL, UPCAST, PRECISE, PRECISION,
            BLOCK_M,
        )  # fmt: skip
    if tail < Tq:
        dk, dv, q_cur, do_cur = _dkdv_queries(
            dk, dv, k, v, offs_n, q_cur, do_cur, stats_cur, lse_ptr, delta_ptr, q_cols, q_rows, do_rows, do_cols,
            d_ok_t, dv_ok, tail, Tq, Tq, q_step, do_step, scale, True, IS_CAUSAL, UPCAST, PRECISE, PRECISION, BLOCK_M,
        )  # fmt: skip
    dk = dk * scale
    row = bh.to(tl.int64) * Tk + offs_n
    tl.store(dk_ptr + row[:, None] * D + offs_d[None, :], dk.to(dk_ptr.dtype.element_ty), mask=n_ok & d_ok)
    tl.store(dv_ptr + row[:, None] * DV + offs_dv[None, :], dv.to(dv_ptr.dtype.element_ty), mask=n_ok & dv_ok)


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _flags(q: torch.Tensor) -> dict:
    """The constexprs every kernel takes."""
    return {
        "UPCAST": rt.INTERPRET and q.dtype in (torch.float16, torch.bfloat16),
        "PRECISE": not rt.INTERPRET and q.dtype == torch.float64,
        "PRECISION": rt.dot_precision(q.dtype),
        "BLOCK_D": max(16, rt.next_pow2(q.shape[-1])),  # tl.dot wants >= 16 when compiled
    }


def _scale_tensor(q: torch.Tensor, scale: float) -> torch.Tensor:
    """The scale as a (1,) tensor at the compute precision (a Python float reaches a kernel as fp32)."""
    return torch.full((1,), scale, dtype=_acc_dtype(q.dtype), device=q.device)


def _forward(q, k, v, is_causal: bool, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(out (B, H, Tq, DV) contiguous, lse (B, H, Tq) at the compute precision)."""
    b, h, tq, d = q.shape
    tk, dv = k.shape[2], v.shape[3]
    out = rt.empty((b, h, tq, dv), dtype=q.dtype, device=q.device)
    lse = rt.empty((b, h, tq), dtype=_acc_dtype(q.dtype), device=q.device)
    if b * h * tq == 0:  # nothing to compute
        return out, lse
    if tk == 0:  # no keys: an empty sum, as torch (zeros; the logsumexp of nothing is -inf)
        return out.zero_(), lse.fill_(-math.inf)
    flags = _flags(q)
    _attn_fwd_kernel[lambda meta: (b * h * rt.cdiv(tq, meta["BLOCK_M"]),)](
        q, k, v, out, lse, _scale_tensor(q, scale), h, tq, tk, d, dv,
        *q.stride(), *k.stride(), *v.stride(),
        IS_CAUSAL=is_causal, BLOCK_DV=max(16, rt.next_pow2(dv)), **flags,
    )  # fmt: skip
    return out, lse


def _backward(g, q, k, v, out, lse, is_causal: bool, scale: float):
    """(dq, dk, dv), contiguous, in q's dtype."""
    b, h, tq, d = q.shape
    tk, dv_dim = k.shape[2], v.shape[3]
    dq, dk, dv = (rt.empty(t.shape, dtype=q.dtype, device=q.device) for t in (q, k, v))
    if b * h * tq * tk * dv_dim == 0:  # no query, no key or an empty output: every gradient is 0
        return dq.zero_(), dk.zero_(), dv.zero_()
    flags = _flags(q)
    block_dv = max(16, rt.next_pow2(dv_dim))
    delta = rt.empty((b, h, tq), dtype=_acc_dtype(q.dtype), device=q.device)
    scale_t = _scale_tensor(q, scale)
    strides = (*q.stride(), *k.stride(), *v.stride(), *g.stride())
    # dq first: its programs also write delta, which the dk/dv programs read
    _attn_bwd_dq_kernel[lambda meta: (b * h * rt.cdiv(tq, meta["BLOCK_M"]),)](
        q, k, v, g, out, lse, delta, dq, scale_t, h, tq, tk, d, dv_dim, *strides,
        IS_CAUSAL=is_causal, BLOCK_DV=block_dv, **flags,
    )  # fmt: skip
    _attn_bwd_dkdv_kernel[lambda meta: (b * h * rt.cdiv(tk, meta["BLOCK_N"]),)](
        q, k, v, g, lse, delta, dk, dv, scale_t, h, tq, tk, d, dv_dim, *strides,
        IS_CAUSAL=is_causal, BLOCK_DV=block_dv, **flags,
    )  # fmt: skip
    return dq, dk, dv


def _check(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa) -> None:
    for name, t in (("query", query), ("key", key), ("value", value)):
        rt.check_float(t, name)
        if t.dim() != 4:
            raise ValueError(f"{name} must be (B, H, T, D), got shape {tuple(t.shape)}")
    rt.check_same_dtype(query=query, key=key, value=value)
    rt.check_device(query, key, value)
    if attn_mask is not None:
        raise NotImplementedError("attn_mask is not supported (only is_causal=True masks)")
    if dropout_p != 0.0:
        raise NotImplementedError(f"dropout is not supported: dropout_p must be 0.0, got {dropout_p!r}")
    q, k, v = (tuple(t.shape) for t in (query, key, value))
    if not q[:2] == k[:2] == v[:2]:
        gqa = " (grouped-query attention is not supported)" if enable_gqa else ""
        raise ValueError(f"query, key and value must share (B, H), got shapes {q}, {k}, {v}{gqa}")
    if k[2] != v[2]:
        raise ValueError(f"key and value must have the same length T_k, got shapes {k} and {v}")
    if q[3] != k[3]:
        raise ValueError(f"query and key must have the same head dim D, got shapes {q} and {k}")
    if max(q[3], v[3]) > MAX_HEAD_DIM:
        raise ValueError(f"head dims up to {MAX_HEAD_DIM} are supported, got D={q[3]} (q, k) and {v[3]} (v)")
    if not isinstance(is_causal, bool):
        raise TypeError(f"is_causal must be a bool, got {type(is_causal).__name__}")
    real = isinstance(scale, (int, float)) and not isinstance(scale, bool)
    if scale is not None and not (real and math.isfinite(scale)):
        raise ValueError(f"scale must be None or a finite number, got {scale!r}")


# ---------------------------------------------------------------------------------------------
# Custom ops (torch.ops.blitz.scaled_dot_product_attention, _backward) and the public API
# ---------------------------------------------------------------------------------------------


@custom_op("scaled_dot_product_attention")
def scaled_dot_product_attention_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, is_causal: bool, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, lse): softmax(q k^T * scale [causal]) v, contiguous, and each query row's logsumexp
    of its scores (B, H, Tq) in fp32 (fp64 for fp64), which the backward reads."""
    return _forward(q, k, v, is_causal, scale)


@scaled_dot_product_attention_op.register_fake
def _(q, k, v, is_causal, scale):
    b, h, tq, _ = q.shape
    return q.new_empty((b, h, tq, v.shape[3])), q.new_empty((b, h, tq), dtype=_acc_dtype(q.dtype))


@custom_op("scaled_dot_product_attention_backward")
def scaled_dot_product_attention_backward_op(
    grad_output: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    output: torch.Tensor,
    lse: torch.Tensor,
    is_causal: bool,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv), contiguous, from the forward's output and lse."""
    return _backward(grad_output, q, k, v, output, lse, is_causal, scale)


@scaled_dot_product_attention_backward_op.register_fake
def _(grad_output, q, k, v, output, lse, is_causal, scale):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, is_causal, scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse)
    ctx.is_causal, ctx.scale = is_causal, scale
    ctx.mark_non_differentiable(lse)


def _autograd_backward(ctx, g: torch.Tensor, _g_lse):
    q, k, v, out, lse = ctx.saved_tensors
    dq, dk, dv = scaled_dot_product_attention_backward_op(g, q, k, v, out, lse, ctx.is_causal, ctx.scale)
    need = ctx.needs_input_grad
    return (dq if need[0] else None), (dk if need[1] else None), (dv if need[2] else None), None, None


scaled_dot_product_attention_op.register_autograd(_autograd_backward, setup_context=_setup_context)


def scaled_dot_product_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> torch.Tensor:
    """``torch.nn.functional.scaled_dot_product_attention`` as flash attention in Triton:
    softmax(query key^T * scale [+ causal mask]) value for query (B, H, T_q, D), key (B, H, T_k, D)
    and value (B, H, T_k, D_v), any layouts; scale defaults to 1/sqrt(D); the causal mask is
    aligned top-left (query i sees keys j <= i), as torch's. ``attn_mask``, ``dropout_p`` and
    ``enable_gqa`` exist for the signature: no mask, no dropout, and as many key/value heads as
    query heads."""
    _check(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    d = query.shape[-1]
    if scale is None:  # D = 0: every score is an empty sum, 0 at any finite scale (1/sqrt(0) is not one)
        scale = 1.0 / math.sqrt(d) if d else 1.0
    out, _ = scaled_dot_product_attention_op(query, key, value, is_causal, float(scale))
    return out
