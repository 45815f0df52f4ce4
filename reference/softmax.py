"""softmax and log_softmax in NumPy float64: forward and VJP."""

from __future__ import annotations

import numpy as np

__all__ = ["log_softmax", "log_softmax_vjp", "softmax", "softmax_vjp"]


def _shifted(x: np.ndarray, dim: int) -> np.ndarray:
    """x minus its max along ``dim`` (a row of -inf, +inf or NaN gives NaN, as torch)."""
    with np.errstate(invalid="ignore"):
        return x - np.max(x, axis=dim, keepdims=True)


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
        m = np.max(x, axis=dim, keepdims=True)
        e = np.exp(x - np.where(m == -np.inf, 0.0, m))
        top = x == m
        c = np.sum(np.where(top, e, 0.0), axis=dim, keepdims=True)
        big_g = np.sum(np.where(top, g, 0.0), axis=dim, keepdims=True)
        r = np.sum(np.where(top, 0.0, e), axis=dim, keepdims=True)
        t = np.sum(np.where(top, 0.0, g * e), axis=dim, keepdims=True)
        s = c + r
        return (e / s) * ((c * g - big_g) + g * r - t) / s, None


def log_softmax(x: np.ndarray, dim: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 0:
        return log_softmax(x.reshape(1), 0).reshape(())
    if x.size == 0:
        return x.copy()
    z = _shifted(x, dim)
    with np.errstate(divide="ignore", invalid="ignore"):
        return z - np.log(np.sum(np.exp(z), axis=dim, keepdims=True))


def log_softmax_vjp(x: np.ndarray, dim: int, g: np.ndarray) -> tuple[np.ndarray, None]:
    """g - softmax * sum(g)."""
    if np.ndim(x) == 0:
        return np.zeros(()) * g, None
    with np.errstate(invalid="ignore"):
        return g - softmax(x, dim) * np.sum(g, axis=dim, keepdims=True), None
