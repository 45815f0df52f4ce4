"""conv2d, forward and backward (input, weight and bias gradients) in Triton as implicit GEMMs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from kernels import _runtime as rt
from kernels._library import custom_op
from kernels._nchw import INT32_MAX, empty_nchw, is_channels_last, needs_int64, pair

__all__ = ["Conv2dGeometry", "conv2d", "conv2d_output_size"]

# How the GEMMs are laid out (no im2col buffer: every tile of the virtual im2col matrix is gathered
# from the input as it is needed):
#
#   forward      y[(n, oh, ow), oc]       = sum over (ci, kh, kw) of x[n, ci, ih, iw] * w[oc, ci, kh, kw]
#   input grad   dx[(n, ih, iw), ci]      = sum over (oc, kh, kw) of g[n, oc, oh, ow] * w[oc, ci, kh, kw]
#   weight grad  dw[oc, (ci, kh, kw)]     = sum over (n, oh, ow) of g[n, oc, oh, ow] * x[n, ci, ih, iw]
#
# with ih = oh * stride - pad + kh * dilation (same for w), one GEMM per group. Two ways to walk the
# reduction: "flat", where one K block mixes channels and kernel taps (for few channels: the blitz
# convs have 3 and 6, and tl.dot needs K blocks of 16), and "taps outer", a loop over the taps with
# the channels as the K blocks inside (for 16 channels and up: the address arithmetic is then done
# per row, not per element). The weight gradient reduces over every output pixel, so it is split
# over programs (split-K) into a float32 (float64) workspace and summed in a fixed order by a second
# kernel: deterministic, no atomics.

#: Taps-outer reduction from this many channels per group (the K block is then mostly real channels).
TAPS_OUTER_MIN_CHANNELS = 16
#: Output pixels each split of the weight gradient reduces; a multiple of every BLOCK_K below.
PIXELS_PER_SPLIT = 2048
#: At most this many splits (the workspace is SPLITS x weight numel).
MAX_SPLITS = 1024
#: Elements per program of the split-sum kernel.
SUM_BLOCK = 1024

#: Compiled tiles for the forward and input-gradient GEMMs (rows: pixels, columns: channels):
#: N = 16-32 for the blitz convs (6 and 16 output channels), 64-128 for ResNet-like layers.
PIXEL_GEMM_TILES = (
    (128, 16, 16, 4, 3),
    (128, 16, 32, 4, 3),
    (256, 16, 16, 4, 3),
    (256, 16, 32, 8, 3),
    (64, 16, 32, 2, 4),
    (128, 32, 32, 4, 3),
    (256, 32, 16, 8, 3),
    (128, 64, 32, 4, 4),
    (128, 64, 64, 4, 3),
    (128, 128, 32, 8, 3),
    (256, 64, 32, 8, 3),
    (64, 64, 64, 4, 3),
    (64, 128, 32, 4, 4),
)
#: Compiled tiles for the weight-gradient GEMM (rows: output channels, columns: (channel, tap),
#: reduction: pixels, so BLOCK_K is the long one).
WEIGHT_GEMM_TILES = (
    (16, 32, 64, 4, 3),
    (16, 64, 64, 4, 3),
    (16, 128, 32, 4, 3),
    (16, 16, 128, 4, 3),
    (16, 128, 128, 8, 3),
    (32, 32, 128, 4, 3),
    (32, 64, 64, 4, 3),
    (64, 64, 64, 4, 3),
    (64, 128, 32, 8, 3),
    (128, 128, 32, 8, 3),
)


def _gemm_configs(interpreter: tuple[int, int, int], compiled: Sequence[tuple[int, ...]]) -> list[triton.Config]:
    """Tile shapes (BLOCK_M, BLOCK_N, BLOCK_K) x warps x stages for the conv GEMMs.

    Under the interpreter, ``interpreter`` alone: its cost is per operation, so few programs with
    big tiles win (measured on the test shapes). Compiled, ``compiled`` (BLOCK_M, BLOCK_N, BLOCK_K,
    warps, stages), pruned to the tiles the problem can fill."""
    if rt.INTERPRET:
        bm, bn, bk = interpreter
        return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=4, num_stages=1)]
    return [
        triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k}, num_warps=warps, num_stages=stages)
        for m, n, k, warps, stages in compiled
    ]


def _prune(configs, named_args, **kwargs):
    """Drop tiles far wider than the problem: BLOCK_N past the padded channel count, BLOCK_K past
    the padded reduction (a tl.dot block is at least 16 wide)."""
    n_limit = max(16, rt.next_pow2(named_args["N_DIM"]))
    k_limit = max(16, rt.next_pow2(named_args["K_DIM"]))
    kept = [c for c in configs if c.kwargs["BLOCK_N"] <= n_limit and c.kwargs["BLOCK_K"] <= k_limit]
    return kept or configs[:1]


@triton.jit
def _index_vectors(INT64: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """Program ids (axes 0, 1) and the aranges of the three tile dims, in int64 when INT64 (so
    every index derived from them is; the launchers also pick it under the interpreter, whose
    int32 overflow checks on every add and multiply cost more than the arithmetic)."""
    pid_0 = tl.program_id(0)
    pid_1 = tl.program_id(1)
    ar_m = tl.arange(0, BLOCK_M)
    ar_n = tl.arange(0, BLOCK_N)
    ar_k = tl.arange(0, BLOCK_K)
    if INT64:
        pid_0 = pid_0.to(tl.int64)
        pid_1 = pid_1.to(tl.int64)
        ar_m = ar_m.to(tl.int64)
        ar_n = ar_n.to(tl.int64)
        ar_k = ar_k.to(tl.int64)
    return pid_0, pid_1, ar_m, ar_n, ar_k


# ---------------------------------------------------------------------------------------------
# Forward: y = x (*) w + b
# ---------------------------------------------------------------------------------------------


@rt.autotune(
    configs=_gemm_configs((1024, 16, 32), PIXEL_GEMM_TILES),
    key=["M", "N_DIM", "K_DIM", "KH", "KW", "TAPS_OUTER", "CI_INNER"],
    prune_configs_by={"early_config_prune": _prune},
)
@triton.jit
def _conv_fwd_kernel(
    x_ptr,  # input (N, C, H, W), strides sx*
    w_ptr,  # weight (OC, C / G, KH, KW), strides sw*
    b_ptr,  # bias (OC,), stride sb; never read unless HAS_BIAS
    y_ptr,  # output (N, OC, OH, OW), strides sy*
    M,  # output pixels N * OH * OW: the GEMM's rows
    N_DIM,  # output channels per group: the GEMM's columns (an autotune key)
    K_DIM,  # channels per group * KH * KW: the reduction length (an autotune key)
    H, W, OH, OW,  # input and output spatial sizes
    CG,  # input channels per group
    sb,  # bias stride
    sxn, sxc, sxh, sxw,  # input strides, in elements
    swo, swc, swh, sww,  # weight strides
    syn, syc, syh, syw,  # output strides
    sh, sw,  # stride
    ph, pw,  # padding before the first row / column
    dh, dw,  # dilation
    KH: tl.constexpr, KW: tl.constexpr,  # kernel size
    HAS_BIAS: tl.constexpr,
    TAPS_OUTER: tl.constexpr,  # loop over taps, channels inside (many channels); else one flat K
    CI_INNER: tl.constexpr,  # flat K ordered (kh, kw, ci) for a channels_last input, else (ci, kh, kw)
    INT64: tl.constexpr,  # some offset can pass 2^31: index in int64
    UPCAST: tl.constexpr,  # interpreter: 16-bit operands to fp32 before tl.dot (exact products)
    PRECISION: tl.constexpr,  # tl.dot input_precision: "ieee" or "tf32"
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    acc_t = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    pid_m, pid_n, ar_m, ar_n, ar_k = _index_vectors(INT64, BLOCK_M, BLOCK_N, BLOCK_K)
    tiles_n = (N_DIM + BLOCK_N - 1) // BLOCK_N
    grp = pid_n // tiles_n
    offs_m = pid_m * BLOCK_M + ar_m
    co = (pid_n % tiles_n) * BLOCK_N + ar_n
    m_ok = offs_m < M
    ow = offs_m % OW
    t = offs_m // OW
    oh = t % OH
    n = t // OH
    co_ok = co < N_DIM
    oc = grp * N_DIM + co  # (BLOCK_N,) global output channel
    c_first = grp * CG  # the group's first input channel
    ih0 = oh * sh - ph  # (BLOCK_M,) top-left input row/column of each window
    iw0 = ow * sw - pw
    x_row = n * sxn + ih0 * sxh + iw0 * sxw + c_first * sxc  # (BLOCK_M,)
    w_col = oc * swo  # (BLOCK_N,)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=acc_t)
    if TAPS_OUTER:
        for kh in range(KH):
            ih = ih0 + kh * dh
            h_ok = m_ok & (ih >= 0) & (ih < H)
            for kw in range(KW):
                iw = iw0 + kw * dw
                row_ok = h_ok & (iw >= 0) & (iw < W)
                row = x_row + (kh * dh) * sxh + (kw * dw) * sxw
                for c0 in range(0, CG, BLOCK_K):
                    ci = c0 + ar_k
                    ci_ok = ci < CG
                    a_ok = row_ok[:, None] & ci_ok[None, :]
                    a = tl.load(x_ptr + row[:, None] + ci[None, :] * sxc, mask=a_ok, other=0.0)
                    b = tl.load(
                        w_ptr + w_col[None, :] + (ci * swc + kh * swh + kw * sww)[:, None],
                        mask=ci_ok[:, None] & co_ok[None, :],
                        other=0.0,
                    )
                    if UPCAST:
                        a = a.to(tl.float32)
                        b = b.to(tl.float32)
                    acc = tl.dot(a, b, acc, input_precision=PRECISION)
    else:
        for k0 in range(0, K_DIM, BLOCK_K):
            k = k0 + ar_k
            k_ok = k < K_DIM
            if CI_INNER:
                ci = k % CG
                kw = (k // CG) % KW
                kh = k // (CG * KW)
            else:
                kw = k % KW
                kh = (k // KW) % KH
                ci = k // (KH * KW)
            ih = ih0[:, None] + (kh * dh)[None, :]  # (BLOCK_M, BLOCK_K)
            iw = iw0[:, None] + (kw * dw)[None, :]
            ok = (m_ok[:, None] & k_ok[None, :]) & ((ih >= 0) & (ih < H)) & ((iw >= 0) & (iw < W))
            x_col = ci * sxc + (kh * dh) * sxh + (kw * dw) * sxw  # (BLOCK_K,)
            a = tl.load(x_ptr + x_row[:, None] + x_col[None, :], mask=ok, other=0.0)
            w_row = ci * swc + kh * swh + kw * sww  # (BLOCK_K,)
            b = tl.load(w_ptr + w_row[:, None] + w_col[None, :], mask=k_ok[:, None] & co_ok[None, :], other=0.0)
            if UPCAST:
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
    if HAS_BIAS:
        acc += tl.load(b_ptr + oc * sb, mask=co_ok, other=0.0).to(acc_t)[None, :]
    y_off = (n * syn + oh * syh + ow * syw)[:, None] + (oc * syc)[None, :]
    tl.store(y_ptr + y_off, acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & co_ok[None, :])


# ---------------------------------------------------------------------------------------------
# Input gradient: dx = g (*)^T w, a gather over the output pixels each input pixel feeds
# ---------------------------------------------------------------------------------------------


@rt.autotune(
    configs=_gemm_configs((1024, 16, 32), PIXEL_GEMM_TILES),
    key=["M", "N_DIM", "K_DIM", "KH", "KW", "TAPS_OUTER", "CO_INNER"],
    prune_configs_by={"early_config_prune": _prune},
)
@triton.jit
def _conv_dx_kernel(
    g_ptr,  # grad_output (N, OC, OH, OW), strides sg* (any layout, stride 0 included)
    w_ptr,  # weight (OC, C / G, KH, KW), strides sw*
    dx_ptr,  # grad_input (N, C, H, W), strides sd*
    M,  # input pixels N * H * W: the GEMM's rows
    N_DIM,  # input channels per group: the GEMM's columns
    K_DIM,  # output channels per group * KH * KW: the reduction length
    H, W, OH, OW,
    OCG,  # output channels per group
    sgn, sgc, sgh, sgw,  # grad_output strides
    swo, swc, swh, sww,  # weight strides
    sdn, sdc, sdh, sdw,  # grad_input strides
    sh, sw, ph, pw, dh, dw,  # stride, padding, dilation
    KH: tl.constexpr, KW: tl.constexpr,
    TAPS_OUTER: tl.constexpr,  # loop over taps, output channels inside; else one flat K
    CO_INNER: tl.constexpr,  # flat K ordered (kh, kw, oc) for a channels_last grad_output
    INT64: tl.constexpr,
    UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    acc_t = tl.float64 if g_ptr.dtype.element_ty == tl.float64 else tl.float32
    pid_m, pid_n, ar_m, ar_n, ar_k = _index_vectors(INT64, BLOCK_M, BLOCK_N, BLOCK_K)
    tiles_n = (N_DIM + BLOCK_N - 1) // BLOCK_N
    grp = pid_n // tiles_n
    offs_m = pid_m * BLOCK_M + ar_m
    ci = (pid_n % tiles_n) * BLOCK_N + ar_n
    m_ok = offs_m < M
    iw = offs_m % W
    t = offs_m // W
    ih = t % H
    n = t // H
    ci_ok = ci < N_DIM
    c = grp * N_DIM + ci  # (BLOCK_N,) global input channel
    oc_first = grp * OCG
    th0 = ih + ph  # (BLOCK_M,) = oh * sh + kh * dh for every (oh, kh) this pixel meets
    tw0 = iw + pw
    g_row = n * sgn + oc_first * sgc  # (BLOCK_M,)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=acc_t)
    if TAPS_OUTER:
        for kh in range(KH):
            th = th0 - kh * dh
            oh = tl.maximum(th, 0) // sh  # clamped first: integer division of negatives differs across backends
            h_ok = m_ok & (th >= 0) & (oh * sh == th) & (oh < OH)
            for kw in range(KW):
                tw = tw0 - kw * dw
                ow = tl.maximum(tw, 0) // sw
                row_ok = h_ok & (tw >= 0) & (ow * sw == tw) & (ow < OW)
                row = g_row + oh * sgh + ow * sgw
                for o0 in range(0, OCG, BLOCK_K):
                    co = o0 + ar_k
                    co_ok = co < OCG
                    a_ok = row_ok[:, None] & co_ok[None, :]
                    a = tl.load(g_ptr + row[:, None] + co[None, :] * sgc, mask=a_ok, other=0.0)
                    b = tl.load(
                        w_ptr + ((oc_first + co) * swo + kh * swh + kw * sww)[:, None] + (ci * swc)[None, :],
                        mask=co_ok[:, None] & ci_ok[None, :],
                        other=0.0,
                    )
                    if UPCAST:
                        a = a.to(tl.float32)
                        b = b.to(tl.float32)
                    acc = tl.dot(a, b, acc, input_precision=PRECISION)
    else:
        for k0 in range(0, K_DIM, BLOCK_K):
            k = k0 + ar_k
            k_ok = k < K_DIM
            if CO_INNER:
                co = k % OCG
                kw = (k // OCG) % KW
                kh = k // (OCG * KW)
            else:
                kw = k % KW
                kh = (k // KW) % KH
                co = k // (KH * KW)
            th = th0[:, None] - (kh * dh)[None, :]  # (BLOCK_M, BLOCK_K)
            tw = tw0[:, None] - (kw * dw)[None, :]
            oh = tl.maximum(th, 0) // sh
            ow = tl.maximum(tw, 0) // sw
            ok = (m_ok[:, None] & k_ok[None, :]) & ((th >= 0) & (oh * sh == th) & (oh < OH))
            ok = ok & ((tw >= 0) & (ow * sw == tw) & (ow < OW))
            a = tl.load(g_ptr + g_row[:, None] + (co * sgc)[None, :] + oh * sgh + ow * sgw, mask=ok, other=0.0)
            w_row = (oc_first + co) * swo + kh * swh + kw * sww  # (BLOCK_K,)
            b = tl.load(w_ptr + w_row[:, None] + (ci * swc)[None, :], mask=k_ok[:, None] & ci_ok[None, :], other=0.0)
            if UPCAST:
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
    dx_off = (n * sdn + ih * sdh + iw * sdw)[:, None] + (c * sdc)[None, :]
    tl.store(dx_ptr + dx_off, acc.to(dx_ptr.dtype.element_ty), mask=m_ok[:, None] & ci_ok[None, :])


# ---------------------------------------------------------------------------------------------
# Weight and bias gradients: split-K partial sums into a workspace, then a fixed-order sum
# ---------------------------------------------------------------------------------------------


def _prune_dw(configs, named_args, **kwargs):
    """Weight-gradient tiles: BLOCK_M spans output channels, BLOCK_N the (channel, tap) columns."""
    m_limit = max(16, rt.next_pow2(named_args["M_DIM"]))
    n_limit = max(16, rt.next_pow2(named_args["N_DIM"]))
    kept = [c for c in configs if c.kwargs["BLOCK_M"] <= m_limit and c.kwargs["BLOCK_N"] <= n_limit]
    return kept or configs[:1]


@rt.autotune(
    configs=_gemm_configs((16, 64, 256), WEIGHT_GEMM_TILES),
    key=["P", "M_DIM", "N_DIM", "KH", "KW", "TAPS_OUTER", "CI_INNER", "COMPUTE_DW", "COMPUTE_DB"],
    prune_configs_by={"early_config_prune": _prune_dw},
)
@triton.jit
def _conv_dw_kernel(
    x_ptr,  # input (N, C, H, W), strides sx*
    g_ptr,  # grad_output (N, OC, OH, OW), strides sg*
    ws_ptr,  # workspace (SPLITS, L) in the accumulation dtype: row s holds split s's partial sums
    P,  # output pixels N * OH * OW: the reduction length
    M_DIM,  # output channels per group: the GEMM's rows
    N_DIM,  # input channels per group * KH * KW: the GEMM's columns
    K_DIM,  # pixels per split: the reduction each program does (a multiple of BLOCK_K)
    L,  # workspace row length: weight numel (when COMPUTE_DW) + OC (when COMPUTE_DB)
    DB_AT,  # where in a row the bias partial sums start
    H, W, OH, OW,
    CG,  # input channels per group
    sxn, sxc, sxh, sxw,  # input strides
    sgn, sgc, sgh, sgw,  # grad_output strides
    sdo, sdc, sdh, sdw,  # grad_weight strides: a workspace row is grad_weight's memory image
    sh, sw, ph, pw, dh, dw,  # stride, padding, dilation
    KH: tl.constexpr, KW: tl.constexpr,
    TAPS_OUTER: tl.constexpr,  # columns are (tap, channel block); else a flat (ci, kh, kw) range
    CI_INNER: tl.constexpr,  # flat columns ordered (kh, kw, ci) for a channels_last input
    COMPUTE_DW: tl.constexpr,
    COMPUTE_DB: tl.constexpr,
    INT64: tl.constexpr,
    UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    acc_t = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    pid, split, ar_m, cols, ar_k = _index_vectors(INT64, BLOCK_M, BLOCK_N, BLOCK_K)
    tiles_m = (M_DIM + BLOCK_M - 1) // BLOCK_M
    if TAPS_OUTER:
        tiles_c = (CG + BLOCK_N - 1) // BLOCK_N
        tiles_n = KH * KW * tiles_c
    else:
        tiles_n = (N_DIM + BLOCK_N - 1) // BLOCK_N
    if not COMPUTE_DW:
        tiles_n = 1
    grp = pid // (tiles_m * tiles_n)
    tm = (pid // tiles_n) % tiles_m
    tn = pid % tiles_n
    co = tm * BLOCK_M + ar_m
    co_ok = co < M_DIM
    oc = grp * M_DIM + co  # (BLOCK_M,) global output channel
    if TAPS_OUTER:
        tap = tn // tiles_c
        kh = tap // KW + cols * 0  # (BLOCK_N,) all the same tap
        kw = tap % KW + cols * 0
        ci = (tn % tiles_c) * BLOCK_N + cols
        col_ok = ci < CG
    else:
        kc = tn * BLOCK_N + cols
        col_ok = kc < N_DIM
        if CI_INNER:
            ci = kc % CG
            kw = (kc // CG) % KW
            kh = kc // (CG * KW)
        else:
            kw = kc % KW
            kh = (kc // KW) % KH
            ci = kc // (KH * KW)
    dh_off = kh * dh - ph  # (BLOCK_N,) row offset of each column's tap from oh * sh
    dw_off = kw * dw - pw
    x_col = (grp * CG + ci) * sxc + dh_off * sxh + dw_off * sxw  # (BLOCK_N,)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=acc_t)
    db_acc = tl.zeros((BLOCK_M,), dtype=acc_t)
    p_start = split * K_DIM
    p_end = tl.minimum(P, p_start + K_DIM)
    for p0 in range(p_start, p_end, BLOCK_K):
        p = p0 + ar_k
        p_ok = p < p_end
        ow = p % OW
        t = p // OW
        oh = t % OH
        n = t // OH
        g_off = (oc * sgc)[:, None] + (n * sgn + oh * sgh + ow * sgw)[None, :]
        a = tl.load(g_ptr + g_off, mask=co_ok[:, None] & p_ok[None, :], other=0.0)  # (BLOCK_M, BLOCK_K)
        if COMPUTE_DB:
            db_acc += tl.sum(a.to(acc_t), axis=1)
        if COMPUTE_DW:
            ih = (oh * sh)[:, None] + dh_off[None, :]  # (BLOCK_K, BLOCK_N)
            iw = (ow * sw)[:, None] + dw_off[None, :]
            ok = (p_ok[:, None] & col_ok[None, :]) & ((ih >= 0) & (ih < H)) & ((iw >= 0) & (iw < W))
            x_row = n * sxn + (oh * sh) * sxh + (ow * sw) * sxw  # (BLOCK_K,)
            b = tl.load(x_ptr + x_row[:, None] + x_col[None, :], mask=ok, other=0.0)
            if UPCAST:
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
    row = ws_ptr + split.to(tl.int64) * L
    if COMPUTE_DW:
        d_off = (oc * sdo)[:, None] + (ci * sdc + kh * sdh + kw * sdw)[None, :]
        tl.store(row + d_off, acc, mask=co_ok[:, None] & col_ok[None, :])
    if COMPUTE_DB and tn == 0:  # one program per output-channel block stores the bias sums
        tl.store(row + DB_AT + oc, db_acc, mask=co_ok)


@triton.jit
def _sum_splits_kernel(
    ws_ptr,  # workspace (SPLITS, L)
    dw_ptr,  # grad_weight's memory, L_W elements (dense, any dim order)
    db_ptr,  # grad_bias (OC,) contiguous, the L - L_W elements after it in a workspace row
    L,  # workspace row length
    L_W,  # grad_weight elements in a row (0 when it is not computed)
    SPLITS,  # rows to sum, in order
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < L
    acc = tl.load(ws_ptr + offs, mask=ok, other=0.0)
    for s in range(1, SPLITS):
        acc += tl.load(ws_ptr + s * L + offs, mask=ok, other=0.0)
    tl.store(dw_ptr + offs, acc.to(dw_ptr.dtype.element_ty), mask=ok & (offs < L_W))
    tl.store(db_ptr + (offs - L_W), acc.to(db_ptr.dtype.element_ty), mask=ok & (offs >= L_W))


# ---------------------------------------------------------------------------------------------
# Launchers: validate, allocate, grid
# ---------------------------------------------------------------------------------------------


def conv2d_output_size(
    size: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int, int, int],
    dilation: tuple[int, int],
) -> tuple[int, int]:
    """(OH, OW) for input (H, W), padding (top, bottom, left, right): rounded down, as torch."""
    (h, w), (kh, kw), (sh, sw), (pt, pb, pl, pr), (dh, dw) = size, kernel, stride, padding, dilation
    return (h + pt + pb - dh * (kh - 1) - 1) // sh + 1, (w + pl + pr - dw * (kw - 1) - 1) // sw + 1


def _padding(padding, kernel, stride, dilation) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) from an int, a pair, or torch's 'valid' / 'same'."""
    if isinstance(padding, str):
        if padding == "valid":
            return 0, 0, 0, 0
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(f"padding='same' needs stride 1, got stride={stride}")
            total_h, total_w = dilation[0] * (kernel[0] - 1), dilation[1] * (kernel[1] - 1)
            return total_h // 2, total_h - total_h // 2, total_w // 2, total_w - total_w // 2
        raise ValueError(f"padding={padding!r}; expected an int, a pair of ints, 'valid' or 'same'")
    ph, pw = pair(padding, "padding", minimum=0)
    return ph, ph, pw, pw


