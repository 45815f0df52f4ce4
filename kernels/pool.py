"""max_pool2d, forward and backward in Triton, with torch's NaN and tie rules; the backward is a gather."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from kernels import _runtime as rt
from kernels._nchw import empty_nchw, is_channels_last, needs_int64, pair

__all__ = ["MaxPool2dFunction", "MaxPool2dGeometry", "max_pool2d", "max_pool2d_output_size"]

# Which element wins a window, exactly as torch (CPU and CUDA kernels alike): the window is scanned
# in row-major order starting from its first in-bounds element, and an element is taken when it is
# greater than the best so far or is NaN. So the first of several equal maxima wins, the last NaN
# wins over everything, and a window of -inf keeps its first in-bounds element.
#
# The forward records the winner's position inside its window (kh * KW + kw) in an int8 tensor when
# the input needs a gradient: 1 byte per output against re-reading the whole input (4 bytes per
# input element in fp32, KH * KW reads per window) to find the argmax again in the backward. The
# backward then walks each input element's candidate windows (at most KH * KW, found arithmetically)
# and sums grad_output where that window's winner is this element: a gather, so no atomics and a
# fixed summation order.
#
# Tiles are 2-D: (planes n*c, pixels oh*ow) for NCHW, (pixels n*oh*ow, channels) for channels_last,
# so the column dim is the contiguous one and index decoding is done per row and per column, not
# per element.

#: Widest column block (pixels of a plane, or channels).
MAX_BLOCK_S = 1024


def _configs() -> list[triton.Config]:
    """BLOCK (elements per program) x warps. The interpreter's cost is per operation: one big block
    (measured); compiled, a memory-bound spread for the autotuner."""
    if rt.INTERPRET:
        return [triton.Config({"BLOCK": 8192}, num_warps=4)]
    return [triton.Config({"BLOCK": b}, num_warps=w) for b, w in ((1024, 4), (2048, 4), (2048, 8), (4096, 8), (512, 4))]


@triton.jit
def _tile(
    R, S,  # rows and columns of the tile grid
    INT64: tl.constexpr, BLOCK: tl.constexpr, BLOCK_S: tl.constexpr,
):
    """Row and column indices of this program's (BLOCK / BLOCK_S, BLOCK_S) tile, and their masks."""
    BLOCK_R: tl.constexpr = BLOCK // BLOCK_S if BLOCK > BLOCK_S else 1
    pid_r = tl.program_id(0)
    pid_s = tl.program_id(1)
    ar_r = tl.arange(0, BLOCK_R)
    ar_s = tl.arange(0, BLOCK_S)
    if INT64:
        pid_r = pid_r.to(tl.int64)
        pid_s = pid_s.to(tl.int64)
        ar_r = ar_r.to(tl.int64)
        ar_s = ar_s.to(tl.int64)
    rows = (pid_r * BLOCK_R + ar_r)[:, None]  # (BLOCK_R, 1)
    cols = (pid_s * BLOCK_S + ar_s)[None, :]  # (1, BLOCK_S)
    return rows, cols, rows < R, cols < S


@triton.jit
def _decode(rows, cols, C, PH, PW, CHANNELS_LAST: tl.constexpr):
    """(n, c, ph, pw) of tile rows/cols: each a (rows, 1) or (1, cols) vector, never a full tile.
    (PH, PW) is the plane the pixels index: the output for the forward, the input for the backward."""
    if CHANNELS_LAST:  # rows: (n, ph, pw), cols: c
        pw = rows % PW
        t = rows // PW
        ph = t % PH
        n = t // PH
        c = cols
    else:  # rows: (n, c), cols: (ph, pw)
        c = rows % C
        n = rows // C
        pw = cols % PW
        ph = cols // PW
    return n, c, ph, pw


