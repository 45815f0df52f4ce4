"""Collapse an N-d strided layout to at most four dims so one elementwise kernel serves all.

A dim pair (outer, inner) merges when, for every operand, ``stride[outer] == stride[inner] * size[inner]``
(they walk memory as one dim). Size-1 dims drop out. Contiguous operands collapse to one dim, so
their kernels skip the index arithmetic entirely (``all_contiguous``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["MAX_RANK", "collapse", "flat_strides"]

#: Rank the strided elementwise kernels index directly.
MAX_RANK = 4


def collapse(shape: Sequence[int], strides: Sequence[Sequence[int]]) -> tuple[list[int], list[list[int]]]:
    """Merge dims of ``shape`` that every operand walks as one; returns (sizes, per-operand strides),
    outermost first, padded on the left to ``MAX_RANK`` with size 1. Raises ``ValueError`` when more
    than ``MAX_RANK`` dims remain (the caller then copies)."""
    dims = [d for d in range(len(shape)) if shape[d] != 1]
    sizes: list[int] = []
    out: list[list[int]] = [[] for _ in strides]
    for d in dims:
        if sizes and all(st[-1] == s[d] * shape[d] for st, s in zip(out, strides, strict=True)):
            sizes[-1] *= shape[d]
            for st, s in zip(out, strides, strict=True):
                st[-1] = s[d]
            continue
        sizes.append(int(shape[d]))
        for st, s in zip(out, strides, strict=True):
            st.append(int(s[d]))
    if len(sizes) > MAX_RANK:
        raise ValueError(f"layout needs {len(sizes)} dims after collapsing; kernels index {MAX_RANK}")
    pad = MAX_RANK - len(sizes)
    sizes = [1] * pad + sizes
    out = [[0] * pad + st for st in out]
    return sizes, out


def flat_strides(*tensors: torch.Tensor, shape: Sequence[int] | None = None):
    """``collapse`` for tensors already broadcast to ``shape`` (default: the first one's).

    Returns ``(sizes, strides_per_tensor, all_contiguous, tensors)``; a tensor whose layout does not
    collapse to ``MAX_RANK`` dims is replaced by a contiguous copy (rare: it takes five or more
    dims that cannot merge)."""
    shape = list(tensors[0].shape if shape is None else shape)
    ts = [t.expand(shape) for t in tensors]
    try:
        sizes, strides = collapse(shape, [t.stride() for t in ts])
    except ValueError:
        ts = [t.contiguous() for t in ts]
        sizes, strides = collapse(shape, [t.stride() for t in ts])
    contiguous_strides = []
    acc = 1
    for s in reversed(sizes):
        contiguous_strides.append(acc if s != 1 else 0)
        acc *= s
    contiguous_strides.reverse()
    all_contig = all(
        [st for st, s in zip(strd, sizes, strict=True) if s != 1]
        == [c for c, s in zip(contiguous_strides, sizes, strict=True) if s != 1]
        for strd in strides
    )
    return sizes, strides, all_contig, ts
