"""sum, mean, amax/amin and max/min along dims in NumPy float64: forward and VJP."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "amax",
    "amax_vjp",
    "amin",
    "amin_vjp",
    "axes",
    "max",
    "max_vjp",
    "mean",
    "mean_vjp",
    "min",
    "min_vjp",
    "sum",
    "sum_vjp",
]


def axes(dim: int | Sequence[int] | None, ndim: int) -> tuple[int, ...]:
    """torch's ``dim`` argument as NumPy axes: None or () means every dim; negative dims count
    from the end (a 0-d array accepts 0 and -1 and has no axis)."""
    if dim is None:
        return tuple(range(ndim))
    dims = [dim] if isinstance(dim, int) else list(dim)
    if not dims:
        return tuple(range(ndim))
    return tuple(sorted({d % ndim for d in dims})) if ndim else ()


def _expand(g: np.ndarray, x: np.ndarray, ax: tuple[int, ...], keepdim: bool) -> np.ndarray:
    """The reduced ``g`` with its reduced dims restored as size 1 (broadcastable against ``x``)."""
    g = np.asarray(g, dtype=np.float64)
    return g if keepdim else np.expand_dims(g, ax)


def sum(x: np.ndarray, dim=None, keepdim: bool = False) -> np.ndarray:
    return np.asarray(np.sum(x, axis=axes(dim, x.ndim), keepdims=keepdim))


def sum_vjp(x: np.ndarray, dim, keepdim: bool, g: np.ndarray) -> tuple[np.ndarray, None, None]:
    ax = axes(dim, x.ndim)
    return np.broadcast_to(_expand(g, x, ax, keepdim), x.shape).copy(), None, None


def mean(x: np.ndarray, dim=None, keepdim: bool = False) -> np.ndarray:
    """The mean over no elements is NaN (0 / 0)."""
    ax = axes(dim, x.ndim)
    count = int(np.prod([x.shape[d] for d in ax]))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(np.sum(x, axis=ax, keepdims=keepdim) / count)


def mean_vjp(x: np.ndarray, dim, keepdim: bool, g: np.ndarray) -> tuple[np.ndarray, None, None]:
    ax = axes(dim, x.ndim)
    count = int(np.prod([x.shape[d] for d in ax]))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.broadcast_to(_expand(g, x, ax, keepdim) / count, x.shape).copy(), None, None


def _extreme_vjp(x, dim, keepdim, g, pick) -> tuple[np.ndarray, None, None]:
    """torch's rule for amax/amin: grad / count * (x == result), count = number of ties (a row
    holding NaN has none: 0 / 0 * 0 gives NaN gradients there, as torch's)."""
    ax = axes(dim, x.ndim)
    y = pick(x, axis=ax, keepdims=True)
    mask = x == y
    count = mask.sum(axis=ax, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (_expand(g, x, ax, keepdim) / count) * mask, None, None


def amax(x: np.ndarray, dim=(), keepdim: bool = False) -> np.ndarray:
    """The largest element over ``dim`` (every dim for ()); NaN if the slice holds one."""
    return np.asarray(np.max(x, axis=axes(dim, x.ndim), keepdims=keepdim))


def amax_vjp(x: np.ndarray, dim, keepdim: bool, g: np.ndarray) -> tuple[np.ndarray, None, None]:
    return _extreme_vjp(x, dim, keepdim, g, np.max)


def amin(x: np.ndarray, dim=(), keepdim: bool = False) -> np.ndarray:
    return np.asarray(np.min(x, axis=axes(dim, x.ndim), keepdims=keepdim))


def amin_vjp(x: np.ndarray, dim, keepdim: bool, g: np.ndarray) -> tuple[np.ndarray, None, None]:
    return _extreme_vjp(x, dim, keepdim, g, np.min)


def _arg_extreme(x: np.ndarray, dim: int, keepdim: bool, arg) -> tuple[np.ndarray, np.ndarray]:
    """(values, int64 indices) along ``dim``: NumPy's argmax/argmin pick the first extreme, or
    the first NaN, as torch.max/torch.min do."""
    if x.ndim == 0:
        return np.asarray(x).copy(), np.zeros((), dtype=np.int64)
    d = dim % x.ndim
    idx = np.expand_dims(arg(x, axis=d), d)
    values = np.take_along_axis(x, idx, axis=d)
    if not keepdim:
        values, idx = np.squeeze(values, d), np.squeeze(idx, d)
    return np.asarray(values), np.asarray(idx, dtype=np.int64)


def _arg_extreme_vjp(x, dim, keepdim, g, arg) -> tuple[np.ndarray, None, None]:
    """The gradient goes to the element picked."""
    if x.ndim == 0:
        return np.asarray(g, dtype=np.float64).copy(), None, None
    d = dim % x.ndim
    idx = np.expand_dims(arg(x, axis=d), d)
    dx = np.zeros(x.shape)
    np.put_along_axis(dx, idx, _expand(g, x, (d,), keepdim), axis=d)
    return dx, None, None


def max(x: np.ndarray, dim: int, keepdim: bool = False) -> tuple[np.ndarray, np.ndarray]:
    return _arg_extreme(x, dim, keepdim, np.argmax)


def max_vjp(x: np.ndarray, dim: int, keepdim: bool, g: np.ndarray, g_indices=None) -> tuple[np.ndarray, None, None]:
    return _arg_extreme_vjp(x, dim, keepdim, g, np.argmax)


def min(x: np.ndarray, dim: int, keepdim: bool = False) -> tuple[np.ndarray, np.ndarray]:
    return _arg_extreme(x, dim, keepdim, np.argmin)


def min_vjp(x: np.ndarray, dim: int, keepdim: bool, g: np.ndarray, g_indices=None) -> tuple[np.ndarray, None, None]:
    return _arg_extreme_vjp(x, dim, keepdim, g, np.argmin)
