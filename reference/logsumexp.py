"""logsumexp over one or several dims in NumPy float64: forward and VJP."""

from __future__ import annotations

import numpy as np

__all__ = ["logsumexp", "logsumexp_vjp"]


def _axes(x: np.ndarray, dim) -> tuple[int, ...]:
    dims = (dim,) if isinstance(dim, int | np.integer) else tuple(dim)
    return tuple(int(d) % max(x.ndim, 1) for d in dims)


def _lse_keepdims(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """max + log(sum exp(x - max)) along ``axes`` (keepdims): -inf for an empty or all -inf
    reduction, +inf where an entry is +inf, as torch."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        m = np.max(x, axis=axes, keepdims=True, initial=-np.inf)
        shift = np.where(np.isfinite(m), m, 0.0)
        s = np.sum(np.exp(x - shift), axis=axes, keepdims=True)
        return shift + np.log(s)


def logsumexp(x: np.ndarray, dim, keepdim: bool = False) -> np.ndarray:
    """``torch.logsumexp(x, dim, keepdim)``; ``dim`` an int or a tuple of ints (a 0-d input
    reduces along its one element)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 0:
        return x.copy()
    axes = _axes(x, dim)
    out = _lse_keepdims(x, axes)
    return out if keepdim else np.squeeze(out, axis=axes)


def logsumexp_vjp(x: np.ndarray, dim, keepdim: bool, g: np.ndarray) -> tuple[np.ndarray, None, None]:
    """g * softmax(x) over the reduced dims: g * exp(x - logsumexp)."""
    x = np.asarray(x, dtype=np.float64)
    g = np.asarray(g, dtype=np.float64)
    if x.ndim == 0:
        return g.copy(), None, None
    axes = _axes(x, dim)
    if not keepdim:
        g = np.expand_dims(g, axes)
    with np.errstate(invalid="ignore", over="ignore"):
        return g * np.exp(x - _lse_keepdims(x, axes)), None, None
