"""Verification results: :class:`Report` for a pass, :class:`VerificationError` for a failure."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

__all__ = ["CHECKS", "FAMILIES", "CheckStat", "Report", "VerificationError", "failure_class"]

#: Every check the engine runs, with what it compares.
CHECKS: dict[str, str] = {
    "forward": "forward vs the NumPy float64 reference",
    "backward": "backward vs the reference VJP",
    "backward_fd": "backward vs finite differences of a float64 forward along a random direction",
    "jacobian": "full Jacobian vs finite differences (small inputs)",
    "reference_fd": "reference VJP vs finite differences of the reference forward (float64)",
    "outputs": "outputs and gradients have the expected count, dtype, shape and device",
    "guards": "inputs and grad_outputs unchanged, guard bands intact",
    "zero_grad": "grad_output = 0 gives exactly zero gradients",
    "nondiff": "non-differentiable inputs get no gradient",
    "rerun": "a rerun on fresh copies at new addresses, with different poison, gives the same result",
    "raises": "the implementation runs without raising on a valid input",
    "opcheck": "torch.library.opcheck's tests on each custom op the implementation calls, with the arguments it "
    "called it with",
    "crash": "the implementation does not kill the process (segfault, abort, heap corruption, a poisoned CUDA "
    "context); run in a child process (isolate=True)",
}

#: Checks that judge the same numbers: once one of them has found a defect, verification goes on
#: with the whole family held out (a wrong backward fails 'backward', 'backward_fd' and 'jacobian'
#: alike; that is one defect, not three).
FAMILIES: dict[str, frozenset[str]] = {
    "backward": frozenset({"backward", "backward_fd", "jacobian", "zero_grad"}),
    "backward_fd": frozenset({"backward", "backward_fd", "jacobian", "zero_grad"}),
    "jacobian": frozenset({"backward", "backward_fd", "jacobian", "zero_grad"}),
    "guards": frozenset({"guards", "rerun"}),
    "rerun": frozenset({"guards", "rerun"}),
}

_IDENTITIES: dict[tuple[str, str], type] = {}


def failure_class(check: str, subject: str = "") -> type[VerificationError]:
    """The exception class of a failure of ``check`` on ``subject`` (an argument or output): one
    class per (check, subject), so that Hypothesis, which tells failures apart by their type and
    origin, shrinks each distinct defect on its own and never drifts from one to another."""
    key = (check, subject)
    if key not in _IDENTITIES:
        tag = "_".join(part for part in (check, subject) if part)
        _IDENTITIES[key] = type(f"VerificationError_{tag}", (VerificationError,), {"__module__": __name__})
    return _IDENTITIES[key]


class VerificationError(AssertionError):
    """A check failed. The message names the op, dtype, check, shapes and strides, the worst
    element with both values, the error and the tolerance, and how to replay."""

    def __init__(self, message: str, *, op: str = "", dtype: str = "", check: str = "", details: dict | None = None):
        super().__init__(message)
        self.op = op
        self.dtype = dtype
        self.check = check
        self.details = details or {}
        self.report: Report | None = None  # set by verify: the whole run, every dtype's statistics and failures
        self.found_at: int | None = None  # the example (1-based, this dtype) at which it was first found
        self.findings: list[VerificationError] = []  # verify: every distinct defect, this one first

    def __reduce__(self):  # picklable across processes (isolate=True), whatever the identity subclass
        return _rebuild, (str(self), self.op, self.dtype, self.check, self.details, self.found_at)


def _rebuild(message: str, op: str, dtype: str, check: str, details: dict, found_at: int | None) -> VerificationError:
    e = VerificationError(message, op=op, dtype=dtype, check=check, details=details)
    e.found_at = found_at
    return e


@dataclass
class CheckStat:
    """One (dtype, check) cell: examples run, worst error relative to its tolerance, time."""

    dtype: str
    check: str
    examples: int = 0
    skipped: int = 0
    worst_ratio: float = 0.0  # max over elements and examples of |err| / tol (pass: <= 1)
    worst_error: float = 0.0
    worst_tolerance: float = 0.0
    seconds: float = 0.0
    baseline_error: float = float("nan")  # with a baseline: its worst error against the reference (same dtype)

    def record(self, ratio: float, error: float, tol: float) -> None:
        if ratio > self.worst_ratio or self.examples == 0:
            self.worst_ratio, self.worst_error, self.worst_tolerance = ratio, error, tol


@dataclass
class Report:
    """The result of a verification that passed (a failure raises instead)."""

    name: str
    stats: list[CheckStat] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: per dtype: examples run before the first failure or the end, the example at which each
    #: failure was first found, draws not run (unsupported, held out, over the time budget)
    runs: dict[str, dict] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failures

    def stat(self, dtype: str, check: str) -> CheckStat:
        for s in self.stats:
            if s.dtype == dtype and s.check == check:
                return s
        s = CheckStat(dtype, check)
        self.stats.append(s)
        return s

    def examples(self, dtype: str | None = None) -> int:
        return max((s.examples for s in self.stats if s.check == "forward" and dtype in (None, s.dtype)), default=0)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "passed": self.passed,
            "seconds": self.seconds,
            "failures": self.failures,
            "runs": self.runs,
            "stats": [asdict(s) for s in self.stats],
        }

    def to_json(self) -> str:
        return json.dumps(
            self.to_dict(), indent=2, default=lambda x: None if isinstance(x, float) and math.isnan(x) else str(x)
        )

    def __str__(self) -> str:
        lines = [f"{self.name}: {'passed' if self.passed else 'FAILED'} in {self.seconds:.1f}s"]
        for s in self.stats:
            skip = f", {s.skipped} skipped" if s.skipped else ""
            base = "" if math.isnan(s.baseline_error) else f"  baseline's worst {s.baseline_error:.3g}"
            lines.append(
                f"  {s.dtype:<9} {s.check:<13} {s.examples:>5} examples{skip}  worst {s.worst_error:.3g} "
                f"/ tol {s.worst_tolerance:.3g} ({s.worst_ratio:.3f}){base}  {s.seconds:.2f}s"
            )
        for dtype, run in self.runs.items():
            notes = [f"{run.get('examples', 0)} examples in {run.get('seconds', 0.0):.1f}s"]
            notes += [f"{n} draws {why}" for why, n in run.get("not_run", {}).items() if n]
            if run.get("budget_spent"):
                notes.append(f"stopped at the time budget ({run['budget']:.0f}s)")
            notes += [f"{f['check']} failed, first at example {f['found_at']}" for f in run.get("findings", [])]
            lines.append(f"  {dtype:<9} " + "; ".join(notes))
        lines.extend(f"  failure: {f.splitlines()[0]}" for f in self.failures)
        return "\n".join(lines)
