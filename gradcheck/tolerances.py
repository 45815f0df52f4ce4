"""The one tolerance table: per dtype, for forward and gradients, scaled by each op's accumulation depth.

Every bound is derived, not tuned (see DESIGN.md, "Tolerances"):

- The reference runs on the inputs as the implementation sees them (cast to the dtype, then to
  float64), so input rounding drops out and what is left is the implementation's own arithmetic.
- Rounding the result to the output dtype costs ``ROUNDING_UNITS`` units of roundoff ``u_out``
  relative to |ref| (one rounding on store, one for a fused multiply-add or a division before it);
  transcendental functions add ``spec.ulps`` units of the compute precision ``u_acc``.
- A length-K sum or dot accumulated at ``u_acc`` is off by at most about K * u_acc * sum|terms|
  (Higham's gamma_K bound; sqrt(K) is typical). TF32 rounds both operands of each product to a
  10-bit mantissa first: 2 * 2^-11 * sum|terms| more, not scaled by K. For multilinear ops the engine evaluates
  sum|terms| elementwise as the reference on absolute values; for the others it uses |ref|
  plus the largest |ref| of the tensor (a normwise bound: rounding in a shared intermediate,
  such as a softmax's normaliser or a stored low-precision intermediate, moves every element of a
  row by a few units of that row's largest value).
- Gradients follow the same rules with ``GRAD_FACTOR`` = 2: a backward composes at least two
  rounded steps (the incoming grad_output is already rounded to the dtype, then the local
  derivative is applied and the result rounded again).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "GRAD_FACTOR",
    "ROUNDING_UNITS",
    "TABLE",
    "DtypeTolerance",
    "Tolerance",
    "assert_close",
    "table_row",
    "tolerance",
]

#: Units of output roundoff allowed relative to |ref| (one rounding on store and one inside).
ROUNDING_UNITS = 4.0
#: Multiplier for gradients: one more rounded step than the forward.
GRAD_FACTOR = 2.0


@dataclass(frozen=True)
class DtypeTolerance:
    """Unit roundoff of the output dtype and of the precision kernels accumulate in."""

    dtype: torch.dtype
    u_out: float  # unit roundoff of the stored result: 2^-p for p mantissa bits
    u_acc: float  # unit roundoff of the accumulation (fp16/bf16 kernels accumulate in fp32)
    u_mul: float  # operand rounding before a product (TF32 rounds both operands to 10 bits)
    note: str


#: fp64 2^-53, fp32 2^-24, fp16 2^-11, bf16 2^-8; TF32 multiplies with a 10-bit mantissa (2^-11).
TABLE: dict[str, DtypeTolerance] = {
    "float64": DtypeTolerance(torch.float64, 2.0**-53, 2.0**-53, 0.0, "fp64 store, fp64 accumulate"),
    "float32": DtypeTolerance(torch.float32, 2.0**-24, 2.0**-24, 0.0, "fp32 store, fp32 accumulate"),
    "float16": DtypeTolerance(torch.float16, 2.0**-11, 2.0**-24, 0.0, "fp16 store, fp32 accumulate"),
    "bfloat16": DtypeTolerance(torch.bfloat16, 2.0**-8, 2.0**-24, 0.0, "bf16 store, fp32 accumulate"),
    "tf32": DtypeTolerance(torch.float32, 2.0**-24, 2.0**-24, 2.0**-11, "fp32 store, TF32 operands, fp32 accumulate"),
}


def table_row(dtype: torch.dtype, *, tf32: bool = False) -> tuple[str, DtypeTolerance]:
    """The table row for results of ``dtype``; ``tf32`` when an fp32 matmul ran on TF32 cores."""
    if dtype == torch.float32 and tf32:
        return "tf32", TABLE["tf32"]
    key = str(dtype).removeprefix("torch.")
    if key not in TABLE:
        raise KeyError(f"no tolerance for dtype {dtype}; known: {', '.join(TABLE)}")
    return key, TABLE[key]


@dataclass(frozen=True)
class Tolerance:
    """Elementwise bound ``|impl - ref| <= rel * |ref| + acc * magnitude + floor * scale``."""

    row: str
    rel: float  # coefficient of |ref|
    acc: float  # coefficient of the accumulated magnitude (K * u_acc)
    floor: float  # coefficient of the tensor's largest |ref| (normwise term)
    depth: int
    stored: float = 0.0  # coefficient of the magnitude for intermediates stored at the output dtype
    sens: float = 0.0  # coefficient of the reference's sensitivity to relative input perturbations

    def bound(self, ref: np.ndarray, magnitude: np.ndarray | None, sensitivity: Any = None) -> np.ndarray:
        """The bound per element; ``sensitivity`` (a :class:`gradcheck.sensitivity.Sensitivity`)
        adds ``sens`` times its scale and the float64 reference's own noise."""
        aref = np.abs(np.nan_to_num(ref, nan=0.0, posinf=0.0, neginf=0.0))
        mag = aref if magnitude is None else np.abs(np.nan_to_num(magnitude, nan=0.0, posinf=0.0, neginf=0.0))
        scale = float(aref.max()) if aref.size else 0.0
        floor = self.floor * scale if magnitude is None else 0.0
        # the smallest positive normal of the row's dtype: results below it are flushed or subnormal
        tiny = float(torch.finfo(TABLE[self.row].dtype).tiny)
        bound = self.rel * aref + (self.acc + self.stored) * mag + floor + tiny
        if sensitivity is not None and self.sens:
            # normwise over the tensor, like the floor term: the scale is a max over a few random
            # probes, which a structural zero can dodge at one element by chance (softmax's
            # backward with a grad_output constant along the dim, probed with equal signs)
            scale = np.asarray(sensitivity.scale, dtype=np.float64)
            widest = float(np.max(scale)) if scale.size else 0.0
            bound = bound + self.sens * widest + sensitivity.noise
        return bound

    def describe(self) -> str:
        u = TABLE[self.row]
        return (
            f"{self.row} row (u_out={u.u_out:.2g}, u_acc={u.u_acc:.2g}, u_mul={u.u_mul:.2g}): "
            f"|err| <= {self.rel:.3g}*|ref| + {self.acc:.3g}*sum|terms| (K={self.depth})"
            + (f" + {self.floor:.3g}*max|ref|" if self.floor else "")
            + (f" + {self.sens:.3g}*sensitivity (cancellation)" if self.sens else "")
        )


