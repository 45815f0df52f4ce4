"""cat in NumPy float64: forward and VJP (slices of the gradient)."""

from __future__ import annotations

import numpy as np

__all__ = ["cat", "cat_vjp"]


def _parts(arrays) -> list[int]:
    """Positions of the arrays taking part: as torch, 1-d empty arrays are skipped."""
    used = [i for i, a in enumerate(arrays) if not (a.ndim == 1 and a.shape[0] == 0)]
    return used or [0]


def cat(arrays, dim: int = 0) -> np.ndarray:
    used = _parts(arrays)
    return np.concatenate([arrays[i] for i in used], axis=dim % arrays[used[0]].ndim)


def cat_vjp(arrays, dim: int, g: np.ndarray) -> list[np.ndarray]:
    """One slice of ``g`` per array (zeros of its shape for a skipped one)."""
    used = _parts(arrays)
    d = dim % arrays[used[0]].ndim
    grads = [np.zeros(a.shape) for a in arrays]
    offset = 0
    for i in used:
        size = arrays[i].shape[d]
        grads[i] = np.take(g, np.arange(offset, offset + size), axis=d)
        offset += size
    return grads
