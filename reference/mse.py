"""mse_loss in NumPy float64: forward and VJP, with torch.nn.functional's signature."""

from __future__ import annotations

import numpy as np

from reference._legacy import reduction_mode

__all__ = ["mse_loss", "mse_loss_vjp"]


def mse_loss(x, y, size_average=None, reduce=None, reduction="mean"):
    reduction = reduction_mode(size_average, reduce, reduction)
    sq = (np.asarray(x, dtype=np.float64) - np.asarray(y, dtype=np.float64)) ** 2
    if reduction == "none":
        return sq
    if reduction == "sum":
        return np.asarray(sq.sum())
    with np.errstate(invalid="ignore"):
        return np.asarray(sq.sum() / sq.size if sq.size else np.nan)


def mse_loss_vjp(x, y, size_average, reduce, reduction, g):
    """d/dx = 2 (x - y) g (divided by the element count for 'mean'); d/dy = -d/dx."""
    reduction = reduction_mode(size_average, reduce, reduction)
    d = np.asarray(x, dtype=np.float64) - np.asarray(y, dtype=np.float64)
    g = np.asarray(g, dtype=np.float64)
    dx = 2.0 * d * g
    if reduction == "mean":
        dx = dx / max(d.size, 1)
    return dx, -dx, None, None, None
