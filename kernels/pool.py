"""max_pool2d, forward and backward in Triton, with torch's NaN and tie rules; the backward is a gather."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from kernels import _runtime as rt
from kernels._library import custom_op
from kernels._nchw import empty_nchw, is_channels_last, needs_int64, pair

__all__ = ["MaxPool2dGeometry", "max_pool2d", "max_pool2d_output_size"]

# Which element wins a window, exactly as torch (CPU and CUDA kernels alike): the window is scanned
# in row-major order starting from its first in-bounds element, and an element is taken when it is
# greater than the best so far or is NaN. So the first of several equal maxima wins, the last NaN
# wins over everything, and a window of -inf keeps its first in-bounds element.
#
# The forward records the winner's flat index h * W + w in its plane (torch's indices: the custom op
# always returns them, a schema having a fixed number of outputs), against re-reading the whole input
# to find the argmax again in the backward. The backward then walks each input element's candidate
# windows (at most KH * KW, found arithmetically) and sums grad_output where that window's winner is
# this element: a gather, so no atomics and a fixed summation order.
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


@rt.autotune(configs=_configs(), key=["R", "S", "KH", "KW", "CHANNELS_LAST"])
@triton.jit
def _max_pool_fwd_kernel(
    x_ptr,  # input (N, C, H, W), strides sx*
    y_ptr,  # output (N, C, OH, OW), strides so*
    idx_ptr,  # int64 indices h * W + w, laid out as the output
    R, S,  # tile grid: (N * C, OH * OW), or (N * OH * OW, C) when CHANNELS_LAST
    C, H, W, OH, OW,
    sxn, sxc, sxh, sxw,  # input strides
    son, soc, soh, sow,  # output strides (shared by y and idx)
    sh, sw,  # stride
    ph, pw,  # padding
    dh, dw,  # dilation
    KH: tl.constexpr, KW: tl.constexpr,  # kernel size
    CHANNELS_LAST: tl.constexpr,  # tile rows are pixels and columns channels
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
    for kh in tl.static_range(KH):
        ih = hstart + kh * dh
        h_ok = (ih >= 0) & (ih < H)
        for kw in tl.static_range(KW):
            iw = wstart + kw * dw
            v_ok = ok & h_ok & ((iw >= 0) & (iw < W))
            v = tl.load(x_base + ih * sxh + iw * sxw, mask=v_ok, other=float("-inf")).to(acc_t)
            take = v_ok & ((v > best) | (v != v))  # greater, or NaN: torch's rule
            best = tl.where(take, v, best)
            best_idx = tl.where(take, ih * W + iw, best_idx)
    o_off = n * son + c * soc + oh * soh + ow * sow
    tl.store(y_ptr + o_off, best.to(y_ptr.dtype.element_ty), mask=ok)
    tl.store(idx_ptr + o_off, best_idx.to(tl.int64), mask=ok)


@rt.autotune(configs=_configs(), key=["R", "S", "KH", "KW", "CHANNELS_LAST"])
@triton.jit
def _max_pool_bwd_kernel(
    g_ptr,  # grad_output (N, C, OH, OW), strides sg* (any layout, stride 0 included)
    idx_ptr,  # the forward's winners (flat index h * W + w in the plane), strides st*
    dx_ptr,  # grad_input (N, C, H, W), strides sd*
    R, S,  # tile grid over the input: (N * C, H * W), or (N * H * W, C) when CHANNELS_LAST
    C, H, W, OH, OW,
    sgn, sgc, sgh, sgw,  # grad_output strides
    stn, stc, sth, stw,  # index strides
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
    t_base = idx_ptr + (n * stn + c * stc)
    here = ih * W + iw  # this element's flat index
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
            won = tl.load(t_base + oh * sth + ow * stw, mask=w_ok, other=-1) == here
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


def _forward(
    x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
    ceil_mode: bool,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(values, int64 indices) of a checked 4-D input, laid out as the input."""
    n, c, h, w = x.shape
    oh, ow = _output_size((h, w), kernel, stride, padding, dilation, ceil_mode)
    cl = is_channels_last(x)
    y = empty_nchw((n, c, oh, ow), dtype=x.dtype, device=x.device, channels_last=cl)
    idx = empty_nchw((n, c, oh, ow), dtype=torch.int64, device=x.device, channels_last=cl)
    if y.numel() == 0:
        return y, idx
    r, s = (n * oh * ow, c) if cl else (n * c, oh * ow)
    block_s = min(rt.next_pow2(s), MAX_BLOCK_S)
    _max_pool_fwd_kernel[_grid(r, s, block_s)](
        x, y, idx,
        r, s, c, h, w, oh, ow,
        *x.stride(), *y.stride(), *stride, *padding, *dilation,
        KH=kernel[0], KW=kernel[1], CHANNELS_LAST=cl, INT64=needs_int64(x, y), BLOCK_S=block_s,
    )  # fmt: skip
    return y, idx


