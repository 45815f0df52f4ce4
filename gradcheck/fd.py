"""Finite differences in float64, as pure functions: the step, the directions, a directional
Richardson difference with its error bound, the slopes that bound its rounding, and Jacobian columns.

``forward(arrays) -> list of output arrays`` is a float64 forward (the implementation at float64,
or the NumPy reference); ``arrays`` are the arguments as the reference receives them, ``diff``
the positions of the differentiable ones, ``float_outs`` the positions of the float outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from gradcheck.compare import as_tuple

__all__ = [
    "EPS64",
    "FD_STEP",
    "KINK_FLOOR",
    "directional",
    "directions",
    "jacobian_columns",
    "slopes",
    "step",
]

Forward = Callable[[list[Any]], list[np.ndarray]]

EPS64 = 2.0**-53
#: Relative finite-difference step: Richardson-extrapolated central differences have error
#: O(h^4) + O(eps/h), smallest near h = eps^(1/5) ~ 6e-4; 1e-3 of the input scale sits there.
FD_STEP = 1e-3
#: Examples whose inputs lie closer than this (relative to their scale) to a kink skip the FD checks.
KINK_FLOOR = 1e-6


def step(arrays: Sequence[Any], diff: Sequence[int], *, kinks: Callable[..., float] | None = None) -> float | None:
    """Step along a direction of max-norm 1, or None when there is no derivative to take (no
    differentiable elements, NaN or inf inputs) or a kink is too close. ``kinks(*arrays)`` is the
    distance to the nearest non-differentiable point; the step stays below a quarter of it."""
    xs = [np.asarray(arrays[i]) for i in diff]
    sizes = sum(x.size for x in xs)
    if sizes == 0:
        return None
    if not all(np.all(np.isfinite(x)) for x in xs):
        return None  # NaN or inf inputs: no derivative to take
    scale = max(float(np.sqrt(sum(float(np.sum(x * x)) for x in xs) / sizes)), 1e-3)
    h = FD_STEP * scale
    if kinks is not None:
        dist = float(kinks(*arrays))
        if dist / 4 < h:
            h = dist / 4
        if h < KINK_FLOOR * scale:
            return None
    return h


def directions(seed: int, arrays: Sequence[Any], diff: Sequence[int]) -> list[np.ndarray]:
    """One signed random direction per differentiable argument, of max-norm 1 over each."""
    rng = np.random.default_rng(seed)
    vs = []
    for i in diff:
        v = rng.standard_normal(np.shape(arrays[i]))
        vs.append(v / max(float(np.max(np.abs(v))) if v.size else 1.0, 1e-300))
    return vs


def _moved(arrays: Sequence[Any], diff: Sequence[int], vs: Sequence[np.ndarray], t: float) -> list[Any]:
    """``arrays`` with each differentiable argument moved by ``t`` along its direction."""
    moved = list(arrays)
    for i, v in zip(diff, vs, strict=True):
        moved[i] = np.asarray(arrays[i] + t * v)
    return moved


def directional(
    forward: Forward,
    arrays: Sequence[Any],
    *,
    diff: Sequence[int],
    vs: Sequence[np.ndarray],
    grad_outputs: Mapping[int, np.ndarray],
    h: float,
    slopes: Sequence[np.ndarray | None],
    depth: int,
) -> tuple[float, float]:
    """Richardson-extrapolated central difference of phi(t) = sum_j <g_j, f_j(x + t v)>, over the
    float outputs j in ``grad_outputs``; returns (estimate, error bound). ``slopes`` are the
    gradients of phi (the VJPs), which carry the rounding of x + t v into phi; ``depth`` is the
    op's K (the length of its longest sum)."""

    def phi(t: float) -> tuple[float, float]:
        outs = forward(_moved(arrays, diff, vs, t))
        total, absolute = 0.0, 0.0
        for j, g in grad_outputs.items():
            o = np.asarray(outs[j], dtype=np.float64)
            total += float(np.sum(g * o))
            absolute += float(np.sum(np.abs(g * o)))
        return total, absolute

    (p1, a1), (m1, _) = phi(h), phi(-h)
    (p2, _), (m2, _) = phi(2 * h), phi(-2 * h)
    d1 = (p1 - m1) / (2 * h)
    d2 = (p2 - m2) / (4 * h)
    estimate = (4 * d1 - d2) / 3
    # truncation: Richardson's error is far below |d1 - d2| (an O(h^2) difference); rounding:
    # each phi carries about (K + 8) eps * sum|g f| of error from the forward, and
    # eps * sum|x * dphi/dx| from rounding x + t v (all of it where f(x) cancels to 0, as
    # a - b at a = b), amplified by 1/h
    moved = sum(
        float(np.sum(np.abs(np.asarray(arrays[i], dtype=np.float64) * s)))
        for i, s in zip(diff, slopes, strict=True)
        if s is not None
    )
    rounding = ((depth + 8) * a1 + 2 * moved) * EPS64 / h
    return estimate, abs(d1 - d2) + rounding