def _dot_flags(dtype: torch.dtype) -> dict:
    return {
        "UPCAST": rt.INTERPRET and dtype in (torch.float16, torch.bfloat16),
        "PRECISION": rt.dot_precision(dtype),
    }


class Conv2dGeometry:
    """A validated conv2d problem: the input (N, C, H, W), weight, bias and options ``conv2d`` takes;
    raises a clear TypeError or ValueError for anything the kernels cannot run."""

    def __init__(
        self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, stride, padding, dilation, groups,
        *, pads: Sequence[int] | None = None,
    ) -> None:  # fmt: skip
        """``pads`` (top, bottom, left, right), when given, replaces ``padding`` (what the op's
        schema carries: an int, a pair or "same" resolved)."""
        rt.check_float(x, "input")
        rt.check_float(w, "weight")
        if b is not None:
            rt.check_float(b, "bias")
        rt.check_same_dtype(input=x, weight=w, bias=b)
        rt.check_device(x, w, b)
        if x.dim() != 4:
            raise ValueError(f"conv2d expects a 4-D input (N, C, H, W) (or 3-D unbatched), got shape {tuple(x.shape)}")
        if w.dim() != 4:
            raise ValueError(
                f"conv2d expects a 4-D weight (out_channels, in_channels / groups, kH, kW), got shape {tuple(w.shape)}"
            )
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
            raise ValueError(f"groups must be a positive int, got {groups!r}")
        self.stride = pair(stride, "stride", minimum=1)
        self.dilation = pair(dilation, "dilation", minimum=1)
        n, c, h, w_ = x.shape
        oc, cg, kh, kw = w.shape
        self.kernel = (kh, kw)
        self.pad = tuple(pads) if pads is not None else _padding(padding, self.kernel, self.stride, self.dilation)
        if c % groups:
            raise ValueError(f"groups={groups} does not divide the input's {c} channels")
        if oc % groups:
            raise ValueError(f"groups={groups} does not divide the weight's {oc} output channels")
        if cg * groups != c:
            raise ValueError(
                f"weight of shape {tuple(w.shape)} with groups={groups} expects an input with {cg * groups} channels, "
                f"got input of shape {tuple(x.shape)} ({c} channels)"
            )
        if b is not None and (b.dim() != 1 or b.shape[0] != oc):
            raise ValueError(f"bias must have shape ({oc},) for {oc} output channels, got {tuple(b.shape)}")
        padded = (h + self.pad[0] + self.pad[1], w_ + self.pad[2] + self.pad[3])
        span = (self.dilation[0] * (kh - 1) + 1, self.dilation[1] * (kw - 1) + 1)
        if padded[0] < span[0] or padded[1] < span[1]:
            raise ValueError(
                f"kernel {kh}x{kw} with dilation {self.dilation} spans {span[0]}x{span[1]}, "
                f"larger than the padded input {padded[0]}x{padded[1]}"
            )
        self.n, self.c, self.h, self.w, self.oc, self.cg = n, c, h, w_, oc, cg
        self.groups = groups
        self.ocg = oc // groups
        self.oh, self.ow = conv2d_output_size((h, w_), self.kernel, self.stride, self.pad, self.dilation)

    @property
    def conv_args(self) -> tuple[int, ...]:
        """stride, padding before (top, left), dilation: what every kernel takes."""
        return (*self.stride, self.pad[0], self.pad[2], *self.dilation)


