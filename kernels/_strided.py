"""Collapse an N-d strided layout to at most four dims so one elementwise kernel serves all, and
index it: the element offsets of linear indices, and whether they need int64.

A dim pair (outer, inner) merges when, for every operand, ``stride[outer] == stride[inner] * size[inner]``
(they walk memory as one dim). Size-1 dims drop out. Contiguous operands collapse to one dim, so
their kernels skip the index arithmetic entirely (``all_contiguous``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

__all__ = ["MAX_RANK", "collapse", "flat_strides", "int64_indexing", "strided_offsets"]

#: Rank the strided elementwise kernels index directly.
MAX_RANK = 4
#: Offsets and indices stay int32 below this many elements (a margin of 2^20 below 2^31 covers the
#: largest block and split any kernel here adds to an index before masking it).
_INT32_LIMIT = 2**31 - 2**20


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


def int64_indexing(*tensors: torch.Tensor, n: int = 0) -> bool:
    """True when an index up to ``n`` or an offset inside any of ``tensors`` can pass int32."""
    if n >= _INT32_LIMIT:
        return True
    for t in tensors:
        extent = sum((s - 1) * st for s, st in zip(t.shape, t.stride(), strict=True)) if t.numel() else 0
        if t.numel() >= _INT32_LIMIT or extent >= _INT32_LIMIT:
            return True
    return False


@triton.jit
def strided_offsets(idx, S1, S2, S3, s0, s1, s2, s3, RANK: tl.constexpr):
    """Memory offsets (in elements) of the elements at row-major linear indices ``idx`` of a
    (S0, S1, S2, S3) view with strides (s0, s1, s2, s3); S0 is implied by the range of ``idx``.
    ``RANK`` (1..4) is how many trailing dims are in use: the leading ones have size 1 and cost no
    division."""
    if RANK <= 1:
        off = idx * s3
    else:
        i3 = idx % S3
        r = idx // S3
        if RANK == 2:
            off = r * s2 + i3 * s3
        else:
            i2 = r % S2
            r = r // S2
            if RANK == 3:
                off = r * s1 + i2 * s2 + i3 * s3
            else:
                i1 = r % S1
                off = (r // S1) * s0 + i1 * s1 + i2 * s2 + i3 * s3
    return off
