"""Memory layouts and guard bands: place a tensor's values in a poisoned buffer at any strides.

A layout is a memory order of the dims, a gap factor per dim (every other slot: a slice with a
step) and a storage offset. Stride-0 dims of the drawn values (expanded tensors) stay stride 0.
The buffer around and between the elements holds a poison value (NaN, or a huge finite sentinel
on the second pass, since ``max``, ``where`` and comparisons can swallow a NaN), so a read outside
the tensor shows in the result and a write outside it shows in the buffer afterwards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from hypothesis import strategies as st

__all__ = ["GUARD", "Layout", "Placed", "layouts", "place", "poison_value"]

#: Poisoned elements before and after every placed tensor.
GUARD = 16

#: Integer poison: far outside any valid index, so a read past the end of a target shows.
INT_POISON = -(2**40)


@dataclass(frozen=True)
class Layout:
    """Where a tensor's elements go in its buffer."""

    kind: str  # contiguous, transposed, sliced, channels_last, permuted
    order: tuple[int, ...]  # dims from outermost to innermost in memory
    steps: tuple[int, ...]  # per dim: 1 dense, 2 every other slot
    offset: int  # extra poisoned elements before the first one

    @staticmethod
    def contiguous(ndim: int) -> Layout:
        return Layout("contiguous", tuple(range(ndim)), (1,) * ndim, 0)


@st.composite
def layouts(draw, ndim: int, *, kinds: tuple[str, ...] | None = None) -> Layout:
    """A layout for an ``ndim``-d tensor: contiguous, transposed (last two dims swapped),
    sliced (gaps in some dims and an offset), channels_last (4-d) or a random dim order."""
    options = ["contiguous", "sliced"]
    if ndim >= 2:
        options += ["transposed", "permuted"]
    if ndim == 4:
        options.append("channels_last")
    if kinds is not None:
        options = [k for k in options if k in kinds] or ["contiguous"]
    kind = draw(st.sampled_from(options))
    order = tuple(range(ndim))
    steps = (1,) * ndim
    offset = 0
    if kind == "transposed":
        order = (*order[:-2], order[-1], order[-2])
    elif kind == "channels_last":
        order = (0, 2, 3, 1)
    elif kind == "permuted":
        order = tuple(draw(st.permutations(list(range(ndim)))))
    elif kind == "sliced":
        steps = tuple(draw(st.sampled_from((1, 2))) for _ in range(ndim))
        if ndim and all(s == 1 for s in steps):
            steps = (*steps[:-1], 2)
        offset = draw(st.integers(1, 7))
    return Layout(kind, order, steps, offset)


def poison_value(dtype: torch.dtype, sentinel: bool) -> float | int:
    """NaN (first pass) or a huge finite sentinel (second pass) for floats; a far-out index for ints."""
    if not dtype.is_floating_point:
        return INT_POISON if dtype == torch.int64 else torch.iinfo(dtype).min
    return torch.finfo(dtype).max / 2 if sentinel else math.nan


@dataclass
class Placed:
    """A tensor placed in a guarded buffer."""

    tensor: torch.Tensor  # the view handed to the implementation
    buffer: torch.Tensor  # the whole flat storage, poison included
    footprint: np.ndarray  # bool per buffer element: True where the view's elements live
    poison: float | int
    expected: torch.Tensor  # the values the view must still hold afterwards (detached copy)
    layout: Layout

    def describe(self) -> str:
        t = self.tensor
        return (
            f"{str(t.dtype).removeprefix('torch.')}{tuple(t.shape)} strides {tuple(t.stride())} "
            f"offset {t.storage_offset()} [{self.layout.kind}"
            f"{', expanded' if 0 in t.stride() and t.numel() > 1 else ''}]"
        )

    def problems(self, name: str) -> list[str]:
        """What changed that must not: the guard band or gaps (a write outside the tensor), or
        the tensor's own values (an input written into)."""
        out = []
        buf = self.buffer.detach().cpu()
        outside = torch.from_numpy(~self.footprint)
        band = buf[outside]
        if band.numel():
            if isinstance(self.poison, float) and math.isnan(self.poison):
                bad = ~torch.isnan(band)
            else:
                bad = band != self.poison
            if bool(bad.any()):
                idx = int(torch.nonzero(outside).flatten()[int(torch.nonzero(bad).flatten()[0])])
                out.append(
                    f"{name}: {int(bad.sum())} poisoned element(s) outside the tensor were overwritten "
                    f"(first at buffer index {idx}, tensor starts at {self.tensor.storage_offset()}): "
                    "a write out of bounds"
                )
        now = self.tensor.detach().cpu()
        then = self.expected
        same = (now == then) | (torch.isnan(now) & torch.isnan(then)) if now.is_floating_point() else now == then
        if now.numel() and not bool(same.all()):
            where = tuple(int(i) for i in torch.nonzero(~same)[0])
            out.append(
                f"{name} was modified in place: {int((~same).sum())} element(s) changed, first at {where} "
                f"({then[where].item()!r} -> {now[where].item()!r})"
            )
        return out


def _strides(shape: tuple[int, ...], expanded: tuple[bool, ...], layout: Layout) -> tuple[tuple[int, ...], int]:
    strides = [0] * len(shape)
    running = 1
    for d in reversed(layout.order):
        if expanded[d]:
            strides[d] = 0
            continue
        strides[d] = running * layout.steps[d]
        running = strides[d] * max(shape[d], 1)
    extent = 1 + sum((s - 1) * st_ for s, st_ in zip(shape, strides, strict=True)) if all(shape) else 0
    return tuple(strides), extent


def place(
    values: torch.Tensor,
    *,
    dtype: torch.dtype,
    device: torch.device,
    layout: Layout,
    sentinel: bool = False,
    requires_grad: bool = False,
) -> Placed:
    """Cast ``values`` to ``dtype``, lay them out in a guarded buffer on ``device``."""
    shape = tuple(values.shape)
    expanded = tuple(st_ == 0 and s > 1 for s, st_ in zip(shape, values.stride(), strict=True))
    strides, extent = _strides(shape, expanded, layout)
    start = GUARD + layout.offset
    total = start + extent + GUARD
    poison = poison_value(dtype, sentinel)
    buffer = torch.full((total,), poison, dtype=dtype, device=device)
    view = buffer.as_strided(shape, strides, start)
    # write through the non-overlapping part: index 0 of each expanded dim
    index = tuple(slice(0, 1) if e else slice(None) for e in expanded)
    view[index].copy_(values[index].to(dtype))
    positions = torch.arange(total, device="cpu").as_strided(shape, strides, start)
    footprint = np.zeros(total, dtype=bool)
    footprint[positions.reshape(-1).numpy()] = True
    expected = view.detach().cpu().clone()
    if requires_grad:
        view.requires_grad_(True)
    return Placed(view, buffer, footprint, poison, expected, layout)