def slopes(
    reference_vjp: Callable[..., Any] | None,
    arrays: Sequence[Any],
    *,
    diff: Sequence[int],
    vs: Sequence[np.ndarray],
    h: float,
    ref_grads: Sequence[Any],
    g_arrays: Sequence[np.ndarray | None] | None,
) -> list[np.ndarray | None]:
    """|dphi/dx| over the stencil: the reference VJP's magnitude at x and at x +- 2h v (the
    slope at the perturbed points is what carries the rounding of x + t v into phi; at a
    minimum such as (a - b)^2 at a = b it is 0 at x and O(h) beside it). Only the reference's
    VJP counts: a wrong implementation gradient must not widen the bound."""
    found = [None if ref_grads[i] is None else np.abs(np.asarray(ref_grads[i], dtype=np.float64)) for i in diff]
    if reference_vjp is None or g_arrays is None:
        return found
    for t in (2 * h, -2 * h):
        with np.errstate(all="ignore"):
            beside = as_tuple(reference_vjp(*_moved(arrays, diff, vs, t), *g_arrays))
        for k, i in enumerate(diff):
            if found[k] is not None and beside[i] is not None:
                slope = np.nan_to_num(np.abs(np.asarray(beside[i], dtype=np.float64)), posinf=0.0)
                found[k] = np.maximum(found[k], slope)
    return found


def jacobian_columns(
    forward: Forward,
    arrays: Sequence[Any],
    *,
    base: Sequence[np.ndarray],
    diff: Sequence[int],
    float_outs: Sequence[int],
    h: float,
    depth: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The finite-difference Jacobian (outputs flattened over ``float_outs`` x differentiable
    inputs flattened over ``diff``), one Richardson column per input element, and its error
    bound per entry. ``base`` is ``forward(arrays)``."""
    base_col = np.concatenate([np.asarray(base[k], dtype=np.float64).ravel() for k in float_outs])
    scale = np.abs(base_col)
    n_in = sum(int(np.size(arrays[i])) for i in diff)
    j_fd = np.zeros((base_col.size, n_in))
    j_err = np.zeros((base_col.size, n_in))
    col = 0
    for i in diff:
        for flat in range(int(np.size(arrays[i]))):
            e = np.zeros(np.shape(arrays[i]))
            e.reshape(-1)[flat] = 1.0

            def column(t: float, i: int = i, e: np.ndarray = e) -> np.ndarray:
                outs64 = forward(_moved(arrays, [i], [e], t))
                return np.concatenate([np.asarray(outs64[k], dtype=np.float64).ravel() for k in float_outs])

            plus2, minus2 = column(2 * h), column(-2 * h)
            with np.errstate(over="ignore", invalid="ignore"):  # a forward that overflows: inf/NaN, judged so
                d1 = (column(h) - column(-h)) / (2 * h)
                d2 = (plus2 - minus2) / (4 * h)
                j_fd[:, col] = (4 * d1 - d2) / 3
            # rounding x + t e moves each output by |x| eps times the slope beside x, which
            # the one-sided differences bound (it is 0 at x itself at a minimum)
            beside = np.maximum(np.abs(plus2 - base_col), np.abs(base_col - minus2)) / (2 * h)
            slope = np.maximum(np.abs(j_fd[:, col]), 2 * np.nan_to_num(beside, posinf=0.0))
            moved = 2 * abs(float(np.asarray(arrays[i]).reshape(-1)[flat])) * slope
            j_err[:, col] = np.abs(d1 - d2) + ((depth + 8) * scale + moved) * EPS64 / h
            col += 1
    return j_fd, j_err
