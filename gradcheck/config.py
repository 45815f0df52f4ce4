"""What one verification checks, at one dtype: :class:`Config`, built by ``verify`` and ``check_gradients``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from gradcheck.compare import as_tuple, dtype_name, to_numpy
from gradcheck.oracle import Reference
from gradcheck.tolerances import Tolerance, tolerance

__all__ = ["Config", "RunState", "auto_depth"]


def auto_depth(arrays: list[Any]) -> int:
    """K when the caller declares none: the longest dimension of any float argument, an upper bound
    on the length of any sum a row-, column- or window-wise op takes over one argument (softmax
    and norms over a row, a sum over a dim, attention over T and D, a matmul over its inner
    dimension). A reduction over several dims at once is longer: declare ``depth`` for it."""
    floats = [a for a in arrays if isinstance(a, np.ndarray) and np.issubdtype(a.dtype, np.floating)]
    longest = max((max(a.shape, default=1) for a in floats), default=1)
    return max(int(longest), 1)


@dataclass
class RunState:
    """What one Hypothesis run of a :class:`Config` has done so far (the budget's clock, the example
    count at which the first failure was found, draws not run, the latest failure per identity)."""

    started: float | None = None  # perf_counter at the first example
    examples: int = 0  # examples run (shrinking included)
    sizes: int = 0  # float elements drawn over those examples
    first_seen: dict[type, int] = field(default_factory=dict)  # identity -> example at which it was found
    found_at: int | None = None  # the example at which the first failure was found
    failed_at: float | None = None  # perf_counter when it was
    first: type | None = None  # the first failure's class (its identity)
    latest: dict[type, Any] = field(default_factory=dict)  # identity -> the latest (smallest) failure
    not_run: dict[str, int] = field(default_factory=dict)  # why -> draws not run
    budget_spent: bool = False  # generation stopped at the budget
    first_done: float | None = None  # perf_counter when the first example (with its warm-up) ended
    first_size: int = 0  # its float elements
    #: float elements of a draw -> whether the budget gate lets such a draw run: decided once per
    #: size, so that a draw Hypothesis replays meets the same verdict (a run that stops drawing where
    #: an earlier run of the same choices went on contradicts Hypothesis' data tree)
    admitted: dict[int, bool] = field(default_factory=dict)
    stopped: bool = False  # a budget (generation or shrinking) stopped the run


@dataclass(frozen=True, kw_only=True)
class Config:
    """The implementation, its references and how to judge it, at one dtype (see ``verify``)."""

    fn: Callable[..., Any]  # the implementation under test
    name: str  # the op's name in reports
    dtype: torch.dtype  # the dtype its float inputs are cast to
    device: torch.device  # where its inputs are placed
    ref: Reference | None = None  # the float64 reference: NumPy forward (and VJP), or a torch oracle
    depth: Callable[..., int] | int | None = None  # K, the longest sum (or a function of the arrays); None: auto
    multilinear: bool = False  # the op on absolute values gives the sum of |terms|
    ulps: float = 0.0  # extra units of roundoff (transcendental functions)
    kinks: Callable[..., float] | None = None  # distance to the nearest non-differentiable point
    backward: bool = True  # check the backward at all
    deterministic: bool = True  # the rerun must match bit for bit (else within the gradient tolerance)
    tf32: bool = False  # fp32 matmuls on TF32 cores: the tf32 row of the table
    jacobian: str = "auto"  # full Jacobian: "auto" (small inputs), "off" or "always"
    f64_impl: bool = False  # finite differences of the implementation itself at float64
    terms: Callable[..., Any] | None = None  # sum of |terms| of the forward, per output element
    vjp_terms: Callable[..., Any] | None = None  # sum of |terms| of the VJP, per input element
    cancellation: bool = True  # bound what a correct kernel may cancel by the reference's sensitivity
    opcheck: str = "off"  # torch.library.opcheck on the custom ops fn calls: "auto" (when it calls one) or "off"
    opcheck_examples: int | None = None  # opcheck only the first N examples of each custom op (None: all)
    layouts: dict[int, tuple[str, ...]] = field(default_factory=dict)  # arg position -> layout kinds drawn
    supports: Callable[..., bool] | None = None  # drawn args -> whether fn supports them (else not run)
    optional_grads: frozenset[int] = frozenset()  # gradients checked when given, never demanded
    held_out: frozenset[str] = frozenset()  # checks whose defect is reported already: skipped
    baseline: Callable[..., Any] | None = None  # a second implementation at the same dtype: the measuring stick
    baseline_factor: float = 2.0  # fn's error may be this many times the baseline's, plus the bound
    budget: float | None = None  # seconds of examples before generation stops (None: max_examples decides)
    shrink_budget: float | None = None  # seconds of shrinking after the first failure
    example_log: Any = None  # isolate=True: a gradcheck.isolation.ExampleLog each example is recorded in first
    state: RunState = field(default_factory=lambda: RunState(), compare=False, repr=False)
    # the budget's state, per custom op: examples opcheck'ed so far, and the ops that failed (those
    # are always opcheck'ed from then on, so that Hypothesis' shrinking and replay see the failure)
    opcheck_runs: dict[str, int] = field(default_factory=dict, compare=False, repr=False)
    opcheck_failed: set[str] = field(default_factory=set, compare=False, repr=False)

    @property
    def reference(self) -> Callable[..., tuple] | None:
        """The float64 forward: ``(*arrays) -> tuple of arrays``."""
        return self.ref.forward if self.ref is not None else None

    @property
    def reference_vjp(self) -> Callable[..., tuple] | None:
        """The float64 VJP ``(*arrays, *grad_outputs) -> one entry per argument``, where there is one
        (a NumPy VJP given, or a torch oracle's autograd)."""
        return self.ref.vjp if self.ref is not None and self.ref.vjp_known else None

    @property
    def dname(self) -> str:
        """The dtype as reports name it (``float32/tf32`` on the TF32 row)."""
        return dtype_name(self.dtype) + ("/tf32" if self.tf32 else "")

    def depth_of(self, arrays: list[Any]) -> int:
        if self.depth is None:
            return auto_depth(arrays)
        return int(self.depth(*arrays)) if callable(self.depth) else int(self.depth)

    def tolerance(self, arrays: list[Any], *, grad: bool) -> Tolerance:
        """The forward (``grad=False``) or gradient tolerance for an example's arguments."""
        return tolerance(
            self.dtype,
            depth=self.depth_of(arrays),
            ulps=self.ulps,
            grad=grad,
            tf32=self.tf32,
            stored_terms=(self.vjp_terms if grad else self.terms) is not None,
            cancellation=self.uses_sensitivity(grad=grad),
        )

    def uses_sensitivity(self, *, grad: bool) -> bool:
        """The cancellation term applies unless an expert bound replaces it: ``terms`` (forward) or
        ``vjp_terms`` (backward), or a multilinear op's sum of |terms|."""
        if not self.cancellation or self.multilinear:
            return False
        return (self.vjp_terms if grad else self.terms) is None

    def reference_forward(self, arrays: list[Any]) -> list[np.ndarray]:
        return [np.asarray(o) for o in as_tuple(self.reference(*arrays))]

    def forward64(self, arrays: list[Any]) -> list[np.ndarray]:
        """The float64 forward used for finite differences: the implementation itself when it
        runs at float64 (so its own float64 path is what FD sees), else the reference."""
        if not self.f64_impl:
            return self.reference_forward(arrays)
        call = [
            torch.from_numpy(np.ascontiguousarray(a)).to(self.device) if isinstance(a, np.ndarray) else a
            for a in arrays
        ]
        with torch.no_grad():
            outs = as_tuple(self.fn(*call))
        return [to_numpy(o) for o in outs]
