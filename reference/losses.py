"""smooth_l1_loss, huber_loss and kl_div in NumPy float64: forward and VJP, with
torch.nn.functional's signatures."""

from __future__ import annotations

import numpy as np

from reference._legacy import reduction_mode

__all__ = [
    "huber_loss",
    "huber_loss_vjp",
    "kl_div",
    "kl_div_vjp",
    "smooth_l1_loss",
    "smooth_l1_loss_vjp",
]


def _reduce(loss: np.ndarray, reduction: str) -> np.ndarray:
    """'none' keeps the elementwise loss; 'sum' adds it up; 'mean' divides the sum by the element
    count (NaN for an empty input, 0/0, as torch)."""
    if reduction == "none":
        return loss
    if reduction == "sum":
        return np.asarray(loss.sum())
    with np.errstate(invalid="ignore"):
        return np.asarray(loss.sum() / loss.size if loss.size else np.nan)


def _upstream(g: np.ndarray, shape: tuple[int, ...], reduction: str) -> np.ndarray:
    """The upstream gradient of each element's loss: g itself for 'none', else the scalar g
    broadcast (divided by the element count for 'mean')."""
    g = np.asarray(g, dtype=np.float64)
    if reduction == "none":
        return g
    size = int(np.prod(shape))
    scalar = float(g) / size if reduction == "mean" and size else float(g)
    return np.full(shape, scalar)


# ---------------------------------------------------------------------------------------------
# smooth_l1_loss and huber_loss: quadratic inside |d| < beta, linear outside (C1, not C2)
# ---------------------------------------------------------------------------------------------


def smooth_l1_loss(x, y, size_average=None, reduce=None, reduction="mean", beta=1.0):
    """0.5 d^2 / beta where |d| < beta, else |d| - 0.5 beta (d = x - y); beta = 0 is the L1 loss."""
    reduction = reduction_mode(size_average, reduce, reduction)
    d = np.asarray(x, dtype=np.float64) - np.asarray(y, dtype=np.float64)
    a = np.abs(d)
    if beta == 0:
        loss = a
    else:
        loss = np.where(a < beta, 0.5 * d * d / beta, a - 0.5 * beta)
    return _reduce(loss, reduction)


def smooth_l1_loss_vjp(x, y, size_average, reduce, reduction, beta, g):
    """d/dx = d / beta inside |d| < beta, sign(d) outside (0 at d = 0 when beta = 0, as torch's
    L1 gradient); d/dy = -d/dx."""
    reduction = reduction_mode(size_average, reduce, reduction)
    d = np.asarray(x, dtype=np.float64) - np.asarray(y, dtype=np.float64)
    if beta == 0:
        local = np.sign(d)
    else:
        local = np.where(np.abs(d) < beta, d / beta, np.sign(d))
    dx = local * _upstream(g, d.shape, reduction)
    return dx, -dx, None, None, None, None


def huber_loss(x, y, reduction="mean", delta=1.0):
    """0.5 d^2 where |d| < delta, else delta (|d| - 0.5 delta) (d = x - y): delta times smooth-L1
    with beta = delta."""
    d = np.asarray(x, dtype=np.float64) - np.asarray(y, dtype=np.float64)
    a = np.abs(d)
    loss = np.where(a < delta, 0.5 * d * d, delta * (a - 0.5 * delta))
    return _reduce(loss, reduction)


def huber_loss_vjp(x, y, reduction, delta, g):
    """d/dx = d inside |d| < delta, delta sign(d) outside; d/dy = -d/dx."""
    d = np.asarray(x, dtype=np.float64) - np.asarray(y, dtype=np.float64)
    local = np.where(np.abs(d) < delta, d, delta * np.sign(d))
    dx = local * _upstream(g, d.shape, reduction)
    return dx, -dx, None, None


# ---------------------------------------------------------------------------------------------
# kl_div
# ---------------------------------------------------------------------------------------------


def _kl_reduce(loss: np.ndarray, reduction: str) -> np.ndarray:
    """torch's kl_div reductions: 'batchmean' divides the sum by the first dim's size (not for a
    0-d input), 'mean' by the element count."""
    if reduction != "batchmean":
        return _reduce(loss, reduction)
    total = loss.sum()
    if loss.ndim == 0:
        return np.asarray(total)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(total / loss.shape[0] if loss.shape[0] else np.nan)


def kl_div(x, target, size_average=None, reduce=None, reduction="mean", log_target=False):
    """Pointwise target * (log target - x) (0 where target = 0, xlogy's convention), or with
    ``log_target`` exp(target) * (target - x); x holds log-probabilities."""
    reduction = reduction_mode(size_average, reduce, reduction)
    x = np.asarray(x, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        if log_target:
            loss = np.exp(t) * (t - x)
        else:
            # xlogy(t, t): 0 at t = 0, NaN for negative t
            loss = np.where(t == 0, 0.0, t * np.log(np.where(t == 0, 1.0, t))) - t * x
    return _kl_reduce(loss, reduction)


def kl_div_vjp(x, target, size_average, reduce, reduction, log_target, g):
    """d/dx = -target (or -exp(target)); d/dtarget = log target + 1 - x, or exp(target)
    (target + 1 - x) with ``log_target``; each times the upstream gradient ('batchmean' divides by
    the first dim's size). At target = 0 the target's derivative does not exist (log 0): NaN, as
    torch (xlogy's derivative t / t there)."""
    reduction = reduction_mode(size_average, reduce, reduction)
    x = np.asarray(x, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if reduction == "batchmean":
        up = _upstream(g, x.shape, "sum")
        if x.ndim:
            up = up / x.shape[0] if x.shape[0] else up
    else:
        up = _upstream(g, x.shape, reduction)
    with np.errstate(invalid="ignore", divide="ignore"):
        if log_target:
            e = np.exp(t)
            dx = -e * up
            dt = e * (t + 1.0 - x) * up
        else:
            dx = -t * up
            dt = np.where(t == 0, np.nan, np.log(np.where(t == 0, 1.0, t)) + 1.0 - x) * up
    return dx, dt, None, None, None, None