def _backward(
    g: torch.Tensor, idx: torch.Tensor, size: Sequence[int], kernel: Sequence[int], stride: Sequence[int],
    padding: Sequence[int], dilation: Sequence[int], channels_last: bool,
) -> torch.Tensor:  # fmt: skip
    """grad_input (N, C, *size), laid out channels_last or contiguous, from grad_output and the indices."""
    n, c, oh, ow = g.shape
    h, w = size
    dx = empty_nchw((n, c, h, w), dtype=g.dtype, device=g.device, channels_last=channels_last)
    if dx.numel() == 0:
        return dx
    r, s = (n * h * w, c) if channels_last else (n * c, h * w)
    block_s = min(rt.next_pow2(s), MAX_BLOCK_S)
    _max_pool_bwd_kernel[_grid(r, s, block_s)](
        g, idx, dx,
        r, s, c, h, w, oh, ow,
        *g.stride(), *idx.stride(), *dx.stride(), *stride, *padding, *dilation,
        KH=kernel[0], KW=kernel[1], CHANNELS_LAST=channels_last, INT64=needs_int64(g, dx, idx), BLOCK_S=block_s,
    )  # fmt: skip
    return dx


def _output_size(size, kernel, stride, padding, dilation, ceil_mode) -> tuple[int, int]:
    return tuple(
        max_pool2d_output_size(*args, ceil_mode) for args in zip(size, kernel, stride, padding, dilation, strict=True)
    )


def _empty_like_layout(shape, like: torch.Tensor, dtype: torch.dtype, channels_last: bool) -> torch.Tensor:
    """A fake output of ``shape`` (N, C, H, W) laid out as the kernels lay out theirs."""
    n, c, h, w = shape
    if channels_last:
        return like.new_empty((n, h, w, c), dtype=dtype).permute(0, 3, 1, 2)
    return like.new_empty((n, c, h, w), dtype=dtype)


@custom_op("max_pool2d")
def _max_pool2d_op(
    input: torch.Tensor,
    kernel_size: list[int],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    ceil_mode: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, indices) of a 4-D input ``max_pool2d`` checked (pairs for every option); indices are
    int64 flat positions h * W + w in the plane, as torch's. Both laid out as the input."""
    return _forward(input, kernel_size, stride, padding, dilation, ceil_mode)


@_max_pool2d_op.register_fake
def _(input, kernel_size, stride, padding, dilation, ceil_mode):
    n, c, h, w = input.shape
    oh, ow = _output_size((h, w), kernel_size, stride, padding, dilation, ceil_mode)
    cl = is_channels_last(input)
    return (
        _empty_like_layout((n, c, oh, ow), input, input.dtype, cl),
        _empty_like_layout((n, c, oh, ow), input, torch.int64, cl),
    )


@custom_op("max_pool2d_backward")
def _max_pool2d_backward_op(
    grad: torch.Tensor,
    indices: torch.Tensor,
    input_size: list[int],
    kernel_size: list[int],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    channels_last: bool,
) -> torch.Tensor:
    """grad_input of ``blitz::max_pool2d`` for an input of spatial size ``input_size`` (H, W), laid
    out channels_last or contiguous as ``channels_last`` says: a gather over the windows."""
    return _backward(grad, indices, input_size, kernel_size, stride, padding, dilation, channels_last)


@_max_pool2d_backward_op.register_fake
def _(grad, indices, input_size, kernel_size, stride, padding, dilation, channels_last):
    return _empty_like_layout((*grad.shape[:2], *input_size), grad, grad.dtype, channels_last)


def _max_pool2d_setup_context(ctx, inputs, output) -> None:
    x, kernel_size, stride, padding, dilation, _ = inputs
    ctx.options = (list(x.shape[2:]), kernel_size, stride, padding, dilation, is_channels_last(x))
    ctx.save_for_backward(output[1])


def _max_pool2d_backward(ctx, grad: torch.Tensor, _grad_indices):
    if not ctx.needs_input_grad[0]:
        return None, None, None, None, None, None
    (indices,) = ctx.saved_tensors
    return _max_pool2d_backward_op(grad, indices, *ctx.options), None, None, None, None, None


_max_pool2d_op.register_autograd(_max_pool2d_backward, setup_context=_max_pool2d_setup_context)


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
    int64 flat index ``h * W + w`` of each window's winner within its plane. Runs
    ``blitz::max_pool2d`` (which always returns both) once the options are checked and made pairs."""
    unbatched = isinstance(input, torch.Tensor) and input.dim() == 3
    x = input.unsqueeze(0) if unbatched else input
    geo = MaxPool2dGeometry(x, kernel_size, stride, padding, dilation, ceil_mode)
    y, idx = _max_pool2d_op(x, list(geo.kernel), list(geo.stride), list(geo.padding), list(geo.dilation), ceil_mode)
    if unbatched:
        y, idx = y.squeeze(0), idx.squeeze(0)
    return (y, idx) if return_indices else y