@rt.autotune(configs=_configs(), key=["R", "S", "KH", "KW", "CHANNELS_LAST", "WRITE_INDICES", "WRITE_TAPS"])
@triton.jit
def _max_pool_fwd_kernel(
    x_ptr,  # input (N, C, H, W), strides sx*
    y_ptr,  # output (N, C, OH, OW), strides so*
    idx_ptr,  # int64 indices h * W + w, laid out as the output; written when WRITE_INDICES
    tap_ptr,  # winner's kh * KW + kw, laid out as the output; written when WRITE_TAPS
    R, S,  # tile grid: (N * C, OH * OW), or (N * OH * OW, C) when CHANNELS_LAST
    C, H, W, OH, OW,
    sxn, sxc, sxh, sxw,  # input strides
    son, soc, soh, sow,  # output strides (shared by y, idx and tap)
    sh, sw,  # stride
    ph, pw,  # padding
    dh, dw,  # dilation
    KH: tl.constexpr, KW: tl.constexpr,  # kernel size
    CHANNELS_LAST: tl.constexpr,  # tile rows are pixels and columns channels
    WRITE_INDICES: tl.constexpr,
    WRITE_TAPS: tl.constexpr,
    INT64: tl.constexpr,  # index in int64 (offsets past 2^31, or the interpreter)
    BLOCK_S: tl.constexpr,  # column block: next power of two of S, at most MAX_BLOCK_S
    BLOCK: tl.constexpr,  # elements per program
):
    acc_t = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    rows, cols, r_ok, s_ok = _tile(R, S, INT64, BLOCK, BLOCK_S)
    ok = r_ok & s_ok
    n, c, oh, ow = _decode(rows, cols, C, OH, OW, CHANNELS_LAST)
    hstart = oh * sh - ph
    wstart = ow * sw - pw
    # torch starts from the first in-bounds row/column of the window (it may be past the input
    # when none is: then the window is all padding, its value -inf)
    h0 = tl.where(hstart < 0, hstart + ((dh - 1 - hstart) // dh) * dh, hstart)
    w0 = tl.where(wstart < 0, wstart + ((dw - 1 - wstart) // dw) * dw, wstart)
    x_base = x_ptr + (n * sxn + c * sxc)
    best = tl.full(ok.shape, float("-inf"), acc_t)
    best_idx = h0 * W + w0 + tl.zeros(ok.shape, h0.dtype)
    best_tap = ((h0 - hstart) // dh) * KW + (w0 - wstart) // dw + tl.zeros(ok.shape, h0.dtype)
    for kh in tl.static_range(KH):
        ih = hstart + kh * dh
        h_ok = (ih >= 0) & (ih < H)
        for kw in tl.static_range(KW):
            iw = wstart + kw * dw
            v_ok = ok & h_ok & ((iw >= 0) & (iw < W))
            v = tl.load(x_base + ih * sxh + iw * sxw, mask=v_ok, other=float("-inf")).to(acc_t)
            take = v_ok & ((v > best) | (v != v))  # greater, or NaN: torch's rule
            best = tl.where(take, v, best)
            if WRITE_INDICES:
                best_idx = tl.where(take, ih * W + iw, best_idx)
            if WRITE_TAPS:
                best_tap = tl.where(take, kh * KW + kw, best_tap)
    o_off = n * son + c * soc + oh * soh + ow * sow
    tl.store(y_ptr + o_off, best.to(y_ptr.dtype.element_ty), mask=ok)
    if WRITE_INDICES:
        tl.store(idx_ptr + o_off, best_idx.to(tl.int64), mask=ok)
    if WRITE_TAPS:
        tl.store(tap_ptr + o_off, best_tap.to(tap_ptr.dtype.element_ty), mask=ok)


@rt.autotune(configs=_configs(), key=["R", "S", "KH", "KW", "CHANNELS_LAST"])
@triton.jit
def _max_pool_bwd_kernel(
    g_ptr,  # grad_output (N, C, OH, OW), strides sg* (any layout, stride 0 included)
    tap_ptr,  # the forward's winners, strides st*
    dx_ptr,  # grad_input (N, C, H, W), strides sd*
    R, S,  # tile grid over the input: (N * C, H * W), or (N * H * W, C) when CHANNELS_LAST
    C, H, W, OH, OW,
    sgn, sgc, sgh, sgw,  # grad_output strides
    stn, stc, sth, stw,  # tap strides
    sdn, sdc, sdh, sdw,  # grad_input strides
    sh, sw, ph, pw, dh, dw,  # stride, padding, dilation
    KH: tl.constexpr, KW: tl.constexpr,
    CHANNELS_LAST: tl.constexpr,
    INT64: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK: tl.constexpr,
):
    acc_t = tl.float64 if g_ptr.dtype.element_ty == tl.float64 else tl.float32
    rows, cols, r_ok, s_ok = _tile(R, S, INT64, BLOCK, BLOCK_S)
    ok = r_ok & s_ok
    n, c, ih, iw = _decode(rows, cols, C, H, W, CHANNELS_LAST)
    g_base = g_ptr + (n * sgn + c * sgc)
    t_base = tap_ptr + (n * stn + c * stc)
    acc = tl.zeros(ok.shape, acc_t)
    for kh in tl.static_range(KH):
        # the window whose tap kh lands on row ih: oh * sh = ih + ph - kh * dh
        th = ih + ph - kh * dh
        oh = tl.maximum(th, 0) // sh  # clamped first: integer division of negatives differs across backends
        h_ok = (th >= 0) & (oh * sh == th) & (oh < OH)
        for kw in tl.static_range(KW):
            tw = iw + pw - kw * dw
            ow = tl.maximum(tw, 0) // sw
            w_ok = ok & h_ok & ((tw >= 0) & (ow * sw == tw) & (ow < OW))
            won = tl.load(t_base + oh * sth + ow * stw, mask=w_ok, other=-1) == kh * KW + kw
            gv = tl.load(g_base + oh * sgh + ow * sgw, mask=w_ok & won, other=0.0)
            acc += gv.to(acc_t)
    tl.store(dx_ptr + (n * sdn + c * sdc + ih * sdh + iw * sdw), acc.to(dx_ptr.dtype.element_ty), mask=ok)


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------


def max_pool2d_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int, ceil_mode: bool) -> int:
    """Output length along one dim, as torch: rounded down, or up with ``ceil_mode`` as long as the
    last window starts inside the input or its left padding."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def _grid(r: int, s: int, block_s: int):
    def grid(meta):
        block_r = max(meta["BLOCK"] // block_s, 1)
        return rt.cdiv(r, block_r), rt.cdiv(s, block_s)

    return grid


class MaxPool2dGeometry:
    """A validated max_pool2d problem on a 4-D input: the options ``max_pool2d`` takes; raises a
    clear TypeError or ValueError for anything the kernels cannot run."""

    def __init__(self, x: torch.Tensor, kernel_size, stride, padding, dilation, ceil_mode):
        rt.check_float(x, "input")
        if x.dim() != 4:
            raise ValueError(f"max_pool2d expects a 4-D (N, C, H, W) or 3-D input, got shape {tuple(x.shape)}")
        self.kernel = pair(kernel_size, "kernel_size", minimum=1)
        self.stride = self.kernel if stride is None or (isinstance(stride, Sequence) and len(stride) == 0) else pair(
            stride, "stride", minimum=1
        )
        self.padding = pair(padding, "padding", minimum=0)
        self.dilation = pair(dilation, "dilation", minimum=1)
        if not isinstance(ceil_mode, bool):
            raise TypeError(f"ceil_mode must be a bool, got {ceil_mode!r}")
        if any(p > k // 2 for p, k in zip(self.padding, self.kernel, strict=True)):
            raise ValueError(f"padding {self.padding} must be at most half the kernel size {self.kernel}")
        n, c, h, w = x.shape
        if c == 0 or h == 0 or w == 0:
            raise ValueError(f"max_pool2d needs non-empty channel and spatial dims, got input {tuple(x.shape)}")
        self.out = tuple(
            max_pool2d_output_size(size, k, s, p, d, ceil_mode)
            for size, k, s, p, d in zip((h, w), self.kernel, self.stride, self.padding, self.dilation, strict=True)
        )
        if min(self.out) < 1:
            raise ValueError(
                f"input of shape {tuple(x.shape)} is too small for kernel {self.kernel} with padding "
                f"{self.padding} and dilation {self.dilation}: the output would be {self.out[0]}x{self.out[1]}"
            )
        self.n, self.c, self.h, self.w = n, c, h, w
        self.channels_last = is_channels_last(x)
        # a tap is kh * KW + kw; a window that is all padding records one just past the kernel
        # (torch's start-from-the-first-in-bounds-element rule), so the bound is (KH + 1) * (KW + 1)
        taps = (self.kernel[0] + 1) * (self.kernel[1] + 1)
        self.tap_dtype = torch.int8 if taps <= 127 else torch.int16 if taps <= 32767 else torch.int32

    @property
    def args(self) -> tuple[int, ...]:
        return (*self.stride, *self.padding, *self.dilation)


def _forward(geo: MaxPool2dGeometry, x: torch.Tensor, indices: bool, taps: bool):
    oh, ow = geo.out
    shape = (geo.n, geo.c, oh, ow)
    cl = geo.channels_last
    y = empty_nchw(shape, dtype=x.dtype, device=x.device, channels_last=cl)
    idx = empty_nchw(shape, dtype=torch.int64, device=x.device, channels_last=cl) if indices else None
    tap = empty_nchw(shape, dtype=geo.tap_dtype, device=x.device, channels_last=cl) if taps else None
    if y.numel() == 0:
        return y, idx, tap
    r, s = (geo.n * oh * ow, geo.c) if cl else (geo.n * geo.c, oh * ow)
    block_s = min(rt.next_pow2(s), MAX_BLOCK_S)
    _max_pool_fwd_kernel[_grid(r, s, block_s)](
        x, y, idx if indices else y, tap if taps else y,
        r, s, geo.c, geo.h, geo.w, oh, ow,
        *x.stride(), *y.stride(), *geo.args,
        KH=geo.kernel[0], KW=geo.kernel[1], CHANNELS_LAST=cl,
        WRITE_INDICES=indices, WRITE_TAPS=taps, INT64=needs_int64(x, y), BLOCK_S=block_s,
    )  # fmt: skip
    return y, idx, tap


def _backward(geo: MaxPool2dGeometry, g: torch.Tensor, tap: torch.Tensor) -> torch.Tensor:
    oh, ow = geo.out
    cl = geo.channels_last
    dx = empty_nchw((geo.n, geo.c, geo.h, geo.w), dtype=g.dtype, device=g.device, channels_last=cl)
    if dx.numel() == 0:
        return dx
    r, s = (geo.n * geo.h * geo.w, geo.c) if cl else (geo.n * geo.c, geo.h * geo.w)
    block_s = min(rt.next_pow2(s), MAX_BLOCK_S)
    _max_pool_bwd_kernel[_grid(r, s, block_s)](
        g, tap, dx,
        r, s, geo.c, geo.h, geo.w, oh, ow,
        *g.stride(), *tap.stride(), *dx.stride(), *geo.args,
        KH=geo.kernel[0], KW=geo.kernel[1], CHANNELS_LAST=cl, INT64=needs_int64(g, dx, tap), BLOCK_S=block_s,
    )  # fmt: skip
    return dx


class MaxPool2dFunction(torch.autograd.Function):
    """max_pool2d of a 4-D input for the problem ``geo`` that ``max_pool2d`` validated."""

    @staticmethod
    def forward(ctx, x, geo: MaxPool2dGeometry, return_indices: bool):
        need_grad = ctx.needs_input_grad[0]
        y, idx, tap = _forward(geo, x, indices=return_indices, taps=need_grad)
        ctx.geo = geo
        ctx.save_for_backward(tap)
        if return_indices:
            ctx.mark_non_differentiable(idx)
            return y, idx
        return y

    @staticmethod
    def backward(ctx, g, *_):
        (tap,) = ctx.saved_tensors
        return _backward(ctx.geo, g, tap), None, None


def max_pool2d(
    input: torch.Tensor,
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] | None = None,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
):
    """``torch.nn.functional.max_pool2d`` in Triton (NCHW, contiguous or channels_last, any strides;
    a 3-D input is one unbatched image). Returns the output, and with ``return_indices`` also the
    int64 flat index ``h * W + w`` of each window's winner within its plane."""
    unbatched = isinstance(input, torch.Tensor) and input.dim() == 3
    x = input.unsqueeze(0) if unbatched else input
    geo = MaxPool2dGeometry(x, kernel_size, stride, padding, dilation, ceil_mode)
    out = MaxPool2dFunction.apply(x, geo, bool(return_indices))
    if not unbatched:
        return out
    return (out[0].squeeze(0), out[1].squeeze(0)) if return_indices else out.squeeze(0)
