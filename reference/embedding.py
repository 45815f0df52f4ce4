"""embedding (a lookup of weight rows by integer indices) in NumPy float64: forward and VJP."""

from __future__ import annotations

import numpy as np

__all__ = ["embedding", "embedding_vjp"]


def embedding(indices: np.ndarray, weight: np.ndarray, padding_idx: int | None = None) -> np.ndarray:
    """weight[indices], of shape (*indices.shape, D); the padding row is returned as it is (only its
    gradient is held at zero, as torch)."""
    return np.asarray(weight, dtype=np.float64)[np.asarray(indices, dtype=np.int64)]


def embedding_vjp(indices, weight, padding_idx, g) -> tuple[None, np.ndarray, None]:
    """The weight gradient: each row the sum of the grad_output rows of every position that
    looked it up (repeated indices accumulate), zero for rows never looked up and for the
    padding row."""
    weight = np.asarray(weight, dtype=np.float64)
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    g = np.asarray(g, dtype=np.float64).reshape(idx.size, weight.shape[1])
    dw = np.zeros_like(weight)
    np.add.at(dw, idx, g)
    if padding_idx is not None:
        dw[padding_idx] = 0.0
    return None, dw, None
