"""linear_cross_entropy (the LLM head: cross_entropy(hidden @ weight^T + bias, target)) in NumPy
float64: forward and VJP."""

from __future__ import annotations

import numpy as np

import reference.cross_entropy

__all__ = ["linear_cross_entropy", "linear_cross_entropy_vjp"]


def _logits(hidden, weight, bias) -> np.ndarray:
    """(N, H) @ (V, H)^T (+ (V,)) -> (N, V)."""
    logits = np.asarray(hidden, dtype=np.float64) @ np.asarray(weight, dtype=np.float64).T
    return logits if bias is None else logits + np.asarray(bias, dtype=np.float64)


def linear_cross_entropy(hidden, weight, target, bias=None, ignore_index=-100, reduction="mean"):
    """cross_entropy(hidden @ weight^T + bias, target, ignore_index=..., reduction=...)."""
    logits = _logits(hidden, weight, bias)
    return reference.cross_entropy.cross_entropy(logits, target, None, None, ignore_index, None, reduction, 0.0)


def linear_cross_entropy_vjp(hidden, weight, target, bias, ignore_index, reduction, g):
    """With dZ the cross-entropy VJP on the logits Z: dhidden = dZ weight, dweight = dZ^T hidden,
    dbias = the column sums of dZ."""
    hidden = np.asarray(hidden, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    logits = _logits(hidden, weight, bias)
    d_logits = reference.cross_entropy.cross_entropy_vjp(
        logits, target, None, None, ignore_index, None, reduction, 0.0, g
    )[0]  # (N, V)
    d_bias = None if bias is None else d_logits.sum(axis=0)
    return d_logits @ weight, d_logits.T @ hidden, None, d_bias, None, None
