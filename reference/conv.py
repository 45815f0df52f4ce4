"""conv2d in NumPy float64: forward and VJP, one kernel tap at a time over a zero-padded input."""

from __future__ import annotations

import numpy as np

__all__ = ["conv2d", "conv2d_vjp"]


def _pair(v) -> tuple[int, int]:
    if isinstance(v, int | np.integer):
        return int(v), int(v)
    v = tuple(int(e) for e in v)
    return (v[0], v[0]) if len(v) == 1 else (v[0], v[1])


def _pads(padding, kernel, stride, dilation) -> tuple[int, int, int, int]:
    """(top, bottom, left, right); 'same' puts the odd extra row/column after, as torch."""
    if isinstance(padding, str):
        if padding == "valid":
            return 0, 0, 0, 0
        th, tw = dilation[0] * (kernel[0] - 1), dilation[1] * (kernel[1] - 1)
        return th // 2, th - th // 2, tw // 2, tw - tw // 2
    ph, pw = _pair(padding)
    return ph, ph, pw, pw


def _setup(x, w, stride, padding, dilation, groups):
    """Grouped views and the geometry: x (N, G, Cg, Hp, Wp) padded, w (G, OCg, Cg, KH, KW)."""
    s, d = _pair(stride), _pair(dilation)
    n, _, h, wd = x.shape
    oc, cg, kh, kw = w.shape
    pt, pb, pl, pr = _pads(padding, (kh, kw), s, d)
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    oh = (h + pt + pb - d[0] * (kh - 1) - 1) // s[0] + 1
    ow = (wd + pl + pr - d[1] * (kw - 1) - 1) // s[1] + 1
    xg = xp.reshape(n, groups, cg, xp.shape[2], xp.shape[3])
    wg = w.reshape(groups, oc // groups, cg, kh, kw)
    return xg, wg, s, d, (pt, pb, pl, pr), (oh, ow)


def _window(s, d, i, j, oh, ow) -> tuple[slice, slice]:
    """Rows and columns of the padded input that kernel tap (i, j) meets, one per output pixel."""
    return slice(i * d[0], i * d[0] + s[0] * (oh - 1) + 1, s[0]), slice(j * d[1], j * d[1] + s[1] * (ow - 1) + 1, s[1])


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, stride=1, padding=0, dilation=1, groups=1):
    """Cross-correlation, torch.nn.functional.conv2d's convention: y = sum over (c, i, j) of x * w, plus b."""
    unbatched = x.ndim == 3
    if unbatched:
        x = x[None]
    xg, wg, s, d, _, (oh, ow) = _setup(x, w, stride, padding, dilation, groups)
    n = x.shape[0]
    y = np.zeros((n, groups, wg.shape[1], oh, ow))
    for i in range(w.shape[2]):
        for j in range(w.shape[3]):
            rows, cols = _window(s, d, i, j, oh, ow)
            y += np.einsum("ngchw,gkc->ngkhw", xg[:, :, :, rows, cols], wg[:, :, :, i, j])
    y = y.reshape(n, w.shape[0], oh, ow)
    if b is not None:
        y = y + b[None, :, None, None]
    return y[0] if unbatched else y


def conv2d_vjp(x, w, b, stride, padding, dilation, groups, g) -> tuple:
    """(dx, dw, db or None, None, None, None, None) for grad_output g."""
    unbatched = x.ndim == 3
    if unbatched:
        x, g = x[None], g[None]
    xg, wg, s, d, (pt, _, pl, _), (oh, ow) = _setup(x, w, stride, padding, dilation, groups)
    n = x.shape[0]
    gg = g.reshape(n, groups, wg.shape[1], oh, ow)
    dxp = np.zeros_like(xg)
    dwg = np.zeros_like(wg)
    for i in range(w.shape[2]):
        for j in range(w.shape[3]):
            rows, cols = _window(s, d, i, j, oh, ow)
            dxp[:, :, :, rows, cols] += np.einsum("ngkhw,gkc->ngchw", gg, wg[:, :, :, i, j])
            dwg[:, :, :, i, j] = np.einsum("ngkhw,ngchw->gkc", gg, xg[:, :, :, rows, cols])
    h, wd = x.shape[2], x.shape[3]
    dx = dxp.reshape(n, x.shape[1], dxp.shape[3], dxp.shape[4])[:, :, pt : pt + h, pl : pl + wd]
    db = None if b is None else g.sum(axis=(0, 2, 3))
    return (dx[0] if unbatched else dx), dwg.reshape(w.shape), db, None, None, None, None