def _forward(geo: Conv2dGeometry, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    channels_last = is_channels_last(x)
    y = empty_nchw((geo.n, geo.oc, geo.oh, geo.ow), dtype=x.dtype, device=x.device, channels_last=channels_last)
    m = geo.n * geo.oh * geo.ow
    if y.numel() == 0:
        return y
    taps_outer = geo.cg >= TAPS_OUTER_MIN_CHANNELS

    def grid(meta):
        return rt.cdiv(m, meta["BLOCK_M"]), geo.groups * rt.cdiv(geo.ocg, meta["BLOCK_N"])

    _conv_fwd_kernel[grid](
        x, w, b if b is not None else x, y,
        m, geo.ocg, geo.cg * geo.kernel[0] * geo.kernel[1],
        geo.h, geo.w, geo.oh, geo.ow, geo.cg, b.stride(0) if b is not None else 0,
        *x.stride(), *w.stride(), *y.stride(),
        *geo.conv_args,
        KH=geo.kernel[0], KW=geo.kernel[1],
        HAS_BIAS=b is not None, TAPS_OUTER=taps_outer, CI_INNER=channels_last,
        INT64=needs_int64(x, w, y) or m > INT32_MAX, **_dot_flags(x.dtype),
    )  # fmt: skip
    return y


def _input_grad(geo: Conv2dGeometry, g: torch.Tensor, w: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """grad_input (laid out like ``like``, the input) from grad_output ``g`` and the weight."""
    dx = empty_nchw(
        (geo.n, geo.c, geo.h, geo.w), dtype=like.dtype, device=like.device, channels_last=is_channels_last(like)
    )
    m = geo.n * geo.h * geo.w
    if dx.numel() == 0:
        return dx

    def grid(meta):
        return rt.cdiv(m, meta["BLOCK_M"]), geo.groups * rt.cdiv(geo.cg, meta["BLOCK_N"])

    _conv_dx_kernel[grid](
        g, w, dx,
        m, geo.cg, geo.ocg * geo.kernel[0] * geo.kernel[1],
        geo.h, geo.w, geo.oh, geo.ow, geo.ocg,
        *g.stride(), *w.stride(), *dx.stride(),
        *geo.conv_args,
        KH=geo.kernel[0], KW=geo.kernel[1],
        TAPS_OUTER=geo.ocg >= TAPS_OUTER_MIN_CHANNELS, CO_INNER=is_channels_last(g),
        INT64=needs_int64(g, w, dx) or m > INT32_MAX, **_dot_flags(g.dtype),
    )  # fmt: skip
    return dx


def _weight_grad(
    geo: Conv2dGeometry, x: torch.Tensor, g: torch.Tensor, w: torch.Tensor, *, weight: bool = True, bias: bool = True
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(grad_weight laid out like ``w``, grad_bias), each only when asked; deterministic split-K."""
    dw = None
    if weight:
        dw = empty_nchw(tuple(w.shape), dtype=w.dtype, device=w.device, channels_last=is_channels_last(w))
    db = rt.empty((geo.oc,), dtype=x.dtype, device=x.device) if bias else None
    p = geo.n * geo.oh * geo.ow
    l_w = w.numel() if weight else 0
    length = l_w + (geo.oc if bias else 0)
    if length == 0:
        return dw, db
    if p == 0:  # no output pixels: nothing to sum
        for t in (dw, db):
            if t is not None:
                t.zero_()
        return dw, db
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    per_split = rt.cdiv(max(rt.cdiv(p, MAX_SPLITS), PIXELS_PER_SPLIT), PIXELS_PER_SPLIT) * PIXELS_PER_SPLIT
    splits = rt.cdiv(p, per_split)
    ws = rt.empty((splits, length), dtype=acc_dtype, device=x.device)
    taps_outer = geo.cg >= TAPS_OUTER_MIN_CHANNELS
    kh, kw = geo.kernel
    dw_strides = dw.stride() if dw is not None else (0, 0, 0, 0)

    def grid(meta):
        tiles_m = rt.cdiv(geo.ocg, meta["BLOCK_M"])
        if not weight:
            tiles_n = 1
        elif taps_outer:
            tiles_n = kh * kw * rt.cdiv(geo.cg, meta["BLOCK_N"])
        else:
            tiles_n = rt.cdiv(geo.cg * kh * kw, meta["BLOCK_N"])
        return geo.groups * tiles_m * tiles_n, splits

    _conv_dw_kernel[grid](
        x, g, ws,
        p, geo.ocg, geo.cg * kh * kw, per_split, length, l_w,
        geo.h, geo.w, geo.oh, geo.ow, geo.cg,
        *x.stride(), *g.stride(), *dw_strides,
        *geo.conv_args,
        KH=kh, KW=kw, TAPS_OUTER=taps_outer, CI_INNER=is_channels_last(x),
        COMPUTE_DW=weight, COMPUTE_DB=bias,
        INT64=needs_int64(x, g) or p > INT32_MAX, **_dot_flags(x.dtype),
    )  # fmt: skip
    _sum_splits_kernel[(rt.cdiv(length, SUM_BLOCK),)](
        ws, dw if dw is not None else ws, db if db is not None else ws, length, l_w, splits, BLOCK=SUM_BLOCK
    )
    return dw, db


# ---------------------------------------------------------------------------------------------
# autograd
# ---------------------------------------------------------------------------------------------


def _geometry(x, w, b, stride, padding, dilation, groups) -> Conv2dGeometry:
    """The geometry of a problem the op's schema carries (``padding`` as (top, bottom, left, right))."""
    return Conv2dGeometry(x, w, b, tuple(stride), None, tuple(dilation), groups, pads=padding)


@custom_op("conv2d")
def _conv2d_op(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
) -> torch.Tensor:
    """conv2d of a 4-D input; ``padding`` is (top, bottom, left, right). The output is laid out as
    the input (contiguous or channels_last)."""
    return _forward(_geometry(input, weight, bias, stride, padding, dilation, groups), input, weight, bias)


def _empty_like_layout(shape, like: torch.Tensor) -> torch.Tensor:
    """A fake output of ``shape`` laid out as the kernels lay out outputs like ``like``."""
    n, c, h, w = shape
    if is_channels_last(like):
        return like.new_empty((n, h, w, c)).permute(0, 3, 1, 2)
    return like.new_empty((n, c, h, w))


@_conv2d_op.register_fake
def _(input, weight, bias, stride, padding, dilation, groups):
    oh, ow = conv2d_output_size(
        tuple(input.shape[2:]), tuple(weight.shape[2:]), tuple(stride), tuple(padding), tuple(dilation)
    )
    return _empty_like_layout((input.shape[0], weight.shape[0], oh, ow), input)


@custom_op("conv2d_backward")
def _conv2d_backward_op(
    grad: torch.Tensor,
    input: torch.Tensor,
    weight: torch.Tensor,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    output_mask: list[bool],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad_input laid out as the input, grad_weight laid out as the weight, grad_bias) of
    ``blitz::conv2d``, each only where ``output_mask`` asks (else an empty placeholder)."""
    geo = _geometry(input, weight, None, stride, padding, dilation, groups)
    need_x, need_w, need_b = output_mask
    dx = _input_grad(geo, grad, weight, input) if need_x else _placeholder(input)
    dw = db = None
    if need_w or need_b:
        dw, db = _weight_grad(geo, input, grad, weight, weight=need_w, bias=need_b)
    return dx, dw if dw is not None else _placeholder(weight), db if db is not None else _placeholder(weight)


@_conv2d_backward_op.register_fake
def _(grad, input, weight, stride, padding, dilation, groups, output_mask):
    need_x, need_w, need_b = output_mask
    return (
        _empty_like_layout(input.shape, input) if need_x else _placeholder(input),
        _empty_like_layout(weight.shape, weight) if need_w else _placeholder(weight),
        weight.new_empty((weight.shape[0],)) if need_b else _placeholder(weight),
    )


def _placeholder(like: torch.Tensor) -> torch.Tensor:
    """What a backward op returns for a gradient its output_mask did not ask for (a schema cannot
    return None): an empty tensor, never read."""
    return like.new_empty((0,))


def _conv2d_setup_context(ctx, inputs, output) -> None:
    x, w, b, stride, padding, dilation, groups = inputs
    ctx.has_bias = b is not None
    ctx.options = (stride, padding, dilation, groups)
    ctx.save_for_backward(x, w)


def _conv2d_backward(ctx, grad: torch.Tensor):
    x, w = ctx.saved_tensors
    need = [bool(ctx.needs_input_grad[0]), bool(ctx.needs_input_grad[1]), bool(ctx.needs_input_grad[2])]
    need[2] = need[2] and ctx.has_bias
    if not any(need):
        return None, None, None, None, None, None, None
    grads = _conv2d_backward_op(grad, x, w, *ctx.options, need)
    return *(g if n else None for g, n in zip(grads, need, strict=True)), None, None, None, None


_conv2d_op.register_autograd(_conv2d_backward, setup_context=_conv2d_setup_context)


def conv2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] | str = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> torch.Tensor:
    """``torch.nn.functional.conv2d`` in Triton: NCHW (contiguous or channels_last, any strides),
    a 3-D input is one unbatched image; forward and backward are implicit GEMMs with fp32
    accumulation (fp64 for fp64), deterministic. Runs ``blitz::conv2d`` once the arguments are
    checked and normalised (padding as (top, bottom, left, right))."""
    unbatched = isinstance(input, torch.Tensor) and input.dim() == 3
    x = input.unsqueeze(0) if unbatched else input
    geo = Conv2dGeometry(x, weight, bias, stride, padding, dilation, groups)
    y = _conv2d_op(x, weight, bias, list(geo.stride), list(geo.pad), list(geo.dilation), geo.groups)
    return y.squeeze(0) if unbatched else y
