"""matmul, linear and linear_relu in NumPy float64: forward and VJP."""

from __future__ import annotations

import numpy as np

__all__ = ["linear", "linear_relu", "linear_relu_vjp", "linear_vjp", "matmul", "matmul_vjp"]


def _sum_to(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``x`` over the dims broadcasting added to (or stretched in) ``shape``."""
    lead = x.ndim - len(shape)
    x = x.sum(axis=tuple(range(lead))) if lead else x
    stretched = tuple(d for d, s in enumerate(shape) if s == 1 and x.shape[d] != 1)
    return x.sum(axis=stretched, keepdims=True) if stretched else x


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(M, K) @ (K, N), or batched (B, M, K) @ (B, K, N) with a batch of 1 (or none) broadcast."""
    return np.matmul(a, b)


def matmul_vjp(a: np.ndarray, b: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """dA = g @ B^T and dB = A^T @ g, summed over a batch the operand was broadcast along."""
    da = np.matmul(g, np.swapaxes(b, -1, -2))
    db = np.matmul(np.swapaxes(a, -1, -2), g)
    return _sum_to(da, a.shape), _sum_to(db, b.shape)


def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """x (..., in) @ w.T (in, out) + b (out,)."""
    y = np.matmul(x, w.T)
    return y if b is None else y + b


def linear_vjp(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, g: np.ndarray) -> tuple:
    """dx = g @ w; dw = g^T @ x and db = column sums of g, over every leading index."""
    rows_g = g.reshape(-1, w.shape[0])  # (rows, out)
    rows_x = x.reshape(-1, w.shape[1])  # (rows, in)
    dx = np.matmul(g, w)
    dw = rows_g.T @ rows_x
    db = None if b is None else rows_g.sum(axis=0)
    return dx, dw, db


def linear_relu(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """relu(linear(x, w, b)); NaN stays NaN."""
    y = linear(x, w, b)
    return np.where(y < 0, 0.0, y)


def linear_relu_vjp(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, g: np.ndarray) -> tuple:
    """linear's VJP of g where the output is positive (torch's rule: 0 at 0)."""
    return linear_vjp(x, w, b, np.where(linear(x, w, b) > 0, g, 0.0))
