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
    """y * (g - sum(g * y))."""
    y = softmax(x, dim)
    if y.ndim == 0:
        return np.zeros(()) * g, None  # one element: the output is constant 1
    with np.errstate(invalid="ignore"):
        return y * (g - np.sum(g * y, axis=dim, keepdims=True)), None


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
