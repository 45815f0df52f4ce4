"""The scale of what a correct low-precision kernel may cancel: the reference's sensitivity to
relative perturbations of its inputs (and, for a VJP, of its grad_outputs).

Backward error analysis: a kernel that rounds at unit roundoff ``u`` computes, to first order, the
exact function of inputs perturbed by a few ``u`` relative (``K u`` for a length-K sum). Where a
result cancels (a softmax backward with a constant grad_output, a sum of mixed signs, a
log-sum-exp's ``exp(x - lse)``), ``|ref|`` is small but that perturbation is not: the error
scales with ``|d ref| / eta`` for relative perturbations ``eta``, which the engine measures on the
float64 reference itself with a few random-sign probes (rounding errors have random signs too).

Each probe perturbs every element of every float argument by ``eta * r * |x|`` with ``r`` = +-1
drawn from a seeded generator, so the measure is replayable and needs no derivative code: it runs
the reference forward (or VJP) once per probe.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradcheck.compare import as_tuple

__all__ = ["ETA", "NOISE_ETA", "PROBES", "Sensitivity", "sensitivity"]

#: Relative perturbation of a probe: large against float64 rounding of the reference (2^-52 / 2^-24
#: leaves ~1e-8 relative noise in the difference quotient), small enough that curvature terms
#: (eta * |f''| |x|^2) stay below that noise for any reasonably scaled function.
ETA = 2.0**-24
#: Random-sign probes per example; the bound takes the elementwise maximum over them.
PROBES = 3
#: A few float64 ulps: probes this small change the reference's own rounding, not its value, so
#: their spread measures the float64 reference's error where the result cancels (a gradient that
#: is 0 in exact arithmetic and 1e-18 in float64), which a float64 implementation need not share.
NOISE_ETA = 2.0**-50


@dataclass(frozen=True)
class Sensitivity:
    """Per result element: ``scale``, ``max |f(x(1 + eta r)) - f(x)| / eta`` (what rounding at one
    unit relative moves the result by), and ``noise``, twice the largest change under
    :data:`NOISE_ETA` probes (the float64 reference's own rounding error there)."""

    scale: np.ndarray
    noise: np.ndarray

    def masked(self, keep: np.ndarray) -> Sensitivity:
        """Zero where ``keep`` is False (elements compared exactly: NaN, inf)."""
        return Sensitivity(scale=np.where(keep, self.scale, 0.0), noise=np.where(keep, self.noise, 0.0))


def _perturbed(a: Any, rng: np.random.Generator, eta: float) -> Any:
    if isinstance(a, np.ndarray) and np.issubdtype(a.dtype, np.floating) and a.size:
        signs = rng.integers(0, 2, size=a.shape) * 2.0 - 1.0
        return a * (1.0 + eta * signs)
    return a


def _spread(
    fn: Callable[..., Any], arrays: Sequence[Any], extra: Sequence[Any], base: Sequence[Any], rng, eta: float
) -> list[np.ndarray | None]:
    worst: list[np.ndarray | None] = [None if b is None else np.zeros(np.shape(b)) for b in base]
    for _ in range(PROBES):
        moved = as_tuple(fn(*[_perturbed(a, rng, eta) for a in arrays], *[_perturbed(g, rng, eta) for g in extra]))
        worst = [_widest(w, b, m) for w, b, m in zip(worst, base, moved, strict=False)]
    return worst


def sensitivity(
    fn: Callable[..., Any],
    arrays: Sequence[Any],
    base: Sequence[np.ndarray | None],
    *,
    seed: int,
    extra: Sequence[Any] = (),
    rounding: Callable[[float, int], contextlib.AbstractContextManager] | None = None,
    rounded_fn: Callable[..., Any] | None = None,
) -> list[Sensitivity | None]:
    """Per result of ``fn(*arrays, *extra)``: its :class:`Sensitivity`, from :data:`PROBES`
    random-sign relative perturbations of every float array among ``arrays`` and ``extra`` at
    :data:`ETA` and at :data:`NOISE_ETA`, and, where ``rounding(eta, seed)`` is given (a torch
    oracle's :class:`gradcheck.oracle.SimulatedRounding`), :data:`PROBES` runs of ``rounded_fn``
    (default ``fn``: a torch callable of the same function) with every intermediate result
    perturbed at :data:`ETA`. ``base`` is ``fn``'s unperturbed result (None
    entries stay None). Where the base or a probe is not finite the element gets 0 (NaN and inf
    are compared exactly elsewhere).

    ``noise`` also holds ``4 * 2^-53`` times the scale: the float64 reference's own rounding,
    which matters only when the implementation runs at float64 too."""
    rng = np.random.default_rng(seed)
    scale = _spread(fn, arrays, extra, base, rng, ETA)
    if rounding is not None:
        for k in range(PROBES):
            try:
                with rounding(ETA, seed * PROBES + k):
                    moved = as_tuple((rounded_fn or fn)(*arrays, *extra))
            except Exception:  # the torch model fails on this input (a decomposition torch gets wrong):
                break  # the input probes alone measure the sensitivity
            scale = [_widest(w, b, m) for w, b, m in zip(scale, base, moved, strict=False)]
    noise = _spread(fn, arrays, extra, base, rng, NOISE_ETA)
    out: list[Sensitivity | None] = []
    for s, n in zip(scale, noise, strict=True):
        if s is None:
            out.append(None)
            continue
        out.append(Sensitivity(scale=s / ETA, noise=2.0 * n + 4.0 * 2.0**-53 * s / ETA))
    return out


def _widest(worst: np.ndarray | None, b: Any, m: Any) -> np.ndarray | None:
    if worst is None or b is None or m is None or np.shape(m) != np.shape(b):
        return worst
    with np.errstate(invalid="ignore", over="ignore"):
        d = np.abs(np.asarray(m, dtype=np.float64) - np.asarray(b, dtype=np.float64))
    return np.maximum(worst, np.where(np.isfinite(d), d, 0.0))
