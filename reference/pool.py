"""max_pool2d in NumPy float64: forward (with torch's tie and NaN rules) and VJP."""

from __future__ import annotations

import numpy as np

__all__ = ["max_pool2d", "max_pool2d_vjp", "pool_windows"]


def _pair(v) -> tuple[int, int]:
    if isinstance(v, int | np.integer):
        return int(v), int(v)
    v = tuple(int(e) for e in v)
    return (v[0], v[0]) if len(v) == 1 else (v[0], v[1])


def _out(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    span = size + 2 * p - d * (k - 1) - 1
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def pool_windows(x: np.ndarray, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Every window's elements in row-major order: values (N, C, OH, OW, KH*KW), a bool mask of the
    in-bounds ones, and their flat positions ``h * W + w`` in the plane."""
    k = _pair(kernel_size)
    s = k if stride is None or (not isinstance(stride, int) and len(stride) == 0) else _pair(stride)
    p, d = _pair(padding), _pair(dilation)
    n, c, h, w = x.shape
    oh, ow = (_out(size, *args, ceil_mode) for size, args in zip((h, w), zip(k, s, p, d, strict=True), strict=True))
    rows = (np.arange(oh) * s[0] - p[0])[:, None] + np.arange(k[0]) * d[0]  # (OH, KH)
    cols = (np.arange(ow) * s[1] - p[1])[:, None] + np.arange(k[1]) * d[1]  # (OW, KW)
    r = rows[:, None, :, None]  # (OH, 1, KH, 1)
    q = cols[None, :, None, :]  # (1, OW, 1, KW)
    valid = (r >= 0) & (r < h) & (q >= 0) & (q < w)  # (OH, OW, KH, KW)
    pos = np.clip(r, 0, h - 1) * w + np.clip(q, 0, w - 1)
    vals = x.reshape(n, c, h * w)[:, :, pos]  # (N, C, OH, OW, KH, KW)
    flat = (oh, ow, k[0] * k[1])
    valid = np.broadcast_to(valid.reshape(flat), (n, c, *flat))
    return vals.reshape(n, c, *flat), valid, (r * w + q).reshape(flat), rows, cols


def _winners(x, kernel_size, stride, padding, dilation, ceil_mode):
    """(value, flat index) of each window: the last NaN if there is one, else the first in-bounds
    element equal to the window's max; a window with no in-bounds element gives -inf at the index
    torch reports (its first row/column at or past 0)."""
    vals, valid, pos, rows, cols = pool_windows(x, kernel_size, stride, padding, dilation, ceil_mode)
    taps = vals.shape[-1]
    nan = np.isnan(vals) & valid
    any_nan = nan.any(axis=-1)
    last_nan = taps - 1 - np.argmax(nan[..., ::-1], axis=-1)
    masked = np.where(valid, vals, -np.inf)
    top = np.max(np.where(nan, -np.inf, masked), axis=-1)
    is_top = valid & ~nan & (masked == top[..., None])
    first_top = np.argmax(is_top, axis=-1)
    any_valid = valid.any(axis=-1)
    tap = np.where(any_nan, last_nan, first_top)
    idx = np.take_along_axis(np.broadcast_to(pos, vals.shape), tap[..., None], axis=-1)[..., 0]
    w = x.shape[3]
    # all-padding windows: torch's first row/column at or past 0, even when that is past the input
    first_row = np.array([r[r >= 0][0] if (r >= 0).any() else r[-1] for r in rows])
    first_col = np.array([q[q >= 0][0] if (q >= 0).any() else q[-1] for q in cols])
    empty_idx = first_row[:, None] * w + first_col[None, :]
    idx = np.where(any_valid, idx, empty_idx)
    val = np.where(any_nan, np.nan, np.where(any_valid, top, -np.inf))
    return val, idx, any_valid


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """Output (N, C, OH, OW), and the int64 indices with ``return_indices``; 3-D input: unbatched."""
    unbatched = x.ndim == 3
    xb = x[None] if unbatched else x
    val, idx, _ = _winners(xb, kernel_size, stride, padding, dilation, ceil_mode)
    if unbatched:
        val, idx = val[0], idx[0]
    return (val, idx.astype(np.int64)) if return_indices else val


def max_pool2d_vjp(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices, g, *_):
    """The gradient goes to each window's winner (summed where windows overlap); indices get none."""
    unbatched = x.ndim == 3
    xb, gb = (x[None], g[None]) if unbatched else (x, g)
    _, idx, any_valid = _winners(xb, kernel_size, stride, padding, dilation, ceil_mode)
    n, c, h, w = xb.shape
    dx = np.zeros((n * c, h * w))
    planes = np.broadcast_to(np.arange(n * c)[:, None, None], (n * c, *idx.shape[2:]))
    keep = any_valid.reshape(n * c, *idx.shape[2:])
    np.add.at(dx, (planes[keep], idx.reshape(n * c, *idx.shape[2:])[keep]), gb.reshape(n * c, *idx.shape[2:])[keep])
    dx = dx.reshape(n, c, h, w)
    return (dx[0] if unbatched else dx, None, None, None, None, None, None)
