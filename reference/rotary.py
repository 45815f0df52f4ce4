"""Rotary position embedding (the half-rotation layout of Llama-style models) in NumPy float64:
forward and VJP.

x is (B, H, T, D) with D even; cos and sin are (T, D) tables broadcast over batch and heads;
out = x * cos + rotate_half(x) * sin with rotate_half(x) = cat(-x2, x1), x1 and x2 the two halves
of the last dim.
"""

from __future__ import annotations

import numpy as np

__all__ = ["rotary_embedding", "rotary_embedding_vjp", "rotate_half", "rotate_half_transposed"]


def rotate_half(x: np.ndarray) -> np.ndarray:
    """cat(-x2, x1) along the last dim."""
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def rotate_half_transposed(u: np.ndarray) -> np.ndarray:
    """The transpose of :func:`rotate_half` (its inverse): cat(u2, -u1)."""
    half = u.shape[-1] // 2
    return np.concatenate([u[..., half:], -u[..., :half]], axis=-1)


def _sum_to(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum a broadcast result back to ``shape`` (the tables' (T, D))."""
    lead = a.ndim - len(shape)
    return a.sum(axis=tuple(range(lead))) if lead else a


def rotary_embedding(x, cos, sin):
    x = np.asarray(x, dtype=np.float64)
    return x * np.asarray(cos, dtype=np.float64) + rotate_half(x) * np.asarray(sin, dtype=np.float64)


def rotary_embedding_vjp(x, cos, sin, g):
    """dx = g cos + rotate_half^T(g sin); dcos = sum over (B, H) of g x; dsin = sum over (B, H)
    of g rotate_half(x)."""
    x = np.asarray(x, dtype=np.float64)
    cos = np.asarray(cos, dtype=np.float64)
    sin = np.asarray(sin, dtype=np.float64)
    g = np.asarray(g, dtype=np.float64)
    dx = g * cos + rotate_half_transposed(g * sin)
    dcos = _sum_to(g * x, cos.shape)
    dsin = _sum_to(g * rotate_half(x), sin.shape)
    return dx, dcos, dsin
