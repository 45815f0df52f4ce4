"""softmax and log_softmax in NumPy float64: forward and VJP."""

from __future__ import annotations

import numpy as np

__all__ = ["log_softmax", "log_softmax_vjp", "log_sum_exp_shifted", "softmax", "softmax_vjp"]


def _shifted(x: np.ndarray, dim: int) -> np.ndarray:
    """x minus its max along ``dim`` (a row of -inf, +inf or NaN gives NaN, as torch)."""
    with np.errstate(invalid="ignore"):
        return x - np.max(x, axis=dim, keepdims=True)


def _max_and_exp(x: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """The row max m along ``dim`` (keepdims) and e = exp(x - m), shifted by 0 for a row of -inf
    (so e = 0 there)."""
    m = np.max(x, axis=dim, keepdims=True)
    return m, np.exp(x - np.where(m == -np.inf, 0.0, m))


def _top_rest(x: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(top, e, c, r): the mask of each row's max entries, e = exp(x - max), and the sums of e
    over the max entries (c, each exp(0) = 1) and over the rest (r), keepdims."""
    m, e = _max_and_exp(x, dim)
    top = x == m
    c = np.sum(np.where(top, e, 0.0), axis=dim, keepdims=True)
    r = np.sum(np.where(top, 0.0, e), axis=dim, keepdims=True)
    return top, e, c, r


def softmax(x: np.ndarray, dim: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 0:
        return softmax(x.reshape(1), 0).reshape(())
    if x.size == 0:
        return x.copy()
    e = np.exp(_shifted(x, dim))
    with np.errstate(invalid="ignore"):
        return e / e.sum(axis=dim, keepdims=True)


def softmax_vjp(x: np.ndarray, dim: int, g: np.ndarray) -> tuple[np.ndarray, None]:
    """y * (g - sum(g * y)), with the bracket evaluated without cancellation: split each row into
    its max entries (e = 1, c of them, g summing to G) and the rest (sum r of e, sum T of g e);
    then g_i - sum(g y) = (c g_i - G + g_i r - T) / s, s = c + r (an exact identity). The plain
    form loses the bracket to rounding where y is close to 1. The bracket is unchanged by adding a
    constant to g (sum y = 1): g is shifted by its first element along dim, so a g constant along
    dim gives exact zeros."""
    x = np.asarray(x, dtype=np.float64)
    g = np.asarray(g, dtype=np.float64)
    if x.ndim == 0:
        return np.zeros(()) * g, None  # one element: the output is constant 1
    if x.size == 0:
        return np.zeros(x.shape), None
    g = g - np.take(g, [0], axis=dim)
    with np.errstate(invalid="ignore", divide="ignore"):
        top, e, c, r = _top_rest(x, dim)
        big_g = np.sum(np.where(top, g, 0.0), axis=dim, keepdims=True)
        t = np.sum(np.where(top, 0.0, g * e), axis=dim, keepdims=True)
        s = c + r
        return (e / s) * ((c * g - big_g) + g * r - t) / s, None


def log_softmax(x: np.ndarray, dim: int) -> np.ndarray:
    """(x - max) - log(sum exp(x - max)), the log-sum split as log(c) + log1p(r / c) (c the row's
    max entries, each exp(0) = 1; r the rest): accurate where the max entry's log-probability is
    close to 0, which log(c + r) would round to a few ulps of 1."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 0:
        return log_softmax(x.reshape(1), 0).reshape(())
    if x.size == 0:
        return x.copy()
    return _shifted(x, dim) - log_sum_exp_shifted(x, dim)


def log_sum_exp_shifted(x: np.ndarray, dim: int) -> np.ndarray:
    """log(sum exp(x - max)) along ``dim`` (keepdims), as log(c) + log1p(r / c)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        _, _, c, r = _top_rest(x, dim)
        return np.log(c) + np.log1p(r / c)


def log_softmax_vjp(x: np.ndarray, dim: int, g: np.ndarray) -> tuple[np.ndarray, None]:
    """g - p * sum(g), p the softmax, written as g'_i + k (s - L e_i) / s - e_i sum(g') / s with
    e = exp(x - max), s = sum e, k = g's first element along dim and g' = g - k (an exact identity):
    exactly 0 where it should be (g and x constant along dim), where the plain form leaves rounding."""
    x = np.asarray(x, dtype=np.float64)
    g = np.asarray(g, dtype=np.float64)
    if x.ndim == 0:
        return np.zeros(()) * g, None  # one element: the output is constant 0
    if x.size == 0:
        return np.zeros(x.shape), None
    k = np.take(g, [0], axis=dim)
    g = g - k
    with np.errstate(invalid="ignore", divide="ignore"):
        _, e = _max_and_exp(x, dim)
        s = np.sum(e, axis=dim, keepdims=True)
        return g + k * ((s - x.shape[dim] * e) / s) - e * (np.sum(g, axis=dim, keepdims=True) / s), None
