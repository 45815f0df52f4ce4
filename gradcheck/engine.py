"""The verification engine: :func:`verify` (property-based, every check) and :func:`check_gradients`.

One example runs the implementation on inputs laid out in poisoned buffers, compares forward and
backward with the NumPy float64 reference, ties the backward to finite differences of a float64
forward along a signed random direction (full Jacobian for small inputs), checks the reference
VJP against its own forward, then side checks: guard bands, unchanged inputs, output metadata,
zero grad_output, and a rerun on fresh copies with a different poison.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import numpy as np
import torch
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from hypothesis.errors import FlakyFailure

from gradcheck import layouts as lay
from gradcheck.report import CHECKS, Report, VerificationError
from gradcheck.tolerances import TABLE, Tolerance, tolerance

__all__ = ["check_gradients", "verify"]

EPS64 = 2.0**-53
#: Relative finite-difference step: Richardson-extrapolated central differences have error
#: O(h^4) + O(eps/h), smallest near h = eps^(1/5) ~ 6e-4; 1e-3 of the input scale sits there.
FD_STEP = 1e-3
#: Examples whose inputs lie closer than this (relative to their scale) to a kink skip the FD checks.
KINK_FLOOR = 1e-6
#: Full-Jacobian mode when both the differentiable inputs and the outputs have at most this many elements.
JACOBIAN_MAX = 16
#: Small tensors are printed whole in a failure report.
PRINT_MAX = 32


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _default_device() -> torch.device:
    from kernels import _runtime

    return _runtime.device()


@contextlib.contextmanager
def _poisoned(fill: float) -> Iterator[None]:
    """Every allocation the implementation makes is poisoned while the block runs: torch.empty*
    through deterministic mode (NaN), our kernels' allocator with ``fill``. The caller's settings
    come back afterwards."""
    from kernels import _runtime

    det = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    fill_mem = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        with warnings.catch_warnings(), _runtime.allocation_fill(fill):
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        torch.use_deterministic_algorithms(det, warn_only=warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = fill_mem


def _as_tuple(x: Any) -> tuple:
    return tuple(x) if isinstance(x, tuple | list) else (x,)


def _np(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    if t.is_floating_point():
        return t.to(torch.float64).numpy()
    return t.numpy()


def _short(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _fmt_index(idx: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(i) for i in idx) + "]" if idx else "[]"


@dataclass
class _Arg:
    """One positional argument: a float tensor (cast), an integer tensor, or a plain value."""

    kind: str  # float | int | value
    value: Any  # as drawn
    seen: torch.Tensor | None = None  # float: cast to the dtype and back to float64 (CPU); int: as is
    array: Any = None  # what the reference receives


def _prepare(args: tuple, dtype: torch.dtype) -> list[_Arg]:
    out = []
    for a in args:
        if isinstance(a, torch.Tensor) and a.is_floating_point():
            seen = a.detach().to(dtype).to(torch.float64).cpu()
            if 0 in a.stride():  # keep the broadcast structure (values constant along stride-0 dims)
                seen = seen.expand(a.shape) if seen.stride() == a.stride() else seen
            out.append(_Arg("float", a, seen, seen.numpy().copy()))
        elif isinstance(a, torch.Tensor):
            out.append(_Arg("int", a, a.detach().cpu(), a.detach().cpu().numpy().copy()))
        else:
            out.append(_Arg("value", a, None, a))
    return out


def _expanded_like(seen: torch.Tensor, drawn: torch.Tensor) -> torch.Tensor:
    """``seen`` with the stride-0 dims of ``drawn`` (so the layout keeps them expanded)."""
    if 0 not in drawn.stride() or seen.numel() == 0:
        return seen
    index = tuple(
        slice(0, 1) if (st_ == 0 and s > 1) else slice(None) for s, st_ in zip(drawn.shape, drawn.stride(), strict=True)
    )
    return seen[index].expand(drawn.shape)


# ---------------------------------------------------------------------------------------------
# comparison
# ---------------------------------------------------------------------------------------------


@dataclass
class _Cmp:
    ratio: float  # worst |err| / tol, inf for a NaN/inf mismatch
    index: tuple[int, ...] = ()
    actual: float = 0.0
    expected: float = 0.0
    error: float = 0.0
    tol: float = 0.0
    n_bad: int = 0
    reason: str = ""


def _compare(
    actual: np.ndarray, expected: np.ndarray, tol: Tolerance, dtype: torch.dtype, magnitude: np.ndarray | None
) -> _Cmp:
    """Elementwise |actual - expected| against ``tol``; NaN matches only NaN, inf only the same inf,
    and a reference beyond the dtype's range expects the overflow (inf) the dtype gives."""
    expected = np.asarray(expected, dtype=np.float64)
    if expected.size == 0:
        return _Cmp(0.0)
    big = float(torch.finfo(dtype).max)
    u = TABLE[tol.row].u_out
    exp = expected.copy()
    overflow = np.isfinite(exp) & (np.abs(exp) > big * (1 + u))
    exp[overflow] = np.sign(exp[overflow]) * np.inf
    edge = np.isfinite(exp) & (np.abs(exp) > big * (1 - 4 * u))  # may round either way
    a_nan, e_nan = np.isnan(actual), np.isnan(exp)
    a_inf, e_inf = np.isinf(actual), np.isinf(exp)
    special = (a_nan != e_nan) | ((e_inf | a_inf) & ~edge & (actual != exp) & ~(a_nan & e_nan))
    special |= edge & np.isinf(actual) & (np.sign(actual) != np.sign(exp))
    if special.any():
        idx = tuple(int(i) for i in np.argwhere(special)[0])
        return _Cmp(
            np.inf,
            idx,
            float(actual[idx]),
            float(exp[idx]),
            np.inf,
            0.0,
            int(special.sum()),
            "NaN/inf mismatch"
            + (
                " (NaN where the reference is finite: an output element never written, or a read outside an input)"
                if np.isnan(actual[idx])
                else ""
            ),
        )
    finite = np.isfinite(exp) & np.isfinite(actual)
    bound = tol.bound(np.where(finite, exp, 0.0), None if magnitude is None else np.where(finite, magnitude, 0.0))
    err = np.where(finite, np.abs(actual - np.where(finite, exp, 0.0)), 0.0)
    ratio = err / bound
    flat = int(np.argmax(ratio))
    idx = tuple(int(i) for i in np.unravel_index(flat, ratio.shape)) if ratio.ndim else ()
    return _Cmp(
        float(ratio[idx]),
        idx,
        float(actual[idx]),
        float(exp[idx]),
        float(err[idx]),
        float(bound[idx]),
        int((ratio > 1).sum()),
    )


