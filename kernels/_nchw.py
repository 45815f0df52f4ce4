"""Helpers shared by the NCHW ops (conv2d, max_pool2d and their modules): int pairs, channels_last
layouts, outputs allocated in the input's layout, and when offsets need int64."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from kernels import _runtime as rt

__all__ = ["INT32_MAX", "empty_nchw", "is_channels_last", "is_int", "needs_int64", "pair"]

INT32_MAX = 2**31 - 1


def is_int(value: object) -> bool:
    """A Python int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def pair(value: int | Sequence[int], name: str, *, minimum: int) -> tuple[int, int]:
    """An int, a 1-sequence or a pair of ints (torch accepts all three) as (h, w), each >= ``minimum``."""
    items = (value, value) if is_int(value) else value
    if isinstance(items, Sequence) and len(items) == 1:
        items = (items[0], items[0])
    if not isinstance(items, Sequence) or len(items) != 2 or not all(is_int(v) for v in items):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if any(v < minimum for v in items):
        what = {0: "non-negative", 1: "positive"}.get(minimum, f">= {minimum}")
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(items[0]), int(items[1])


def is_channels_last(t: torch.Tensor) -> bool:
    """Channels are the innermost dim in memory of an (N, C, H, W) tensor (and there is more than one)."""
    return t.shape[1] > 1 and t.stride(1) == 1 and t.stride(3) > 1


def empty_nchw(shape: Sequence[int], *, dtype: torch.dtype, device: torch.device, channels_last: bool) -> torch.Tensor:
    """An output of ``shape`` (N, C, H, W), contiguous or channels_last, through rt.empty."""
    n, c, h, w = shape
    if channels_last:
        return rt.empty((n, h, w, c), dtype=dtype, device=device).permute(0, 3, 1, 2)
    return rt.empty((n, c, h, w), dtype=dtype, device=device)


def _extent(t: torch.Tensor) -> int:
    """One past the largest element offset of ``t`` (what int32 indexing must reach)."""
    return 1 + sum((s - 1) * abs(st) for s, st in zip(t.shape, t.stride(), strict=True)) if t.numel() else 0


def needs_int64(*tensors: torch.Tensor) -> bool:
    """Index in int64: some offset passes 2^31, or the interpreter runs (its int32 overflow checks on
    every add and multiply cost more than the arithmetic)."""
    return rt.INTERPRET or any(_extent(t) > INT32_MAX for t in tensors)
