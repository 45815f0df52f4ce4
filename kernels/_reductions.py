"""The losses' reduction argument: its names, and torch's deprecated ``size_average``/``reduce`` pair."""

from __future__ import annotations

__all__ = ["REDUCTIONS", "check_reduction", "legacy_reduction"]

REDUCTIONS = {"none": 0, "sum": 1, "mean": 2}


def legacy_reduction(size_average: bool | None, reduce: bool | None, reduction: str) -> str:
    """torch's deprecated ``size_average``/``reduce`` pair, when either is given, decides the
    reduction as torch's ``_Reduction.legacy_get_string`` does: each defaults to True, a false
    ``reduce`` gives 'none', else a false ``size_average`` 'sum', else 'mean'."""
    if size_average is None and reduce is None:
        return reduction
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    if not reduce:
        return "none"
    return "mean" if size_average else "sum"


def check_reduction(reduction: object) -> int:
    """The reduction's code (0 none, 1 sum, 2 mean); ValueError for any other value."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r}; expected one of 'none', 'mean', 'sum'")
    return REDUCTIONS[reduction]