# ---------------------------------------------------------------------------------------------
# the verification problem
# ---------------------------------------------------------------------------------------------


@dataclass
class _Problem:
    fn: Callable
    reference: Callable | None
    reference_vjp: Callable | None
    name: str
    dtype: torch.dtype
    device: torch.device
    depth: Callable | int
    multilinear: bool
    ulps: float
    kinks: Callable | None
    backward: bool
    deterministic: bool
    tf32: bool
    jacobian: str
    report: Report
    f64_impl: bool  # finite differences of the implementation itself at float64
    terms: Callable | None = None  # sum of |terms| of the forward, per output element
    vjp_terms: Callable | None = None  # sum of |terms| of the VJP, per input element
    notes: list[str] = field(default_factory=list)

    # -- small utilities ------------------------------------------------------------------------

    @property
    def dname(self) -> str:
        return _short(self.dtype) + ("/tf32" if self.tf32 else "")

    def fail(self, check: str, lines: Sequence[str], **details: Any) -> None:
        head = f"{self.name} [{self.dname}]: check '{check}' failed ({CHECKS[check]})"
        body = "\n".join("  " + ln for ln in lines if ln)
        if hypothesis.settings().database is not None:
            replay = (
                "  replay: Hypothesis stores this example in its database (.hypothesis/) and replays it first when the"
                " same call runs again; the @reproduce_failure line printed with it pins it exactly."
            )
        else:
            replay = "  replay: decorate a test with the @reproduce_failure line printed with this report to rerun it."
        raise VerificationError(
            f"{head}\n{body}\n{self.context}\n{replay}", op=self.name, dtype=self.dname, check=check, details=details
        )

    def timed(self, check: str):
        problem = self

        class _T:
            def __enter__(self):
                self.t = time.perf_counter()

            def __exit__(self, *exc):
                problem.report.stat(problem.dname, check).seconds += time.perf_counter() - self.t

        return _T()

    def k(self, arrays: Sequence[Any]) -> int:
        return int(self.depth(*arrays)) if callable(self.depth) else int(self.depth)

    def tol(self, arrays: Sequence[Any], grad: bool, dtype: torch.dtype | None = None) -> Tolerance:
        return tolerance(
            dtype or self.dtype,
            depth=self.k(arrays),
            ulps=self.ulps,
            grad=grad,
            tf32=self.tf32,
            stored_terms=(self.vjp_terms if grad else self.terms) is not None,
        )

    def record(self, check: str, cmp: _Cmp | None = None, *, skipped: bool = False) -> None:
        s = self.report.stat(self.dname, check)
        if skipped:
            s.skipped += 1
            return
        if cmp is not None:
            s.record(cmp.ratio, cmp.error, cmp.tol)
        s.examples += 1

    # -- calling the implementation -------------------------------------------------------------

    def call(self, args: Sequence[Any], fill: float) -> tuple:
        try:
            with _poisoned(fill):
                return _as_tuple(self.fn(*args))
        except VerificationError:
            raise
        except Exception as e:  # a crash on a valid input is a failure to report, not an engine error
            self.fail("raises", [f"the implementation raised {type(e).__name__}: {e}"])
            raise  # unreachable

    def grads(
        self, outs: Sequence[torch.Tensor], wrt: Sequence[torch.Tensor], gs: Sequence[torch.Tensor], fill: float
    ) -> tuple:
        try:
            with _poisoned(fill):
                return torch.autograd.grad(list(outs), list(wrt), list(gs), retain_graph=True, allow_unused=True)
        except VerificationError:
            raise
        except Exception as e:
            self.fail("raises", [f"the backward raised {type(e).__name__}: {e}"])
            raise

    def f64(self, arrays: list[Any]) -> list[np.ndarray]:
        """The float64 forward used for finite differences: the implementation itself when it
        runs at float64 (so its own float64 path is what FD sees), else the reference."""
        if self.f64_impl:
            call = []
            for a in arrays:
                if isinstance(a, np.ndarray):
                    call.append(torch.from_numpy(np.ascontiguousarray(a)).to(self.device))
                else:
                    call.append(a)
            with torch.no_grad():
                outs = _as_tuple(self.fn(*call))
            return [_np(o) for o in outs]
        return [np.asarray(o) for o in _as_tuple(self.reference(*arrays))]

    # -- one example ----------------------------------------------------------------------------

    def run(self, drawn: tuple, data: st.DataObject) -> None:
        if not isinstance(drawn, tuple):
            drawn = (drawn,)
        args = _prepare(drawn, self.dtype)
        arrays = [a.array for a in args]
        self.context = ""
        self.grad_mags = None

        # reference forward and VJP first: NumPy, away from the implementation's allocator
        ref_out = [np.asarray(o) for o in _as_tuple(self.reference(*arrays))] if self.reference else None

        tensor_pos = [i for i, a in enumerate(args) if a.kind != "value"]
        layouts_ = {i: data.draw(lay.layouts(args[i].seen.dim()), label=f"layout of arg{i}") for i in tensor_pos}

        # ---- pass 1: NaN poison --------------------------------------------------------------
        placed = self.place_args(args, layouts_, diff=None, sentinel=False)
        self.context = self.describe(args, placed)
        with self.timed("forward"):
            outs = self.call([p.tensor if isinstance(p, lay.Placed) else p for p in placed], float("nan"))
        if ref_out is None:
            ref_out = self.f64(arrays)  # no reference: the implementation at float64 stands in
        float_outs = self.check_outputs(outs, ref_out)
        self.check_forward(outs, ref_out, arrays, float_outs)
        self.check_guards(args, placed, "forward")

        diff: list[int] = []
        g_seen: dict[int, torch.Tensor] = {}
        ref_grads = None
        if self.backward and float_outs:
            for j in float_outs:
                g_seen[j] = self.draw_grad_output(data, ref_out[j].shape, j)
            g_arrays = [g_seen[j].numpy() if j in g_seen else None for j in range(len(ref_out))]
            if self.reference_vjp is not None:
                ref_grads = _as_tuple(self.reference_vjp(*arrays, *g_arrays))
                if len(ref_grads) != len(args):
                    raise TypeError(f"reference_vjp returned {len(ref_grads)} entries for {len(args)} arguments")
            diff = [
                i for i, a in enumerate(args) if a.kind == "float" and (ref_grads is None or ref_grads[i] is not None)
            ]
        if not diff:
            self.rerun(args, layouts_, outs, None, [], float_outs, {}, {})
            return

        # pass 1 again, now with the differentiable inputs requiring grad
        placed = self.place_args(args, layouts_, diff=diff, sentinel=False)
        with self.timed("backward"):
            outs = self.call([p.tensor if isinstance(p, lay.Placed) else p for p in placed], float("nan"))
        g_layouts = {j: data.draw(lay.layouts(g_seen[j].dim()), label=f"layout of grad_output{j}") for j in float_outs}
        g_placed = {
            j: lay.place(g_seen[j], dtype=self.dtype, device=self.device, layout=g_layouts[j]) for j in float_outs
        }
        self.context = self.describe(args, placed, g_placed)
        with self.timed("backward"):
            grads = self.grads(
                [outs[j] for j in float_outs],
                [placed[i].tensor for i in diff],
                [g_placed[j].tensor for j in float_outs],
                float("nan"),
            )
        if ref_grads is None:  # no reference VJP: finite differences alone judge the backward
            ref_grads = [None] * len(args)
        self.check_grad_meta(args, diff, grads, ref_grads)
        self.check_backward(args, arrays, diff, grads, ref_grads, g_seen, float_outs)
        self.check_guards(args, placed, "backward", g_placed)
        self.check_zero_grad(outs, placed, diff, float_outs)

        # ---- finite differences --------------------------------------------------------------
        self.check_fd(args, arrays, diff, grads, ref_grads, g_seen, float_outs, data, g_arrays)

        # ---- pass 2: sentinel poison, fresh buffers --------------------------------------------
        self.rerun(args, layouts_, outs, grads, diff, float_outs, g_seen, g_layouts)
        self.check_nondiff(args, layouts_, ref_grads, g_seen, g_layouts, float_outs)

    # -- pieces ---------------------------------------------------------------------------------

    def place_args(self, args: list[_Arg], layouts_: dict, diff: list[int] | None, sentinel: bool) -> list[Any]:
        placed: list[Any] = []
        for i, a in enumerate(args):
            if a.kind == "value":
                placed.append(a.value)
                continue
            values = _expanded_like(a.seen, a.value) if a.kind == "float" else a.seen
            placed.append(
                lay.place(
                    values,
                    dtype=self.dtype if a.kind == "float" else a.seen.dtype,
                    device=self.device,
                    layout=layouts_[i],
                    sentinel=sentinel,
                    requires_grad=bool(diff) and i in diff,
                )
            )
        return placed

    def describe(self, args: list[_Arg], placed: list[Any], g_placed: dict | None = None) -> str:
        lines = []
        for i, (a, p) in enumerate(zip(args, placed, strict=True)):
            if isinstance(p, lay.Placed):
                line = f"  arg{i}: {p.describe()}"
                if a.seen.numel() <= PRINT_MAX:
                    line += f" = {np.array2string(a.seen.numpy(), precision=6, separator=', ')}".replace("\n", " ")
                lines.append(line)
            else:
                lines.append(f"  arg{i}: {p!r}")
        for j, p in (g_placed or {}).items():
            lines.append(f"  grad_output{j}: {p.describe()}")
        return "\n".join(lines)

    def draw_grad_output(self, data: st.DataObject, shape: tuple[int, ...], j: int) -> torch.Tensor:
        """A signed random grad_output as the implementation sees it (cast), sometimes expanded."""
        seed = data.draw(st.integers(0, 2**32 - 1), label=f"grad_output{j} seed")
        rng = np.random.default_rng(seed)
        expand = [d for d, s in enumerate(shape) if s > 1]
        dim = (
            data.draw(st.sampled_from([None, None, None, *expand]), label=f"grad_output{j} stride-0 dim")
            if expand
            else None
        )
        small = list(shape)
        if dim is not None:
            small[dim] = 1
        g = torch.from_numpy(rng.standard_normal(small)).to(self.dtype).to(torch.float64)
        return g.expand(shape) if dim is not None else g

    def check_outputs(self, outs: tuple, ref_out: list[np.ndarray]) -> list[int]:
        with self.timed("outputs"):
            if len(outs) != len(ref_out):
                self.fail("outputs", [f"returned {len(outs)} output(s); the reference returns {len(ref_out)}"])
            float_outs = []
            for j, (o, r) in enumerate(zip(outs, ref_out, strict=True)):
                if not isinstance(o, torch.Tensor):
                    self.fail("outputs", [f"output {j} is a {type(o).__name__}, not a tensor"])
                want_dtype = self.dtype if np.issubdtype(r.dtype, np.floating) else torch.int64
                problems = []
                if tuple(o.shape) != tuple(r.shape):
                    problems.append(f"shape {tuple(o.shape)}, expected {tuple(r.shape)}")
                if o.dtype != want_dtype and not (want_dtype == torch.int64 and not o.is_floating_point()):
                    problems.append(f"dtype {_short(o.dtype)}, expected {_short(want_dtype)}")
                if o.device.type != self.device.type:
                    problems.append(f"device {o.device}, expected {self.device}")
                if problems:
                    self.fail("outputs", [f"output {j}: " + "; ".join(problems)])
                if o.is_floating_point():
                    float_outs.append(j)
            self.record("outputs")
        return float_outs

    def magnitude(self, arrays: list[Any], fn: Callable, extra: Sequence[Any] = ()) -> list[np.ndarray] | None:
        """Sum of |terms| per element for a multilinear op: the op on absolute values."""
        if not self.multilinear:
            return None
        absd = [np.abs(a) if isinstance(a, np.ndarray) and np.issubdtype(a.dtype, np.floating) else a for a in arrays]
        absx = [np.abs(x) if isinstance(x, np.ndarray) else x for x in extra]
        return list(_as_tuple(fn(*absd, *absx)))

    def check_forward(self, outs: tuple, ref_out: list[np.ndarray], arrays: list[Any], float_outs: list[int]) -> None:
        with self.timed("forward"):
            if self.terms is not None:
                mags = list(_as_tuple(self.terms(*arrays)))
            else:
                mags = self.magnitude(arrays, self.reference) if self.reference else None
            tol = self.tol(arrays, grad=False)
            worst = _Cmp(0.0)
            for j, (o, r) in enumerate(zip(outs, ref_out, strict=True)):
                if j not in float_outs:
                    a = _np(o)
                    if not np.array_equal(a, r):
                        idx = tuple(int(i) for i in np.argwhere(a != r)[0])
                        self.fail(
                            "forward",
                            [
                                f"integer output {j} differs at {_fmt_index(idx)}: impl {a[idx]} vs reference {r[idx]}"
                                f" ({int((a != r).sum())} of {a.size} differ)"
                            ],
                        )
                    continue
                c = _compare(_np(o), r, tol, self.dtype, None if mags is None else mags[j])
                if c.ratio > 1:
                    self.fail("forward", self.mismatch_lines(f"output {j}", c, tol))
                if c.ratio >= worst.ratio:
                    worst = c
            self.record("forward", worst)

    def mismatch_lines(self, what: str, c: _Cmp, tol: Tolerance) -> list[str]:
        lines = [f"worst element: {what}{_fmt_index(c.index)}: impl={c.actual!r} reference={c.expected!r}"]
        if c.reason:
            lines.append(f"{c.reason}; {c.n_bad} element(s) affected")
        else:
            lines.append(
                f"|err|={c.error:.4g} > tol={c.tol:.4g} (err/tol={c.ratio:.3g}; {c.n_bad} element(s) over tolerance)"
            )
        lines.append(f"tolerance: {tol.describe()}")
        return lines

    def check_grad_meta(self, args: list[_Arg], diff: list[int], grads: tuple, ref_grads: Sequence[Any]) -> None:
        with self.timed("outputs"):
            for i, g in zip(diff, grads, strict=True):
                if g is None:
                    r = ref_grads[i]
                    if r is None or not np.any(r):
                        continue
                    self.fail("outputs", [f"no gradient (None) for arg{i}, but the reference gradient is nonzero"])
                problems = []
                if tuple(g.shape) != tuple(args[i].seen.shape):
                    problems.append(f"shape {tuple(g.shape)}, expected {tuple(args[i].seen.shape)}")
                if g.dtype != self.dtype:
                    problems.append(f"dtype {_short(g.dtype)}, expected {_short(self.dtype)}")
                if problems:
                    self.fail("outputs", [f"gradient of arg{i}: " + "; ".join(problems)])

    def check_backward(self, args, arrays, diff, grads, ref_grads, g_seen, float_outs) -> None:
        if all(ref_grads[i] is None for i in diff):
            return
        with self.timed("backward"):
            g_arrays = [g_seen[j].numpy() if j in g_seen else None for j in range(max(float_outs) + 1)]
            present = [g for g in g_arrays if g is not None]
            if self.vjp_terms is not None:
                mags = list(_as_tuple(self.vjp_terms(*arrays, *present)))
            else:
                mags = self.magnitude(arrays, self.reference_vjp, present) if self.multilinear else None
            self.grad_mags = mags  # the finite-difference check bounds the same gradient
            tol = self.tol(arrays, grad=True)
            worst = _Cmp(0.0)
            for i, g in zip(diff, grads, strict=True):
                r = ref_grads[i]
                actual = np.zeros(np.shape(r)) if g is None else _np(g)
                c = _compare(actual, r, tol, self.dtype, None if mags is None else mags[i])
                if c.ratio > 1:
                    self.fail("backward", self.mismatch_lines(f"grad of arg{i}", c, tol))
                if c.ratio >= worst.ratio:
                    worst = c
            self.record("backward", worst)

    def check_guards(self, args: list[_Arg], placed: list[Any], stage: str, g_placed: dict | None = None) -> None:
        with self.timed("guards"):
            problems = []
            for i, p in enumerate(placed):
                if isinstance(p, lay.Placed):
                    problems += p.problems(f"arg{i}")
            for j, p in (g_placed or {}).items():
                problems += p.problems(f"grad_output{j}")
            if problems:
                self.fail("guards", [f"after the {stage}:", *problems])
            self.record("guards")

    def check_zero_grad(self, outs: tuple, placed: list[Any], diff: list[int], float_outs: list[int]) -> None:
        with self.timed("zero_grad"):
            zeros = [torch.zeros_like(outs[j]) for j in float_outs]
            grads = self.grads([outs[j] for j in float_outs], [placed[i].tensor for i in diff], zeros, float("nan"))
            for i, g in zip(diff, grads, strict=True):
                if g is None:
                    continue
                a = _np(g)
                if not np.all(a == 0):
                    bad = ~(a == 0)
                    idx = tuple(int(k) for k in np.argwhere(bad)[0])
                    self.fail(
                        "zero_grad",
                        [
                            f"grad of arg{i}{_fmt_index(idx)} = {a[idx]!r} for grad_output = 0 "
                            f"({int(bad.sum())} nonzero or NaN element(s))"
                        ],
                    )
            self.record("zero_grad")

    # -- finite differences ----------------------------------------------------------------------

    def fd_step(self, args: list[_Arg], arrays: list[Any], diff: list[int]) -> float | None:
        """Step along a direction of max-norm 1, or None when a kink is too close."""
        xs = [np.asarray(arrays[i]) for i in diff]
        sizes = sum(x.size for x in xs)
        if sizes == 0:
            return None
        if not all(np.all(np.isfinite(x)) for x in xs):
            return None  # NaN or inf inputs: no derivative to take
        scale = max(float(np.sqrt(sum(float(np.sum(x * x)) for x in xs) / sizes)), 1e-3)
        h = FD_STEP * scale
        if self.kinks is not None:
            dist = float(self.kinks(*arrays))
            if dist / 4 < h:
                h = dist / 4
            if h < KINK_FLOOR * scale:
                return None
        return h

    def fd_directional(self, arrays, diff, vs, gs, float_outs, h, f64, slopes) -> tuple[float, float]:
        """Richardson-extrapolated central difference of phi(t) = sum_j <g_j, f_j(x + t v)>;
        returns (estimate, error bound). ``slopes`` are the gradients of phi (the VJPs), which
        carry the rounding of x + t v into phi."""

        def phi(t: float) -> tuple[float, float]:
            moved = list(arrays)
            for i, v in zip(diff, vs, strict=True):
                moved[i] = np.asarray(arrays[i] + t * v)
            outs = f64(moved)
            total, absolute = 0.0, 0.0
            for j in float_outs:
                o = np.asarray(outs[j], dtype=np.float64)
                total += float(np.sum(gs[j] * o))
                absolute += float(np.sum(np.abs(gs[j] * o)))
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
        rounding = ((self.k(arrays) + 8) * a1 + 2 * moved) * EPS64 / h
        return estimate, abs(d1 - d2) + rounding

    def fd_slopes(self, arrays, diff, vs, h, ref_grads, g_arrays) -> list[np.ndarray | None]:
        """|dphi/dx| over the stencil: the reference VJP's magnitude at x and at x +- 2h v (the
        slope at the perturbed points is what carries the rounding of x + t v into phi; at a
        minimum such as (a - b)^2 at a = b it is 0 at x and O(h) beside it)."""
        slopes = [None if ref_grads[i] is None else np.abs(np.asarray(ref_grads[i], dtype=np.float64)) for i in diff]
        if self.reference_vjp is None or g_arrays is None:
            return slopes
        for t in (2 * h, -2 * h):
            moved = list(arrays)
            for i, v in zip(diff, vs, strict=True):
                moved[i] = np.asarray(arrays[i] + t * v)
            with np.errstate(all="ignore"):
                beside = _as_tuple(self.reference_vjp(*moved, *g_arrays))
            for k, i in enumerate(diff):
                if slopes[k] is not None and beside[i] is not None:
                    step = np.nan_to_num(np.abs(np.asarray(beside[i], dtype=np.float64)), posinf=0.0)
                    slopes[k] = np.maximum(slopes[k], step)
        return slopes

    def check_fd(self, args, arrays, diff, grads, ref_grads, g_seen, float_outs, data, g_arrays=None) -> None:
        h = self.fd_step(args, arrays, diff)
        if h is None:
            for check in ("backward_fd", "reference_fd"):
                self.record(check, skipped=True)
            return
        seed = data.draw(st.integers(0, 2**32 - 1), label="direction seed")
        rng = np.random.default_rng(seed)
        vs = []
        for i in diff:
            v = rng.standard_normal(np.shape(arrays[i]))
            vs.append(v / max(float(np.max(np.abs(v))) if v.size else 1.0, 1e-300))
        gs = {j: g_seen[j].numpy() for j in float_outs}
        with self.timed("backward_fd"):
            # the reference's VJP only: a wrong implementation gradient must not widen the bound
            slopes = self.fd_slopes(arrays, diff, vs, h, ref_grads, g_arrays)
            est, fd_err = self.fd_directional(arrays, diff, vs, gs, float_outs, h, self.f64, slopes)
            if not (np.isfinite(est) and np.isfinite(fd_err)):
                # the forward is NaN or inf near x (an all-ignored mean loss): no derivative there
                self.record("backward_fd", skipped=True)
                return
            tol_g = self.tol(arrays, grad=True)
            lhs, bound = 0.0, 0.0
            mags = getattr(self, "grad_mags", None)
            for i, g, v in zip(diff, grads, vs, strict=True):
                a = np.zeros(np.shape(v)) if g is None else _np(g)
                lhs += float(np.sum(a * v))
                ref = ref_grads[i] if ref_grads[i] is not None else a
                mag = None if mags is None else mags[i]
                bound += float(np.sum(tol_g.bound(np.asarray(ref, dtype=np.float64), mag) * np.abs(v)))
            tol_total = bound + 2 * fd_err
            err = abs(lhs - est)
            c = _Cmp(err / tol_total if tol_total > 0 else (0.0 if err == 0 else np.inf), (), lhs, est, err, tol_total)
            if not np.isfinite(lhs) or c.ratio > 1:
                self.fail(
                    "backward_fd",
                    [
                        f"<impl VJP, v> = {lhs!r} but the finite difference of the float64 "
                        f"{'implementation' if self.f64_impl else 'reference'} along v gives {est!r}",
                        f"|err|={err:.4g} > tol={tol_total:.4g} (gradient tolerance summed along |v|: {bound:.3g}; "
                        f"finite-difference error bound: {fd_err:.3g}; step h={h:.3g}; "
                        f"v: signed random, max-norm 1, seed {seed})",
                    ],
                )
            self.record("backward_fd", c)
        if (
            self.reference_vjp is not None
            and self.reference is not None
            and all(ref_grads[i] is not None for i in diff)
        ):
            with self.timed("reference_fd"):
                if self.f64_impl:
                    est_r, fd_err_r = self.fd_directional(
                        arrays,
                        diff,
                        vs,
                        gs,
                        float_outs,
                        h,
                        lambda a: [np.asarray(o) for o in _as_tuple(self.reference(*a))],
                        slopes,
                    )
                else:
                    est_r, fd_err_r = est, fd_err
                lhs_r = float(sum(np.sum(np.asarray(ref_grads[i]) * v) for i, v in zip(diff, vs, strict=True)))
                absr = float(sum(np.sum(np.abs(np.asarray(ref_grads[i]) * v)) for i, v in zip(diff, vs, strict=True)))
                tol_r = 2 * fd_err_r + (self.k(arrays) + 8) * EPS64 * absr * 4
                err_r = abs(lhs_r - est_r)
                c = _Cmp(
                    err_r / tol_r if tol_r > 0 else (0.0 if err_r == 0 else np.inf), (), lhs_r, est_r, err_r, tol_r
                )
                if c.ratio > 1 or not np.isfinite(lhs_r):
                    self.fail(
                        "reference_fd",
                        [
                            f"the reference VJP gives <vjp, v> = {lhs_r!r} but the finite difference of "
                            "the reference forward gives "
                            f"{est_r!r} (|err|={err_r:.4g} > tol={tol_r:.4g}): the reference forward or VJP is wrong"
                        ],
                    )
                self.record("reference_fd", c)
        if self.jacobian != "off":
            self.check_jacobian(args, arrays, diff, float_outs, h)

    def check_jacobian(self, args, arrays, diff, float_outs, h) -> None:
        n_in = sum(np.size(arrays[i]) for i in diff)
        if self.jacobian == "auto" and n_in > JACOBIAN_MAX:
            return
        with self.timed("jacobian"):
            base = self.f64(arrays)
            n_out_shapes = [np.shape(base[j]) for j in float_outs]
            n_out = sum(int(np.prod(s)) for s in n_out_shapes)
            if (self.jacobian == "auto" and n_out > JACOBIAN_MAX) or n_out == 0 or n_in == 0:
                return
            # implementation Jacobian, one backward per output element, at the dtype under test
            inputs = []
            for i, a in enumerate(args):
                if a.kind == "value":
                    inputs.append(a.value)
                else:
                    t = a.seen.to(self.dtype if a.kind == "float" else a.seen.dtype).to(self.device).contiguous()
                    inputs.append(t.requires_grad_(i in diff))
            outs = self.call(inputs, float("nan"))
            j_impl = np.zeros((n_out, n_in))
            j_terms = np.zeros((n_out, n_in)) if self.vjp_terms is not None else None
            row = 0
            for j, shape in zip(float_outs, n_out_shapes, strict=True):
                for flat in range(int(np.prod(shape))):
                    gs = [torch.zeros_like(outs[k]) for k in float_outs]
                    gs[float_outs.index(j)].view(-1)[flat] = 1
                    grads = self.grads([outs[k] for k in float_outs], [inputs[i] for i in diff], gs, float("nan"))
                    if j_terms is not None:  # the op's own sum of |terms| for this row's VJP
                        basis = [_np(gk) for gk in gs]
                        terms = _as_tuple(self.vjp_terms(*arrays, *basis))
                        j_terms[row] = np.concatenate(
                            [np.abs(np.asarray(terms[i], dtype=np.float64)).ravel() for i in diff]
                        )
                    j_impl[row] = np.concatenate(
                        [
                            np.zeros(np.size(arrays[i])) if g is None else _np(g).ravel()
                            for i, g in zip(diff, grads, strict=True)
                        ]
                    )
                    row += 1
            # finite-difference Jacobian, one column per input element
            j_fd = np.zeros((n_out, n_in))
            j_err = np.zeros((n_out, n_in))
            col = 0
            for i in diff:
                for flat in range(int(np.size(arrays[i]))):
                    e = np.zeros(np.shape(arrays[i]))
                    e.reshape(-1)[flat] = 1.0

                    def column(t: float, i=i, e=e) -> np.ndarray:
                        moved = list(arrays)
                        moved[i] = np.asarray(arrays[i] + t * e)
                        outs64 = self.f64(moved)
                        return np.concatenate([np.asarray(outs64[k], dtype=np.float64).ravel() for k in float_outs])

                    d1 = (column(h) - column(-h)) / (2 * h)
                    d2 = (column(2 * h) - column(-2 * h)) / (4 * h)
                    j_fd[:, col] = (4 * d1 - d2) / 3
                    scale = np.concatenate([np.abs(np.asarray(base[k], dtype=np.float64)).ravel() for k in float_outs])
                    # rounding x + t e moves each output by |x| eps times the slope beside x, which
                    # the one-sided differences bound (it is 0 at x itself at a minimum)
                    base_col = np.concatenate([np.asarray(base[k], dtype=np.float64).ravel() for k in float_outs])
                    beside = np.maximum(np.abs(column(2 * h) - base_col), np.abs(base_col - column(-2 * h))) / (2 * h)
                    slope = np.maximum(np.abs(j_fd[:, col]), 2 * np.nan_to_num(beside, posinf=0.0))
                    moved = 2 * abs(float(np.asarray(arrays[i]).reshape(-1)[flat])) * slope
                    j_err[:, col] = np.abs(d1 - d2) + ((self.k(arrays) + 8) * scale + moved) * EPS64 / h
                    col += 1
            tol = self.tol(arrays, grad=True)
            bound = tol.bound(j_fd, j_terms) + 2 * j_err
            err = np.abs(j_impl - j_fd)
            ratio = np.where(np.isfinite(err), err / bound, np.inf)
            o, i_ = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
            c = _Cmp(
                float(ratio[o, i_]),
                (int(o), int(i_)),
                float(j_impl[o, i_]),
                float(j_fd[o, i_]),
                float(err[o, i_]),
                float(bound[o, i_]),
                int((ratio > 1).sum()),
            )
            if c.ratio > 1:
                self.fail(
                    "jacobian",
                    [
                        f"Jacobian entry d out[{o}] / d in[{i_}] (flattened over outputs and differentiable "
                        f"inputs): impl={c.actual!r}, finite differences={c.expected!r}",
                        f"|err|={c.error:.4g} > tol={c.tol:.4g}; {c.n_bad} of {ratio.size} entries over tolerance",
                        f"tolerance: {tol.describe()} + finite-difference error",
                    ],
                )
            self.record("jacobian", c)

    # -- rerun and non-differentiable inputs ------------------------------------------------------

    def rerun(self, args, layouts_, outs, grads, diff, float_outs, g_seen, g_layouts) -> None:
        """Same inputs, fresh buffers at new addresses, sentinel poison instead of NaN."""
        with self.timed("rerun"):
            placed = self.place_args(args, layouts_, diff=diff, sentinel=True)
            outs2 = self.call(
                [p.tensor if isinstance(p, lay.Placed) else p for p in placed], float(torch.finfo(self.dtype).max)
            )
            self.check_guards(args, placed, "rerun's forward")
            pairs = [(f"output {j}", outs[j], outs2[j]) for j in range(len(outs))]
            if grads is not None and diff:
                gp = {
                    j: lay.place(g_seen[j], dtype=self.dtype, device=self.device, layout=g_layouts[j], sentinel=True)
                    for j in float_outs
                }
                grads2 = self.grads(
                    [outs2[j] for j in float_outs],
                    [placed[i].tensor for i in diff],
                    [gp[j].tensor for j in float_outs],
                    float(torch.finfo(self.dtype).max),
                )
                self.check_guards(args, placed, "rerun's backward", gp)
                pairs += [(f"grad of arg{i}", g1, g2) for i, g1, g2 in zip(diff, grads, grads2, strict=True)]
            for what, a, b in pairs:
                if a is None and b is None:
                    continue
                if (a is None) != (b is None):
                    self.fail("rerun", [f"{what}: None in one run, a tensor in the other"])
                x, y = _np(a), _np(b)
                if self.deterministic:
                    same = (x == y) | (np.isnan(x) & np.isnan(y)) if np.issubdtype(x.dtype, np.floating) else x == y
                    if not np.all(same):
                        idx = tuple(int(k) for k in np.argwhere(~same)[0])
                        self.fail(
                            "rerun",
                            [
                                f"{what}{_fmt_index(idx)}: {x[idx]!r} in the first run (NaN poison), "
                                f"{y[idx]!r} in the rerun (sentinel poison {float(torch.finfo(self.dtype).max)!r} "
                                "around inputs and in fresh outputs); "
                                f"{int((~same).sum())} element(s) differ: nondeterministic, "
                                "or reading memory outside its inputs "
                                f"or an output element it never wrote"
                            ],
                        )
                elif np.issubdtype(x.dtype, np.floating):
                    c = _compare(y, x, self.tol([a_.array for a_ in args], grad=True), self.dtype, None)
                    if c.ratio > 1:
                        self.fail("rerun", self.mismatch_lines(what, c, self.tol([a_.array for a_ in args], grad=True)))
            self.record("rerun")

    def check_nondiff(self, args, layouts_, ref_grads, g_seen, g_layouts, float_outs) -> None:
        """Float inputs the reference says get no gradient must get None from the implementation."""
        targets = [i for i, a in enumerate(args) if a.kind == "float" and ref_grads[i] is None and self.reference_vjp]
        if not targets:
            return
        with self.timed("nondiff"):
            placed = self.place_args(args, layouts_, diff=targets, sentinel=False)
            outs = self.call([p.tensor if isinstance(p, lay.Placed) else p for p in placed], float("nan"))
            gp = {
                j: lay.place(g_seen[j], dtype=self.dtype, device=self.device, layout=g_layouts[j]) for j in float_outs
            }
            try:
                with _poisoned(float("nan")):
                    grads = torch.autograd.grad(
                        [outs[j] for j in float_outs],
                        [placed[i].tensor for i in targets],
                        [gp[j].tensor for j in float_outs],
                        allow_unused=True,
                    )
            except RuntimeError as e:  # "the derivative for 'weight' is not implemented": also no gradient
                if "not implemented" in str(e) or "does not require grad" in str(e):
                    self.record("nondiff")
                    return
                raise
            for i, g in zip(targets, grads, strict=True):
                if g is not None and bool(torch.any(g != 0)):
                    self.fail(
                        "nondiff",
                        [
                            f"arg{i} is not differentiable (the reference VJP gives None) but the "
                            f"implementation returned a nonzero gradient for it"
                        ],
                    )
            self.record("nondiff")


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------


