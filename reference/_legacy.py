"""torch's deprecated ``size_average``/``reduce`` pair, shared by the loss references."""

from __future__ import annotations

__all__ = ["reduction_mode"]


def reduction_mode(size_average, reduce, reduction: str) -> str:
    """torch's deprecated size_average/reduce pair overrides ``reduction`` when given."""
    if size_average is None and reduce is None:
        return reduction
    if reduce is False:
        return "none"
    return "sum" if size_average is False else "mean"