def tolerance(
    dtype: torch.dtype,
    *,
    depth: int = 1,
    ulps: float = 0.0,
    grad: bool = False,
    tf32: bool = False,
    stored_terms: bool = False,
    cancellation: bool = False,
) -> Tolerance:
    """Tolerance for a result of ``dtype`` from an accumulation of length ``depth``.

    ``stored_terms``: the op's terms pass through values stored at the output dtype (a softmax
    backward reads the fp16 output it saved), so each term carries ``ROUNDING_UNITS`` units of
    ``u_out`` too, not only the accumulation's ``u_acc``."""
    row, u = table_row(dtype, tf32=tf32)
    k = max(int(depth), 1)
    factor = GRAD_FACTOR if grad else 1.0
    rel = factor * (ROUNDING_UNITS * u.u_out + ulps * u.u_acc)
    # each product carries both operands' rounding (2 u_mul), the sum K roundings at u_acc
    acc = factor * ((k + 1) * u.u_acc + 2 * u.u_mul)
    floor = factor * (ROUNDING_UNITS * u.u_out + (k + 1) * u.u_acc + 2 * u.u_mul)
    stored = factor * ROUNDING_UNITS * u.u_out if stored_terms else 0.0
    return Tolerance(
        row=row, rel=rel, acc=acc, floor=floor, depth=k, stored=stored, sens=floor if cancellation else 0.0
    )


def assert_close(
    actual: torch.Tensor,
    expected: torch.Tensor | np.ndarray,
    *,
    depth: int = 1,
    ulps: float = 0.0,
    grad: bool = False,
    tf32: bool = False,
    magnitude: torch.Tensor | np.ndarray | None = None,
    expected_rounded: bool = False,
    msg: str = "",
) -> None:
    """Assert ``actual`` (a result at its dtype) is within this table's bound of ``expected``.

    ``expected`` is exact (float64 on the same inputs) unless ``expected_rounded``: then it is
    another implementation's result at the same dtype (torch's), which carries the same rounding,
    and the bound doubles. ``magnitude`` is sum|terms| per element, when the caller has it (else
    the normwise bound of ``Tolerance.bound``). NaN must match NaN and inf the same inf; the
    shapes must agree. Raises AssertionError naming the worst element, its error and the bound."""
    if not isinstance(actual, torch.Tensor):
        raise TypeError(f"actual must be a torch.Tensor, got {type(actual).__name__}")
    tol = tolerance(actual.dtype, depth=depth, ulps=ulps, grad=grad, tf32=tf32)
    got = actual.detach().to("cpu", torch.float64).numpy()
    want = expected.detach().to("cpu", torch.float64).numpy() if isinstance(expected, torch.Tensor) else expected
    want = np.asarray(want, dtype=np.float64)
    head = f"{msg}: " if msg else ""
    if got.shape != want.shape:
        raise AssertionError(f"{head}shape {tuple(got.shape)} != expected {tuple(want.shape)}")
    nan_got, nan_want = np.isnan(got), np.isnan(want)
    if (nan_got != nan_want).any():
        idx = tuple(int(i) for i in np.argwhere(nan_got != nan_want)[0])
        raise AssertionError(f"{head}NaN mismatch at {idx}: got {got[idx]!r}, expected {want[idx]!r}")
    inf_got, inf_want = np.isinf(got), np.isinf(want)
    if (inf_got != inf_want).any() or (got[inf_got] != want[inf_want]).any():
        idx = tuple(int(i) for i in np.argwhere((inf_got | inf_want) & (got != want))[0])
        raise AssertionError(f"{head}inf mismatch at {idx}: got {got[idx]!r}, expected {want[idx]!r}")
    finite = np.isfinite(want)
    if magnitude is not None:
        mag = magnitude.detach().to("cpu", torch.float64).numpy() if isinstance(magnitude, torch.Tensor) else magnitude
        mag = np.broadcast_to(np.asarray(mag, dtype=np.float64), want.shape)
    else:
        mag = None
    bound = tol.bound(np.where(finite, want, 0.0), mag) * (2.0 if expected_rounded else 1.0)
    err = np.where(finite, np.abs(got - np.where(finite, want, 0.0)), 0.0)
    if (err > bound).any():
        ratio = np.where(finite, err / bound, 0.0)
        idx = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        idx = tuple(int(i) for i in idx)
        raise AssertionError(
            f"{head}{int((err > bound).sum())} element(s) out of tolerance; worst at {idx}: got {got[idx]!r}, "
            f"expected {want[idx]!r}, |err|={err[idx]:.3g} > tol={bound[idx]:.3g}\n  tolerance: {tol.describe()}"
        )