def _settings(max_examples: int | None) -> hypothesis.settings:
    parent = hypothesis.settings()  # the active profile
    return hypothesis.settings(
        parent,
        max_examples=max_examples if max_examples is not None else parent.max_examples,
        deadline=None,
        print_blob=True,
        # one shrunk counterexample per verification: a VerificationError, never an ExceptionGroup
        # of distinct failures (fixing the first usually fixes or changes the others)
        report_multiple_bugs=False,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
            HealthCheck.differing_executors,
        ],
    )


def _hypothesis_test(problem: _Problem, strategy: st.SearchStrategy, max_examples: int | None) -> Callable[[], None]:
    @_settings(max_examples)
    @given(drawn=strategy, data=st.data())
    def run(drawn, data):
        problem.run(drawn, data)

    return run


def verify(
    fn: Callable[..., Any],
    inputs: st.SearchStrategy | Callable[[torch.dtype], st.SearchStrategy],
    *,
    reference: Callable[..., Any] | None = None,
    reference_vjp: Callable[..., Any] | None = None,
    dtypes: Sequence[torch.dtype] = (torch.float32,),
    name: str | None = None,
    max_examples: int | None = None,
    depth: Callable[..., int] | int = 1,
    multilinear: bool = False,
    ulps: float = 0.0,
    kinks: Callable[..., float] | None = None,
    backward: bool = True,
    deterministic: bool = True,
    tf32: bool | None = None,
    jacobian: str = "auto",
    device: torch.device | str | None = None,
    terms: Callable[..., Any] | None = None,
    vjp_terms: Callable[..., Any] | None = None,
) -> Report:
    """Verify ``fn`` forward and backward on inputs drawn from ``inputs``, at each of ``dtypes``.

    ``inputs`` is a Hypothesis strategy of positional-argument tuples (float64 CPU tensors, integer
    tensors, plain values), or a function dtype -> such a strategy. ``reference(*arrays)`` is the
    NumPy float64 forward; ``reference_vjp(*arrays, *grad_outputs)`` returns one gradient per
    argument (None: no gradient). Without a reference, ``fn`` at float64 stands in for it (then
    include float64 in what ``fn`` supports). ``depth``, ``multilinear``, ``ulps`` feed the
    tolerance (see ``gradcheck.tolerances``); ``kinks`` is the distance to the nearest
    non-differentiable point; ``jacobian`` is "auto" (full Jacobian for small inputs), "off" or
    "always"; ``tf32`` selects the TF32 row for fp32 (default: on when an fp32 matmul would use
    it, i.e. ``torch.get_float32_matmul_precision() != "highest"``, and the op is ``multilinear``).
    ``terms(*arrays)`` / ``vjp_terms(*arrays, *grad_outputs)`` give the sum of |terms| per element
    of the forward / the VJP for ops whose terms cancel (an affine update, a softmax backward),
    where neither |ref| nor the multilinear bound applies.

    Returns a :class:`Report`; raises :class:`VerificationError` (an AssertionError) naming the
    failing check, with a shrunk counterexample, after every dtype has run.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    if reference is None and reference_vjp is not None:
        raise ValueError("reference_vjp without reference: give the NumPy forward too")
    if jacobian not in ("auto", "off", "always"):
        raise ValueError(f"jacobian={jacobian!r}; expected 'auto', 'off' or 'always'")
    dtypes = tuple(dtypes)
    for d in dtypes:
        if not isinstance(d, torch.dtype) or not d.is_floating_point:
            raise TypeError(f"dtypes must be floating torch dtypes, got {d!r}")
    if max_examples is not None and max_examples < 1:
        raise ValueError(f"max_examples must be >= 1, got {max_examples}")
    name = name or getattr(fn, "__name__", None) or type(fn).__name__
    dev = torch.device(device) if device is not None else _default_device()
    report = Report(name)
    first_error: VerificationError | None = None
    t_start = time.perf_counter()
    for dtype in dtypes:
        strategy = inputs(dtype) if callable(inputs) and not isinstance(inputs, st.SearchStrategy) else inputs
        use_tf32 = (
            tf32
            if tf32 is not None
            else (dtype == torch.float32 and multilinear and torch.get_float32_matmul_precision() != "highest")
        )
        problem = _Problem(
            fn,
            reference,
            reference_vjp,
            name,
            dtype,
            dev,
            depth,
            multilinear,
            ulps,
            kinks,
            backward,
            deterministic,
            bool(use_tf32),
            jacobian,
            report,
            f64_impl=torch.float64 in dtypes or reference is None,
            terms=terms,
            vjp_terms=vjp_terms,
        )

        run = _hypothesis_test(problem, strategy, max_examples)

        # a distinct database key per op and dtype, so a stored failure replays where it belongs
        run.hypothesis.inner_test._hypothesis_internal_add_digest = f"{name}:{problem.dname}".encode()
        try:
            run()
        except VerificationError as e:
            report.failures.append(str(e))
            first_error = first_error or e
        except FlakyFailure as e:
            inner = next((x for x in e.exceptions if isinstance(x, VerificationError)), None)
            msg = (
                f"{name} [{problem.dname}]: a failure did not reproduce when replayed: the implementation is "
                f"nondeterministic\n{inner if inner else e}"
            )
            err = VerificationError(msg, op=name, dtype=problem.dname, check="rerun")
            report.failures.append(msg)
            first_error = first_error or err
    report.seconds = time.perf_counter() - t_start
    if first_error is not None:
        first_error.report = report
        raise first_error
    return report


def check_gradients(
    fn: Callable[..., Any], *tensors: Any, mode: str = "auto", seed: int = 0, directions: int = 4
) -> bool:
    """One-shot finite-difference check of ``fn``'s backward at the given inputs (like
    ``torch.autograd.gradcheck``, without its blind spots): float64 inputs are checked at float64
    accuracy against Richardson-extrapolated central differences of ``fn`` itself, along
    ``directions`` signed random directions ("directional"), or entry by entry ("full"); "auto"
    takes "full" when the inputs and outputs have at most 64 elements. Plain values and integer
    tensors pass through. Returns True or raises :class:`VerificationError`.

    Keep inputs away from kinks (relu at 0, ties in a max): a finite difference across one is not
    a derivative."""
    if mode not in ("auto", "full", "directional"):
        raise ValueError(f"mode={mode!r}; expected 'auto', 'full' or 'directional'")
    float_pos = [i for i, t in enumerate(tensors) if isinstance(t, torch.Tensor) and t.is_floating_point()]
    if not float_pos:
        raise ValueError("check_gradients needs at least one floating-point tensor input")
    dtypes = {tensors[i].dtype for i in float_pos}
    if len(dtypes) != 1:
        raise TypeError(f"float inputs have mixed dtypes {sorted(map(str, dtypes))}")
    dtype = dtypes.pop()
    device = tensors[float_pos[0]].device
    drawn = tuple(t.detach().to(torch.float64).cpu() if i in float_pos else t for i, t in enumerate(tensors))
    with torch.no_grad():
        outs = _as_tuple(fn(*tensors))
    n_in = sum(tensors[i].numel() for i in float_pos)
    n_out = sum(o.numel() for o in outs if isinstance(o, torch.Tensor) and o.is_floating_point())
    full = mode == "full" or (mode == "auto" and n_in <= 64 and n_out <= 64)
    report = Report(getattr(fn, "__name__", "fn"))
    problem = _Problem(
        fn,
        None,
        None,
        report.name,
        dtype,
        device,
        1,
        False,
        0.0,
        None,
        True,
        True,
        False,
        "always" if full else "off",
        report,
        f64_impl=True,
    )
    args = _prepare(drawn, dtype)
    arrays = [a.array for a in args]
    problem.context = problem.describe(args, [a.value for a in args])
    rng = np.random.default_rng(seed)
    inputs = [
        t.detach().requires_grad_(i in float_pos) if isinstance(t, torch.Tensor) and t.is_floating_point() else t
        for i, t in enumerate(tensors)
    ]
    outs = _as_tuple(fn(*inputs))
    float_outs = [j for j, o in enumerate(outs) if isinstance(o, torch.Tensor) and o.is_floating_point()]
    h = problem.fd_step(args, arrays, float_pos)
    if h is None:
        return True
    if full:
        problem.check_jacobian(args, arrays, float_pos, float_outs, h)
        return True
    for _ in range(directions):
        gs = {
            j: torch.from_numpy(rng.standard_normal(tuple(outs[j].shape))).to(dtype).to(torch.float64)
            for j in float_outs
        }
        grads = torch.autograd.grad(
            [outs[j] for j in float_outs],
            [inputs[i] for i in float_pos],
            [gs[j].to(device=device, dtype=dtype) for j in float_outs],
            retain_graph=True,
            allow_unused=True,
        )
        data = _FixedData(rng)
        problem.check_fd(args, arrays, float_pos, grads, [None] * len(args), gs, float_outs, data)
    return True


class _FixedData:
    """Stands in for Hypothesis' data object outside a test: draws the direction seed from a generator."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def draw(self, strategy: Any, label: str | None = None) -> int:
        return int(self.rng.integers(0, 2**32 - 1))
