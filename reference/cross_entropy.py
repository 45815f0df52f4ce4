"""cross_entropy in NumPy float64: forward and VJP, with torch.nn.functional's signature."""

from __future__ import annotations

import numpy as np

import reference.softmax
from reference._legacy import reduction_mode

__all__ = ["cross_entropy", "cross_entropy_vjp"]


def _as_rows(x: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Logits (N, C, d...) or (C,) as (rows, C), targets as (rows,), rows in target order."""
    if x.ndim == 1:
        return x[None, :], np.asarray(target).reshape(1)
    return np.moveaxis(x, 1, -1).reshape(-1, x.shape[1]), np.asarray(target).reshape(-1)


def _log_softmax_rows(rows: np.ndarray) -> np.ndarray:
    return reference.softmax.log_softmax(rows, 1)


def _ce_parts(x, target, weight, ignore_index):
    """Per-row log-softmax, the counted rows, the class weights and each row's target weight."""
    rows, t = _as_rows(np.asarray(x, dtype=np.float64), target)
    n_classes = rows.shape[1]
    logp = _log_softmax_rows(rows)
    counted = t != ignore_index
    safe = np.where(counted, t, 0)
    w = np.ones(n_classes) if weight is None else np.asarray(weight, dtype=np.float64)
    w_t = np.where(counted, w[safe], 0.0)
    return logp, counted, safe, w, w_t


def cross_entropy(
    x, target, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean", label_smoothing=0.0
):
    """torch's formula: (1 - eps) * w[t] * -logp[t] + eps / C * sum_c w[c] * -logp[c] per counted
    row (0 for ignored ones); 'mean' divides the sum by the summed w[t] of counted rows."""
    reduction = reduction_mode(size_average, reduce, reduction)
    logp, counted, safe, w, w_t = _ce_parts(x, target, weight, ignore_index)
    n_classes = logp.shape[1]
    with np.errstate(invalid="ignore"):
        nll = -np.take_along_axis(logp, safe[:, None], axis=1)[:, 0]
        loss = w_t * nll
        if label_smoothing > 0:
            smooth = -(logp * w).sum(axis=1)
            loss = (1 - label_smoothing) * loss + label_smoothing / n_classes * smooth
        loss = np.where(counted, loss, 0.0)
    if reduction == "none":
        return loss.reshape(np.shape(target))
    if reduction == "sum":
        return np.asarray(loss.sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(loss.sum() / w_t.sum())


def cross_entropy_vjp(x, target, weight, size_average, ignore_index, reduce, reduction, label_smoothing, g):
    """d loss_i / d x[j] = (1 - eps) w[t] (p[j] - [j == t]) + eps / C (p[j] S_w - w[j]) (p the softmax,
    S_w the summed class weights), times the row's upstream gradient. The class weight's gradient,
    which torch does not define, is derived too: the catalog marks it optional (checked when an
    implementation gives one, never demanded)."""
    reduction = reduction_mode(size_average, reduce, reduction)
    x = np.asarray(x, dtype=np.float64)
    logp, counted, safe, w, w_t = _ce_parts(x, target, weight, ignore_index)
    n_rows, n_classes = logp.shape
    eps = float(label_smoothing)
    p = np.exp(logp)
    onehot = np.zeros_like(p)
    onehot[np.arange(n_rows), safe] = 1.0
    hit = (1 - eps) * w_t
    grad = hit[:, None] * (p - onehot) + eps / n_classes * (p * w.sum() - w[None, :])
    g = np.asarray(g, dtype=np.float64)
    scale = g.reshape(-1) if reduction == "none" else np.full(n_rows, float(g))
    if reduction == "mean":
        with np.errstate(divide="ignore"):
            scale = scale / w_t.sum()
    with np.errstate(invalid="ignore"):
        grad = grad * np.where(counted, scale, 0.0)[:, None]
    if x.ndim == 1:
        grad = grad.reshape(x.shape)
    else:
        moved = (x.shape[0], *x.shape[2:], x.shape[1])
        grad = np.moveaxis(grad.reshape(moved), -1, 1)
    grad_w = None if weight is None else _weight_vjp(logp, counted, safe, w, w_t, eps, reduction, g)
    return grad, None, grad_w, None, None, None, None, None


def _weight_vjp(logp, counted, safe, w, w_t, eps, reduction, g) -> np.ndarray:
    """The class weight's gradient (torch defines none; an implementation may give one): per counted
    row, d loss_i / d w[c] = (1 - eps) [c == t_i] nll_i + eps / C * -logp[i, c]. 'mean' is S / W
    with W the summed w[t] of counted rows, so d/dw[c] = dS/dw[c] / W - S / W^2 * #{counted i: t_i = c}."""
    n_rows, n_classes = logp.shape
    onehot = np.zeros_like(logp)
    onehot[np.arange(n_rows), safe] = 1.0
    onehot[~counted] = 0.0
    neg_logp = np.where(counted[:, None], -logp, 0.0)
    nll = np.take_along_axis(neg_logp, safe[:, None], axis=1)[:, 0]
    per_row = (1 - eps) * onehot * nll[:, None] + eps / n_classes * neg_logp  # (rows, C)
    if reduction == "none":
        return (np.asarray(g, dtype=np.float64).reshape(-1)[:, None] * per_row).sum(axis=0)
    g = float(np.asarray(g))
    if reduction == "sum":
        return g * per_row.sum(axis=0)
    summed = ((1 - eps) * w_t * nll + eps / n_classes * (neg_logp * w).sum(axis=1)).sum()
    total_w = w_t.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        return g * (per_row.sum(axis=0) / total_w - summed / total_w**2 * onehot.sum(axis=0))
