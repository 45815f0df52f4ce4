"""scaled_dot_product_attention in NumPy float64: forward and VJP, called as the catalog calls it:
``(q, k, v, is_causal, scale)`` (torch's ``scale`` is keyword-only; no mask tensor, no dropout)."""

from __future__ import annotations

import math

import numpy as np

import reference.softmax

__all__ = ["scaled_dot_product_attention", "scaled_dot_product_attention_vjp"]


def _scale(q: np.ndarray, scale) -> float:
    """1 / sqrt(D) unless given; at D = 0 every score is an empty sum, 0 at any scale, so 1 (torch
    gives the plain mean of v there)."""
    if scale is not None:
        return float(scale)
    return 1.0 / math.sqrt(q.shape[-1]) if q.shape[-1] else 1.0


def _scores(q, k, is_causal, c: float) -> np.ndarray:
    """q k^T * c, key j > query i set to -inf when causal (torch's top-left alignment).
    (B, H, T_q, T_k)."""
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * c
    if is_causal:
        t_q, t_k = s.shape[-2:]
        s = np.where(np.tril(np.ones((t_q, t_k), dtype=bool)), s, -np.inf)
    return s


def scaled_dot_product_attention(q, k, v, is_causal=False, scale=None):
    """softmax(q k^T * scale [+ causal mask]) v; scale defaults to 1 / sqrt(D)."""
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    return np.matmul(reference.softmax.softmax(_scores(q, k, is_causal, _scale(q, scale)), -1), v)


def scaled_dot_product_attention_vjp(q, k, v, is_causal, scale, g):
    """With P the probabilities and O = P v: dv = P^T g; dP = g v^T; dS = P (dP - rowsum(dP P))
    (the softmax VJP, through the softmax reference's cancellation-free form); dq = dS k * scale,
    dk = dS^T q * scale."""
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    g = np.asarray(g, dtype=np.float64)
    c = _scale(q, scale)
    s = _scores(q, k, is_causal, c)
    p = reference.softmax.softmax(s, -1)
    dv = np.matmul(np.swapaxes(p, -1, -2), g)
    dp = np.matmul(g, np.swapaxes(v, -1, -2))
    ds, _ = reference.softmax.softmax_vjp(s, -1, dp)
    dq = np.matmul(ds, k) * c
    dk = np.matmul(np.swapaxes(ds, -1, -2), q) * c
    return dq, dk, dv, None, None
