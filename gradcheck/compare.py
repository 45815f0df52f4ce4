"""Elementwise comparison against a tolerance, and the lines a failure report shows for it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from gradcheck.tolerances import TABLE, Tolerance

__all__ = [
    "Comparison",
    "as_tuple",
    "compare",
    "dtype_name",
    "format_index",
    "mismatch_lines",
    "past_range",
    "to_numpy",
]


def past_range(values: np.ndarray, dtype: torch.dtype, u: float) -> np.ndarray:
    """Where a finite float64 reference lies so near the largest finite value of ``dtype`` (within 4
    units ``u`` of roundoff) or beyond it that a correct result may be inf."""
    return np.isfinite(values) & (np.abs(values) > float(torch.finfo(dtype).max) * (1 - 4 * u))


def as_tuple(x: Any) -> tuple:
    """A function's result as a tuple of outputs (one output: a 1-tuple)."""
    return tuple(x) if isinstance(x, tuple | list) else (x,)


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A tensor's values on the CPU: float64 for a floating tensor, its own dtype otherwise."""
    t = t.detach().cpu()
    if t.is_floating_point():
        return t.to(torch.float64).numpy()
    return t.numpy()


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def format_index(idx: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(i) for i in idx) + "]" if idx else "[]"


@dataclass(frozen=True)
class Comparison:
    """The worst element of a comparison (or of a scalar one, with ``index=()``)."""

    ratio: float  # worst |err| / tol, inf for a NaN/inf mismatch
    index: tuple[int, ...] = ()
    actual: float = 0.0
    expected: float = 0.0
    error: float = 0.0
    tol: float = 0.0
    n_bad: int = 0
    reason: str = ""


def compare(
    actual: np.ndarray,
    expected: np.ndarray,
    tol: Tolerance,
    *,
    dtype: torch.dtype,
    magnitude: np.ndarray | None,
    sensitivity: Any = None,
    allowance: float = 0.0,
) -> Comparison:
    """Elementwise |actual - expected| against ``tol``; NaN matches only NaN, inf only the same inf,
    and a reference beyond the dtype's range expects the overflow (inf) the dtype gives.
    ``magnitude`` is the sum of |terms| per element where the op declares or implies one;
    ``sensitivity`` the reference's sensitivity to relative perturbations (the cancellation term);
    ``allowance`` an absolute error added to every element's bound (a baseline's error, times c)."""
    expected = np.asarray(expected, dtype=np.float64)
    if expected.size == 0:
        return Comparison(0.0)
    big = float(torch.finfo(dtype).max)
    u = TABLE[tol.row].u_out
    exp = expected.copy()
    overflow = np.isfinite(exp) & (np.abs(exp) > big * (1 + u))
    exp[overflow] = np.sign(exp[overflow]) * np.inf
    edge = past_range(exp, dtype, u)  # may round either way
    a_nan, e_nan = np.isnan(actual), np.isnan(exp)
    a_inf, e_inf = np.isinf(actual), np.isinf(exp)
    special = (a_nan != e_nan) | ((e_inf | a_inf) & ~edge & (actual != exp) & ~(a_nan & e_nan))
    special |= edge & np.isinf(actual) & (np.sign(actual) != np.sign(exp))
    if special.any():
        idx = tuple(int(i) for i in np.argwhere(special)[0])
        reason = "NaN/inf mismatch"
        if np.isnan(actual[idx]):
            reason += (
                " (NaN where the reference is finite: an output element never written, or a read outside an input)"
            )
        return Comparison(
            np.inf,
            index=idx,
            actual=float(actual[idx]),
            expected=float(exp[idx]),
            error=np.inf,
            tol=0.0,
            n_bad=int(special.sum()),
            reason=reason,
        )
    finite = np.isfinite(exp) & np.isfinite(actual)
    bound = tol.bound(
        np.where(finite, exp, 0.0),
        None if magnitude is None else np.where(finite, magnitude, 0.0),
        None if sensitivity is None else sensitivity.masked(finite),
    ) + allowance
    err = np.where(finite, np.abs(actual - np.where(finite, exp, 0.0)), 0.0)
    ratio = err / bound
    flat = int(np.argmax(ratio))
    idx = tuple(int(i) for i in np.unravel_index(flat, ratio.shape)) if ratio.ndim else ()
    return Comparison(
        float(ratio[idx]),
        index=idx,
        actual=float(actual[idx]),
        expected=float(exp[idx]),
        error=float(err[idx]),
        tol=float(bound[idx]),
        n_bad=int((ratio > 1).sum()),
    )


def mismatch_lines(what: str, c: Comparison, tol: Tolerance) -> list[str]:
    """The report lines of a failed comparison: the worst element, its error and the tolerance."""
    lines = [f"worst element: {what}{format_index(c.index)}: impl={c.actual!r} reference={c.expected!r}"]
    if c.reason:
        lines.append(f"{c.reason}; {c.n_bad} element(s) affected")
    else:
        lines.append(
            f"|err|={c.error:.4g} > tol={c.tol:.4g} (err/tol={c.ratio:.3g}; {c.n_bad} element(s) over tolerance)"
        )
    lines.append(f"tolerance: {tol.describe()}")
    return lines
