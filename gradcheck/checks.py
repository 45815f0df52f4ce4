"""The checks of ``gradcheck.report.CHECKS``, one function each, and the calls of the implementation they judge.

Every check takes the verification's :class:`~gradcheck.config.Config` and the example's
:class:`~gradcheck.example.Example`, records its statistics in the example's report, and raises a
:class:`~gradcheck.report.VerificationError` naming itself when it fails.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import hypothesis
import numpy as np
import torch

from gradcheck import fd
from gradcheck import layouts as lay
from gradcheck import opcheck as oc
from gradcheck import sensitivity as sens
from gradcheck.compare import (
    Comparison,
    as_tuple,
    compare,
    dtype_name,
    format_index,
    mismatch_lines,
    past_range,
    to_numpy,
)
from gradcheck.config import Config
from gradcheck.example import Example, place_args, values_of
from gradcheck.hooks import poisoned
from gradcheck.report import CHECKS, VerificationError, failure_class
from gradcheck.tolerances import TABLE, table_row

__all__ = [
    "JACOBIAN_MAX",
    "HeldOut",
    "call_backward",
    "call_impl",
    "check_backward",
    "check_backward_fd",
    "check_finite_differences",
    "check_forward",
    "check_gradient_outputs",
    "check_guards",
    "check_jacobian",
    "check_nondiff",
    "check_opcheck",
    "check_outputs",
    "check_raises",
    "check_reference_fd",
    "check_rerun",
    "check_zero_grad",
    "fail",
    "record",
    "timed",
]

class HeldOut(Exception):
    """A held-out check failed: the failure was reported already; the example skips that check."""


#: Full-Jacobian mode when both the differentiable inputs and the outputs have at most this many elements.
JACOBIAN_MAX = 16

NAN = float("nan")


# ---------------------------------------------------------------------------------------------
# reporting
# ---------------------------------------------------------------------------------------------


def fail(cfg: Config, ex: Example, check: str, lines: Sequence[str], *, subject: str = "", **details: Any) -> NoReturn:
    """Raise the failure of ``check`` on ``subject`` (the argument or output it is about, if one):
    which op, dtype and check, ``lines``, the example, how to replay. The exception's class is the
    failure's identity (:func:`gradcheck.report.failure_class`); its details carry the layouts the
    arguments had, from which ``verify`` tells a layout the implementation does not support."""
    head = f"{cfg.name} [{cfg.dname}]: check '{check}' failed ({CHECKS[check]})"
    body = "\n".join("  " + ln for ln in lines if ln)
    if hypothesis.settings().database is not None:
        replay = (
            "  replay: Hypothesis stores this example in its database (.hypothesis/) and replays it first when the"
            " same call runs again; the @reproduce_failure line printed with it pins it exactly."
        )
    else:
        replay = "  replay: decorate a test with the @reproduce_failure line printed with this report to rerun it."
    if check in cfg.held_out:  # a defect already reported: this example goes on without the check
        ex.report.stat(cfg.dname, check).skipped += 1
        raise HeldOut(check)
    details.setdefault("layouts", {i: _layout_kind(ex, i) for i in ex.layouts})
    details.setdefault("subject", subject)
    raise failure_class(check, subject)(
        f"{head}\n{body}\n{ex.context}\n{replay}", op=cfg.name, dtype=cfg.dname, check=check, details=details
    )


def _layout_kind(ex: Example, i: int) -> str:
    """Argument ``i``'s drawn layout kind (Hypothesis shrinks it to "contiguous"; an expanded
    value is part of the drawn tensor, which shrinks toward expansion, so it tells nothing)."""
    return ex.layouts[i].kind


@contextlib.contextmanager
def timed(cfg: Config, ex: Example, check: str) -> Iterator[None]:
    """Add the block's time to ``check``'s statistics (also when it fails)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        ex.report.stat(cfg.dname, check).seconds += time.perf_counter() - start


def record(cfg: Config, ex: Example, check: str, cmp: Comparison | None = None, *, skipped: bool = False) -> None:
    """Count one example of ``check`` (with its worst comparison), or one it skipped."""
    s = ex.report.stat(cfg.dname, check)
    if skipped:
        s.skipped += 1
        return
    if cmp is not None:
        s.record(cmp.ratio, cmp.error, cmp.tol)
    s.examples += 1


def _ratio(err: float, tol: float) -> float:
    return err / tol if tol > 0 else (0.0 if err == 0 else np.inf)


# ---------------------------------------------------------------------------------------------
# raises: calling the implementation
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def check_raises(cfg: Config, ex: Example, what: str) -> Iterator[None]:
    """Check 'raises': ``what`` runs without raising on a valid input. A crash is a failure to
    report, not an engine error."""
    try:
        yield
    except VerificationError:
        raise
    except Exception as e:
        if "raises" in cfg.held_out:  # a crash already reported: draws it rejects are not run
            ex.report.stat(cfg.dname, "raises").skipped += 1
            hypothesis.reject()
        lines = [f"{what} raised {type(e).__name__}: {e}"]
        if what == "the backward" and "does not require grad" in str(e):
            lines.append(
                "hint: the outputs are not connected to the inputs by autograd. A forward-only implementation "
                "is verified with backward=False; an autograd.Function must return its outputs from apply()"
            )
        fail(cfg, ex, "raises", lines, subject=what)


def call_impl(cfg: Config, ex: Example, args: Sequence[Any], *, fill: float, record: bool = False) -> tuple:
    """The implementation's outputs on ``args``, its allocations poisoned with ``fill``. With
    ``record`` (and ``cfg.opcheck`` on), the first call of each custom op it makes is recorded in
    ``ex.op_calls`` (replacing an earlier pass's record of the same op)."""
    recorder = oc.CustomOpRecorder() if record and cfg.opcheck != "off" else contextlib.nullcontext()
    try:
        with poisoned(fill), check_raises(cfg, ex, "the implementation"), recorder:
            return as_tuple(cfg.fn(*args))
    finally:
        if isinstance(recorder, oc.CustomOpRecorder):
            ex.op_calls.update(recorder.calls)


def call_backward(
    cfg: Config,
    ex: Example,
    outs: Sequence[torch.Tensor],
    wrt: Sequence[torch.Tensor],
    grad_outputs: Sequence[torch.Tensor],
    *,
    fill: float,
) -> tuple:
    """The implementation's gradients of ``outs`` with respect to ``wrt`` (None where unused)."""
    with poisoned(fill), check_raises(cfg, ex, "the backward"):
        return torch.autograd.grad(list(outs), list(wrt), list(grad_outputs), allow_unused=True)


# ---------------------------------------------------------------------------------------------
# opcheck: the registration of the custom ops the implementation calls
# ---------------------------------------------------------------------------------------------


def _opcheck_budget(cfg: Config, ex: Example, name: str) -> bool:
    """Whether this example opchecks custom op ``name``: the first ``cfg.opcheck_examples``
    examples of each op do, and every example once the op has failed (so shrinking sees it)."""
    if name in ex.opcheck_done:
        return True
    if name in ex.opcheck_skipped:
        return False
    runs = cfg.opcheck_runs.get(name, 0)
    if cfg.opcheck_examples is not None and runs >= cfg.opcheck_examples and name not in cfg.opcheck_failed:
        ex.opcheck_skipped.add(name)
        return False
    cfg.opcheck_runs[name] = runs + 1
    ex.opcheck_done[name] = set()
    return True


def check_opcheck(cfg: Config, ex: Example, *, tests: Sequence[str], final: bool) -> None:
    """Check 'opcheck': ``torch.library.opcheck``'s ``tests`` on each custom op recorded in
    ``ex.op_calls``, on fresh copies of the arguments it was called with; with ``final``, also
    every test of :data:`gradcheck.opcheck.TESTS` not yet run on an op in this example. Nothing
    (no statistics) when the implementation called no custom op or ``cfg.opcheck`` is "off"."""
    if cfg.opcheck == "off" or not ex.op_calls:
        return
    with timed(cfg, ex, "opcheck"):
        ran = skipped = False
        for name, call in ex.op_calls.items():
            if oc.untestable(call) or not _opcheck_budget(cfg, ex, name):
                skipped = True
                continue
            done = ex.opcheck_done[name]
            todo = [t for t in oc.TESTS if t not in done and (t in tests or final)]
            done.update(todo)
            ran = ran or bool(todo)
            for test, e in oc.run_tests(call, todo):
                cfg.opcheck_failed.add(name)
                message = str(e).strip().splitlines() or [""]
                if len(message) > 12:
                    message = [*message[:12], f"... ({len(message) - 12} more lines)"]
                what = f"opcheck's {test}" if test != "opcheck" else "torch.library.opcheck itself"
                fail(
                    cfg,
                    ex,
                    "opcheck",
                    [
                        f"custom op {name}: {what} failed: {type(e).__name__}: {message[0]}",
                        *("  " + ln for ln in message[1:]),
                        f"called with {oc.describe_call(call)}",
                        f"replay: torch.library.opcheck({oc.op_expression(call.op)}, args, kwargs, "
                        f"test_utils={test!r}) on these arguments",
                    ],
                    op=name,
                    test=test,
                    exception=f"{type(e).__name__}: {e}",
                )
        if not ex.opcheck_counted and (ran or skipped):
            ex.opcheck_counted = True
            record(cfg, ex, "opcheck", skipped=not ran)


# ---------------------------------------------------------------------------------------------
# outputs, forward, backward
# ---------------------------------------------------------------------------------------------


def check_outputs(cfg: Config, ex: Example) -> list[int]:
    """Check 'outputs' on the forward: as many outputs as the reference, each a tensor of the
    expected shape, dtype and device. Returns the positions of the floating outputs."""
    with timed(cfg, ex, "outputs"):
        if len(ex.outs) != len(ex.ref_out):
            fail(cfg, ex, "outputs", [f"returned {len(ex.outs)} output(s); the reference returns {len(ex.ref_out)}"])
        float_outs = []
        for j, (o, r) in enumerate(zip(ex.outs, ex.ref_out, strict=True)):
            if not isinstance(o, torch.Tensor):
                fail(cfg, ex, "outputs", [f"output {j} is a {type(o).__name__}, not a tensor"])
            want_dtype = cfg.dtype if np.issubdtype(r.dtype, np.floating) else torch.int64
            problems = []
            if tuple(o.shape) != tuple(r.shape):
                problems.append(f"shape {tuple(o.shape)}, expected {tuple(r.shape)}")
            if o.dtype != want_dtype and not (want_dtype == torch.int64 and not o.is_floating_point()):
                problems.append(f"dtype {dtype_name(o.dtype)}, expected {dtype_name(want_dtype)}")
            if o.device.type != cfg.device.type:
                problems.append(f"device {o.device}, expected {cfg.device}")
            if problems:
                fail(cfg, ex, "outputs", [f"output {j}: " + "; ".join(problems)])
            if o.is_floating_point():
                float_outs.append(j)
        record(cfg, ex, "outputs")
    return float_outs


def check_gradient_outputs(cfg: Config, ex: Example) -> None:
    """Check 'outputs' on the backward: a gradient per differentiable argument (None only where
    the reference's is zero or absent) of the argument's shape and the dtype."""
    with timed(cfg, ex, "outputs"):
        for i, g in zip(ex.diff, ex.grads, strict=True):
            if g is None:
                r = ex.ref_grads[i]
                if r is None or not np.any(r):
                    continue
                fail(cfg, ex, "outputs", [f"no gradient (None) for arg{i}, but the reference gradient is nonzero"])
            problems = []
            if tuple(g.shape) != tuple(ex.args[i].seen.shape):
                problems.append(f"shape {tuple(g.shape)}, expected {tuple(ex.args[i].seen.shape)}")
            if g.dtype != cfg.dtype:
                problems.append(f"dtype {dtype_name(g.dtype)}, expected {dtype_name(cfg.dtype)}")
            if problems:
                fail(cfg, ex, "outputs", [f"gradient of arg{i}: " + "; ".join(problems)])


def _magnitude(cfg: Config, arrays: list[Any], fn: Callable, extra: Sequence[Any] = ()) -> list[np.ndarray] | None:
    """Sum of |terms| per element for a multilinear op: the op on absolute values."""
    if not cfg.multilinear:
        return None
    absd = [np.abs(a) if isinstance(a, np.ndarray) and np.issubdtype(a.dtype, np.floating) else a for a in arrays]
    absx = [np.abs(x) if isinstance(x, np.ndarray) else x for x in extra]
    return list(as_tuple(fn(*absd, *absx)))


def _sensitivity(cfg: Config, ex: Example, *, grad: bool) -> list[sens.Sensitivity | None] | None:
    """The reference's sensitivity to relative perturbations of the inputs (and grad_outputs, for
    the VJP) per result element, where the cancellation term applies (:mod:`gradcheck.sensitivity`).
    Measured once per example and direction, and only when a comparison needs it: a result within
    the bound without the term passes with it too, so most examples never pay for the probes."""
    if not cfg.uses_sensitivity(grad=grad):
        return None
    key = "backward" if grad else "forward"
    if key not in ex.sensitivities:
        ex.sensitivities[key] = _measure_sensitivity(cfg, ex, grad=grad)
    return ex.sensitivities[key]


def _compare(
    cfg: Config,
    ex: Example,
    actual: np.ndarray,
    expected: np.ndarray,
    tol: Any,
    *,
    mag: Any,
    grad: bool,
    index: int,
    allowance: float = 0.0,
) -> Comparison:
    """:func:`compare`, with the cancellation term added only where the plain bound is exceeded."""
    c = compare(actual, expected, tol, dtype=cfg.dtype, magnitude=mag, allowance=allowance)
    if c.ratio > 1 and np.isfinite(c.ratio) and tol.sens:
        found = _sensitivity(cfg, ex, grad=grad)
        if found is not None and found[index] is not None:
            c = compare(
                actual, expected, tol, dtype=cfg.dtype, magnitude=mag, sensitivity=found[index], allowance=allowance
            )
    return c


def _baseline_errors(cfg: Config, ex: Example, *, grad: bool) -> dict[int, float]:
    """The baseline's worst error against the reference at the same dtype, per output (forward) or
    per differentiable argument (``grad``), on contiguous copies of the example's inputs: the
    measuring stick's figures. Empty without a baseline; NaN where the baseline gives no value."""
    if cfg.baseline is None:
        return {}
    key = "baseline_grad" if grad else "baseline"
    if key in ex.sensitivities:
        return ex.sensitivities[key]
    inputs = []
    for i, a in enumerate(ex.args):
        if a.kind == "value":
            inputs.append(a.value)
        else:
            t = a.seen.to(cfg.dtype if a.kind == "float" else a.seen.dtype).to(cfg.device).contiguous()
            inputs.append(t.requires_grad_(grad and i in ex.diff))
    errors: dict[int, float] = {}
    try:
        with torch.set_grad_enabled(grad):
            outs = as_tuple(cfg.baseline(*inputs))
        if grad:
            gs = [ex.g_seen[j].to(cfg.dtype).to(cfg.device) for j in ex.float_outs]
            found = torch.autograd.grad(
                [outs[j] for j in ex.float_outs], [inputs[i] for i in ex.diff], gs, allow_unused=True
            )
            pairs = [(i, g, ex.ref_grads[i]) for i, g in zip(ex.diff, found, strict=True)]
        else:
            pairs = [(j, outs[j], ex.ref_out[j]) for j in ex.float_outs]
    except Exception as e:  # the baseline does not run here (a dtype it lacks): no figures, no allowance
        ex.sensitivities[key] = errors
        ex.sensitivities[key + "_error"] = f"{type(e).__name__}: {e}"
        return errors
    for k, got, ref in pairs:
        if got is None or ref is None:
            continue
        a, r = to_numpy(got), np.asarray(ref, dtype=np.float64)
        finite = np.isfinite(a) & np.isfinite(r)
        errors[k] = float(np.max(np.abs(a - r), where=finite, initial=0.0))
    ex.sensitivities[key] = errors
    return errors


def _allowance(cfg: Config, error: float | None) -> float:
    """What the baseline's error adds to every element's bound: ``baseline_factor`` times it."""
    return cfg.baseline_factor * error if error is not None and np.isfinite(error) else 0.0


def _record_baseline(cfg: Config, ex: Example, check: str, errors: dict[int, float]) -> None:
    if errors:
        s = ex.report.stat(cfg.dname, check)
        worst = max(errors.values())
        s.baseline_error = worst if np.isnan(s.baseline_error) else max(s.baseline_error, worst)


def _baseline_lines(cfg: Config, error: float | None) -> list[str]:
    if error is None:
        return []
    return [
        f"baseline (same dtype): worst error {error:.4g} against the reference; the bound includes "
        f"{cfg.baseline_factor:g} x that ({cfg.baseline_factor * error:.4g})"
    ]


def _measure_sensitivity(cfg: Config, ex: Example, *, grad: bool) -> list[sens.Sensitivity | None] | None:
    if grad:
        if cfg.reference_vjp is None or ex.ref_grads is None:
            return None
        present = [g for g in ex.g_arrays if g is not None]
        return _sensitivity_of(cfg, cfg.reference_vjp, ex.arrays, list(ex.ref_grads), seed=1, extra=present, grad=True)
    if cfg.reference is None:
        return None
    floats = [r if j in ex.float_outs else None for j, r in enumerate(ex.ref_out)]
    return _sensitivity_of(cfg, cfg.reference, ex.arrays, floats, seed=0, extra=(), grad=False)


def _sensitivity_of(
    cfg: Config, fn: Callable, arrays: list[Any], base: list[Any], *, seed: int, extra: Sequence[Any], grad: bool
) -> list[sens.Sensitivity | None]:
    """:func:`gradcheck.sensitivity.sensitivity` of the reference forward or VJP ``fn``, with the
    simulated rounding of the reference's torch model where there is one."""
    model = cfg.ref.model if cfg.ref is not None else None
    return sens.sensitivity(
        fn,
        arrays,
        base,
        seed=seed,
        extra=extra,
        rounding=model.rounding if model is not None else None,
        rounded_fn=None if model is None else (model.vjp if grad else model.forward),
    )


def check_forward(cfg: Config, ex: Example) -> None:
    """Check 'forward': every output against the reference (integer outputs exactly)."""
    with timed(cfg, ex, "forward"):
        if cfg.terms is not None:
            mags = list(as_tuple(cfg.terms(*ex.arrays)))
        else:
            mags = _magnitude(cfg, ex.arrays, cfg.reference) if cfg.reference else None
        tol = cfg.tolerance(ex.arrays, grad=False)
        base = _baseline_errors(cfg, ex, grad=False)
        _record_baseline(cfg, ex, "forward", base)
        worst = Comparison(0.0)
        for j, (o, r) in enumerate(zip(ex.outs, ex.ref_out, strict=True)):
            if j not in ex.float_outs:
                a = to_numpy(o)
                if not np.array_equal(a, r):
                    idx = tuple(int(i) for i in np.argwhere(a != r)[0])
                    fail(
                        cfg,
                        ex,
                        "forward",
                        [
                            f"integer output {j} differs at {format_index(idx)}: impl {a[idx]} vs reference {r[idx]}"
                            f" ({int((a != r).sum())} of {a.size} differ)"
                        ],
                    )
                continue
            allow = _allowance(cfg, base.get(j))
            mag = None if mags is None else mags[j]
            c = _compare(cfg, ex, to_numpy(o), r, tol, mag=mag, grad=False, index=j, allowance=allow)
            if c.ratio > 1:
                lines = [*mismatch_lines(f"output {j}", c, tol), *_baseline_lines(cfg, base.get(j))]
                fail(cfg, ex, "forward", lines, subject=f"output{j}")
            if c.ratio >= worst.ratio:
                worst = c
        record(cfg, ex, "forward", worst)


def check_backward(cfg: Config, ex: Example) -> None:
    """Check 'backward': every gradient against the reference VJP (a None gradient counts as zeros).
    Sets ``ex.grad_mags``, which the finite-difference check bounds the same gradients with."""
    if all(ex.ref_grads[i] is None for i in ex.diff):
        return
    with timed(cfg, ex, "backward"):
        g_arrays = [ex.g_seen[j].numpy() if j in ex.g_seen else None for j in range(max(ex.float_outs) + 1)]
        present = [g for g in g_arrays if g is not None]
        if cfg.vjp_terms is not None:
            mags = list(as_tuple(cfg.vjp_terms(*ex.arrays, *present)))
        else:
            mags = _magnitude(cfg, ex.arrays, cfg.reference_vjp, present) if cfg.multilinear else None
        ex.grad_mags = mags
        tol = cfg.tolerance(ex.arrays, grad=True)
        base = _baseline_errors(cfg, ex, grad=True)
        _record_baseline(cfg, ex, "backward", base)
        worst = Comparison(0.0)
        for i, g in zip(ex.diff, ex.grads, strict=True):
            r = ex.ref_grads[i]
            if r is None:
                continue
            actual = np.zeros(np.shape(r)) if g is None else to_numpy(g)
            allow = _allowance(cfg, base.get(i))
            c = _compare(
                cfg, ex, actual, r, tol, mag=None if mags is None else mags[i], grad=True, index=i, allowance=allow
            )
            if c.ratio > 1:
                lines = [*mismatch_lines(f"grad of arg{i}", c, tol), *_baseline_lines(cfg, base.get(i))]
                fail(cfg, ex, "backward", lines, subject=f"arg{i}")
            if c.ratio >= worst.ratio:
                worst = c
        record(cfg, ex, "backward", worst)


# ---------------------------------------------------------------------------------------------
# side checks
# ---------------------------------------------------------------------------------------------


def check_guards(
    cfg: Config, ex: Example, placed: Sequence[Any], *, stage: str, g_placed: dict[int, lay.Placed] | None = None
) -> None:
    """Check 'guards': after ``stage``, every placed input and grad_output unchanged and its guard band intact."""
    with timed(cfg, ex, "guards"):
        problems = []
        for i, p in enumerate(placed):
            if isinstance(p, lay.Placed):
                problems += p.problems(f"arg{i}")
        for j, p in (g_placed or {}).items():
            problems += p.problems(f"grad_output{j}")
        if problems:
            fail(cfg, ex, "guards", [f"after the {stage}:", *problems])
        record(cfg, ex, "guards")


def check_zero_grad(cfg: Config, ex: Example) -> None:
    """Check 'zero_grad': grad_output = 0 gives exactly zero gradients (None counts as zero)."""
    with timed(cfg, ex, "zero_grad"):
        # a fresh forward: a backward may be single-use (a fused loss that scales, in place, the
        # gradient it saved in the forward), so no graph is differentiated twice
        fresh = place_args(cfg, ex, diff=ex.diff, sentinel=False)
        outs = call_impl(cfg, ex, values_of(fresh), fill=NAN)
        zeros = [torch.zeros_like(outs[j]) for j in ex.float_outs]
        grads = call_backward(
            cfg, ex, [outs[j] for j in ex.float_outs], [fresh[i].tensor for i in ex.diff], zeros, fill=NAN
        )
        for i, g in zip(ex.diff, grads, strict=True):
            if g is None:
                continue
            a = to_numpy(g)
            if not np.all(a == 0):
                bad = ~(a == 0)
                idx = tuple(int(k) for k in np.argwhere(bad)[0])
                fail(
                    cfg,
                    ex,
                    "zero_grad",
                    [
                        f"grad of arg{i}{format_index(idx)} = {a[idx]!r} for grad_output = 0 "
                        f"({int(bad.sum())} nonzero or NaN element(s))"
                    ],
                )
        record(cfg, ex, "zero_grad")


def check_rerun(cfg: Config, ex: Example) -> None:
    """Check 'rerun': the same inputs in fresh buffers at new addresses, with sentinel poison
    instead of NaN, give the same outputs and gradients (bit for bit when ``deterministic``)."""
    sentinel = float(torch.finfo(cfg.dtype).max)
    with timed(cfg, ex, "rerun"):
        placed = place_args(cfg, ex, diff=ex.diff, sentinel=True)
        outs2 = call_impl(cfg, ex, values_of(placed), fill=sentinel)
        check_guards(cfg, ex, placed, stage="rerun's forward")
        pairs = [(f"output {j}", ex.outs[j], outs2[j]) for j in range(len(ex.outs))]
        if ex.grads is not None and ex.diff:
            gp = {
                j: lay.place(ex.g_seen[j], dtype=cfg.dtype, device=cfg.device, layout=ex.g_layouts[j], sentinel=True)
                for j in ex.float_outs
            }
            grads2 = call_backward(
                cfg,
                ex,
                [outs2[j] for j in ex.float_outs],
                [placed[i].tensor for i in ex.diff],
                [gp[j].tensor for j in ex.float_outs],
                fill=sentinel,
            )
            check_guards(cfg, ex, placed, stage="rerun's backward", g_placed=gp)
            pairs += [(f"grad of arg{i}", g1, g2) for i, g1, g2 in zip(ex.diff, ex.grads, grads2, strict=True)]
        for what, a, b in pairs:
            if a is None and b is None:
                continue
            if (a is None) != (b is None):
                fail(cfg, ex, "rerun", [f"{what}: None in one run, a tensor in the other"])
            x, y = to_numpy(a), to_numpy(b)
            if cfg.deterministic:
                same = (x == y) | (np.isnan(x) & np.isnan(y)) if np.issubdtype(x.dtype, np.floating) else x == y
                if not np.all(same):
                    idx = tuple(int(k) for k in np.argwhere(~same)[0])
                    fail(
                        cfg,
                        ex,
                        "rerun",
                        [
                            f"{what}{format_index(idx)}: {x[idx]!r} in the first run (NaN poison), "
                            f"{y[idx]!r} in the rerun (sentinel poison {sentinel!r} "
                            "around inputs and in fresh outputs); "
                            f"{int((~same).sum())} element(s) differ: nondeterministic, "
                            "or reading memory outside its inputs "
                            f"or an output element it never wrote"
                        ],
                    )
            elif np.issubdtype(x.dtype, np.floating):
                tol = cfg.tolerance(ex.arrays, grad=True)
                c = compare(y, x, tol, dtype=cfg.dtype, magnitude=None)
                if c.ratio > 1:
                    fail(cfg, ex, "rerun", mismatch_lines(what, c, tol))
        record(cfg, ex, "rerun")


def check_nondiff(cfg: Config, ex: Example) -> None:
    """Check 'nondiff': float inputs the reference says get no gradient get None (or zeros) from
    the implementation."""
    targets = [i for i, a in enumerate(ex.args) if a.kind == "float" and ex.ref_grads[i] is None and cfg.reference_vjp]
    if not targets:
        return
    with timed(cfg, ex, "nondiff"):
        placed = place_args(cfg, ex, diff=targets, sentinel=False)
        try:
            outs = call_impl(cfg, ex, values_of(placed), fill=NAN)
        except VerificationError as e:
            # refusing an input that requires grad where there is no gradient is torch's own answer
            # ("not differentiable with respect to argument 'weight'"): no gradient, as expected
            if e.check != "raises":
                raise
            record(cfg, ex, "nondiff")
            return
        gp = {
            j: lay.place(ex.g_seen[j], dtype=cfg.dtype, device=cfg.device, layout=ex.g_layouts[j])
            for j in ex.float_outs
        }
        try:
            with poisoned(NAN):
                grads = torch.autograd.grad(
                    [outs[j] for j in ex.float_outs],
                    [placed[i].tensor for i in targets],
                    [gp[j].tensor for j in ex.float_outs],
                    allow_unused=True,
                )
        except RuntimeError as e:  # "the derivative for 'weight' is not implemented": also no gradient
            if "not implemented" in str(e) or "does not require grad" in str(e):
                record(cfg, ex, "nondiff")
                return
            raise
        for i, g in zip(targets, grads, strict=True):
            if g is not None and bool(torch.any(g != 0)):
                fail(
                    cfg,
                    ex,
                    "nondiff",
                    [
                        f"arg{i} is not differentiable (the reference VJP gives None) but the "
                        f"implementation returned a nonzero gradient for it"
                    ],
                )
        record(cfg, ex, "nondiff")


# ---------------------------------------------------------------------------------------------
# finite differences
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Directional:
    """A directional finite difference along ``vs`` and what it was taken with."""

    h: float  # the step
    seed: int  # the directions' seed, for the report
    vs: list[np.ndarray]  # one direction per differentiable argument
    grad_outputs: dict[int, np.ndarray]  # per float output
    slopes: list[np.ndarray | None]  # |dphi/dx| over the stencil, from the reference VJP
    estimate: float
    error: float  # its error bound


def check_finite_differences(cfg: Config, ex: Example, *, draw_seed: Callable[[], int]) -> None:
    """Checks 'backward_fd', 'reference_fd' and 'jacobian' on the example's gradients, skipped
    (and counted as such) when a kink is too close or there is no derivative to take. The
    directions' seed comes from ``draw_seed`` (Hypothesis' draw, so it replays and shrinks)."""
    h = fd.step(ex.arrays, ex.diff, kinks=cfg.kinks)
    if h is None or _overflowed(cfg, ex):
        for check in ("backward_fd", "reference_fd"):
            record(cfg, ex, check, skipped=True)
        return
    seed = draw_seed()
    vs = fd.directions(seed, ex.arrays, ex.diff)
    difference = check_backward_fd(cfg, ex, h=h, seed=seed, vs=vs)
    if difference is None:
        return
    if (
        cfg.reference_vjp is not None
        and cfg.reference is not None
        and all(ex.ref_grads[i] is not None for i in ex.diff)
    ):
        check_reference_fd(cfg, ex, difference)
    if cfg.jacobian != "off":
        check_jacobian(cfg, ex, h=h)


def _overflowed(cfg: Config, ex: Example) -> bool:
    """Whether a gradient is inf where the reference's lies beyond the dtype's range (with the same
    sign): check 'backward' judged that overflow right (a correct fp16 kernel summing 8194 terms of
    -9 overflows), and a difference of finite forwards cannot judge an infinite gradient."""
    u = TABLE[table_row(cfg.dtype)[0]].u_out
    for i, g in zip(ex.diff, ex.grads, strict=True):
        r = ex.ref_grads[i]
        if g is None or r is None:
            continue
        a, r = to_numpy(g), np.asarray(r, dtype=np.float64)
        if np.shape(a) != np.shape(r):
            continue
        if (np.isinf(a) & past_range(r, cfg.dtype, u) & (np.sign(a) == np.sign(r))).any():
            return True
    return False


#: Step divisors of the second opinions a finite-difference check takes before it fails.
REFINE_STEPS = (8, 64)


def check_backward_fd(cfg: Config, ex: Example, *, h: float, seed: int, vs: list[np.ndarray]) -> Directional | None:
    """Check 'backward_fd': <impl VJP, v> against the finite difference of the float64 forward
    along v, within the gradient tolerance summed along |v| plus the difference's error bound.
    Where that fails, the difference is taken again at smaller steps (:data:`REFINE_STEPS`) before
    any verdict: Richardson's error estimate holds once h is below the scale on which the function
    bends, which a row's spread (a norm of a near-constant row) can put far below the inputs' scale;
    a wrong VJP is off by the same amount at every step. Where the implementation's own float64
    forward is what is differenced, a last opinion differences the reference instead
    (:func:`_reference_opinion`). Returns the difference, or None (skipped) where the forward is not
    finite near x."""
    grad_outputs = {j: ex.g_seen[j].numpy() for j in ex.float_outs}

    def difference(step: float, forward: Callable | None = None) -> tuple[list[Any], float, float]:
        slopes = fd.slopes(
            cfg.reference_vjp, ex.arrays, diff=ex.diff, vs=vs, h=step, ref_grads=ex.ref_grads, g_arrays=ex.g_arrays
        )
        est, fd_err = fd.directional(
            forward or cfg.forward64,
            ex.arrays,
            diff=ex.diff,
            vs=vs,
            grad_outputs=grad_outputs,
            h=step,
            slopes=slopes,
            depth=cfg.depth_of(ex.arrays),
        )
        return slopes, est, fd_err

    with timed(cfg, ex, "backward_fd"):
        slopes, est, fd_err = difference(h)
        if not (np.isfinite(est) and np.isfinite(fd_err)):
            # the forward is NaN or inf near x (an all-ignored mean loss): no derivative there
            record(cfg, ex, "backward_fd", skipped=True)
            return None
        tol_g = cfg.tolerance(ex.arrays, grad=True)
        lhs = sum(
            float(np.sum((np.zeros(np.shape(v)) if g is None else to_numpy(g)) * v))
            for g, v in zip(ex.grads, vs, strict=True)
        )
        err = abs(lhs - est)
        base = _baseline_errors(cfg, ex, grad=True)  # the baseline's gradient error, summed along |v|
        allow = sum(_allowance(cfg, base.get(i)) * float(np.sum(np.abs(v))) for i, v in zip(ex.diff, vs, strict=True))
        bound = _directional_bound(ex, tol_g, vs, None) + allow
        if err > bound + 2 * fd_err and tol_g.sens:  # the cancellation term only where it is needed
            bound = _directional_bound(ex, tol_g, vs, _sensitivity(cfg, ex, grad=True)) + allow
        for factor in REFINE_STEPS:  # a second opinion at a smaller step before a verdict
            if not np.isfinite(lhs) or err <= bound + 2 * fd_err:
                break
            slopes_r, est_r, fd_err_r = difference(h / factor)
            if np.isfinite(est_r) and np.isfinite(fd_err_r) and abs(lhs - est_r) <= bound + 2 * fd_err_r:
                h, slopes, est, fd_err = h / factor, slopes_r, est_r, fd_err_r
                err = abs(lhs - est)
        if np.isfinite(lhs) and err > bound + 2 * fd_err and _reference_opinion(cfg):
            slopes_r, est_r, fd_err_r = difference(h, cfg.reference_forward)
            if np.isfinite(est_r) and np.isfinite(fd_err_r) and abs(lhs - est_r) <= bound + 2 * fd_err_r:
                slopes, est, fd_err = slopes_r, est_r, fd_err_r
                err = abs(lhs - est)
        tol_total = bound + 2 * fd_err
        c = Comparison(_ratio(err, tol_total), actual=lhs, expected=est, error=err, tol=tol_total)
        if not np.isfinite(lhs) or c.ratio > 1:
            fail(
                cfg,
                ex,
                "backward_fd",
                [
                    f"<impl VJP, v> = {lhs!r} but the finite difference of the float64 "
                    f"{'implementation' if cfg.f64_impl else 'reference'} along v gives {est!r}",
                    f"|err|={err:.4g} > tol={tol_total:.4g} (gradient tolerance summed along |v|: {bound:.3g}; "
                    f"finite-difference error bound: {fd_err:.3g}; step h={h:.3g}, and smaller steps down to "
                    f"h/{REFINE_STEPS[-1]} disagree too"
                    + (", as does the reference's own difference" if _reference_opinion(cfg) else "")
                    + f"; v: signed random, max-norm 1, seed {seed})",
                ],
            )
        record(cfg, ex, "backward_fd", c)
    return Directional(h=h, seed=seed, vs=vs, grad_outputs=grad_outputs, slopes=slopes, estimate=est, error=fd_err)


def _directional_bound(ex: Example, tol: Any, vs: list[np.ndarray], found: list[Any] | None) -> float:
    """The gradient tolerance summed along |v| (with the cancellation term where ``found``)."""
    bound = 0.0
    for i, g, v in zip(ex.diff, ex.grads, vs, strict=True):
        ref = ex.ref_grads[i] if ex.ref_grads[i] is not None else (np.zeros(np.shape(v)) if g is None else to_numpy(g))
        mag = None if ex.grad_mags is None else ex.grad_mags[i]
        sen = None if found is None else found[i]
        bound += float(np.sum(tol.bound(np.asarray(ref, dtype=np.float64), mag, sen) * np.abs(v)))
    return bound


def _reference_opinion(cfg: Config) -> bool:
    """Whether a failing finite-difference check may ask the reference's float64 forward for a last
    opinion: when the difference was of the implementation's own float64 forward (``f64_impl``).
    Its rounding can cancel inside (torch's group_norm computes x * a + b with a = w / sqrt(eps)
    where a group has one element, exactly b in arithmetic), which the difference divides by the
    step; a VJP that agrees with the reference's derivative is right, and the forward check judges
    the forward itself. A wrong VJP disagrees with both."""
    return cfg.f64_impl and cfg.ref is not None


def check_reference_fd(cfg: Config, ex: Example, difference: Directional) -> None:
    """Check 'reference_fd': the reference VJP along the same direction against the finite
    difference of the reference forward, in float64, tight: a wrong reference shows here."""
    vs = difference.vs
    with timed(cfg, ex, "reference_fd"):
        if cfg.f64_impl:
            est_r, fd_err_r = fd.directional(
                cfg.reference_forward,
                ex.arrays,
                diff=ex.diff,
                vs=vs,
                grad_outputs=difference.grad_outputs,
                h=difference.h,
                slopes=difference.slopes,
                depth=cfg.depth_of(ex.arrays),
            )
        else:  # the backward_fd difference was of the reference already
            est_r, fd_err_r = difference.estimate, difference.error
        lhs_r = float(sum(np.sum(np.asarray(ex.ref_grads[i]) * v) for i, v in zip(ex.diff, vs, strict=True)))
        absr = float(sum(np.sum(np.abs(np.asarray(ex.ref_grads[i]) * v)) for i, v in zip(ex.diff, vs, strict=True)))
        exact_part = (cfg.depth_of(ex.arrays) + 8) * fd.EPS64 * absr * 4
        h = difference.h
        for factor in REFINE_STEPS:  # a second opinion at a smaller step, as in backward_fd
            if not np.isfinite(lhs_r) or abs(lhs_r - est_r) <= 2 * fd_err_r + exact_part:
                break
            slopes = fd.slopes(
                cfg.reference_vjp, ex.arrays, diff=ex.diff, vs=vs, h=h / factor, ref_grads=ex.ref_grads,
                g_arrays=ex.g_arrays,
            )  # fmt: skip
            est2, err2 = fd.directional(
                cfg.reference_forward, ex.arrays, diff=ex.diff, vs=vs, grad_outputs=difference.grad_outputs,
                h=h / factor, slopes=slopes, depth=cfg.depth_of(ex.arrays),
            )  # fmt: skip
            if np.isfinite(est2) and np.isfinite(err2) and abs(lhs_r - est2) <= 2 * err2 + exact_part:
                est_r, fd_err_r = est2, err2
        tol_r = 2 * fd_err_r + exact_part
        err_r = abs(lhs_r - est_r)
        c = Comparison(_ratio(err_r, tol_r), actual=lhs_r, expected=est_r, error=err_r, tol=tol_r)
        if c.ratio > 1 or not np.isfinite(lhs_r):
            fail(
                cfg,
                ex,
                "reference_fd",
                [
                    f"the reference VJP gives <vjp, v> = {lhs_r!r} but the finite difference of "
                    "the reference forward gives "
                    f"{est_r!r} (|err|={err_r:.4g} > tol={tol_r:.4g}): the reference forward or VJP is wrong"
                ],
            )
        record(cfg, ex, "reference_fd", c)


def _impl_jacobian(
    cfg: Config, ex: Example, *, out_sizes: Sequence[int], n_in: int, baseline: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """The implementation's (or, with ``baseline``, the baseline's) Jacobian at the dtype under
    test, one backward per element of the float outputs (``out_sizes`` elements each), on
    contiguous copies of the inputs; with ``vjp_terms``, the op's own sum of |terms| per entry too."""
    inputs = []
    for i, a in enumerate(ex.args):
        if a.kind == "value":
            inputs.append(a.value)
        else:
            t = a.seen.to(cfg.dtype if a.kind == "float" else a.seen.dtype).to(cfg.device).contiguous()
            inputs.append(t.requires_grad_(i in ex.diff))
    n_out = sum(out_sizes)
    j_impl = np.zeros((n_out, n_in))
    j_terms = np.zeros((n_out, n_in)) if cfg.vjp_terms is not None and not baseline else None
    row = 0
    for j, size in zip(ex.float_outs, out_sizes, strict=True):
        for flat in range(size):
            # a fresh forward per backward (single-use backwards)
            outs = as_tuple(cfg.baseline(*inputs)) if baseline else call_impl(cfg, ex, inputs, fill=NAN)
            gs = [torch.zeros_like(outs[k], memory_format=torch.contiguous_format) for k in ex.float_outs]
            gs[ex.float_outs.index(j)].view(-1)[flat] = 1
            found = [outs[k] for k in ex.float_outs], [inputs[i] for i in ex.diff], gs
            if baseline:
                grads = torch.autograd.grad(*found, allow_unused=True)
            else:
                grads = call_backward(cfg, ex, *found, fill=NAN)
            if j_terms is not None:  # the op's own sum of |terms| for this row's VJP
                terms = as_tuple(cfg.vjp_terms(*ex.arrays, *[to_numpy(gk) for gk in gs]))
                j_terms[row] = np.concatenate([np.abs(np.asarray(terms[i], dtype=np.float64)).ravel() for i in ex.diff])
            j_impl[row] = np.concatenate(
                [
                    np.zeros(np.size(ex.arrays[i])) if g is None else to_numpy(g).ravel()
                    for i, g in zip(ex.diff, grads, strict=True)
                ]
            )
            row += 1
    return j_impl, j_terms


def _baseline_jacobian_allowance(
    cfg: Config, ex: Example, j_fd: np.ndarray, out_sizes: Sequence[int], n_in: int
) -> float:
    """``baseline_factor`` times the baseline's worst Jacobian error against the finite differences."""
    if cfg.baseline is None:
        return 0.0
    try:
        j_base, _ = _impl_jacobian(cfg, ex, out_sizes=out_sizes, n_in=n_in, baseline=True)
    except Exception:  # the baseline does not run here: no allowance
        return 0.0
    with np.errstate(invalid="ignore"):
        diff = np.abs(j_base - j_fd)
    worst = float(np.max(diff, where=np.isfinite(diff), initial=0.0))
    ex.report.stat(cfg.dname, "jacobian").baseline_error = max(
        worst, np.nan_to_num(ex.report.stat(cfg.dname, "jacobian").baseline_error, nan=0.0)
    )
    return cfg.baseline_factor * worst


def _jacobian_sensitivity(cfg: Config, ex: Example, tol: Any) -> np.ndarray | float:
    """The cancellation term for Jacobian entries, one value per input element (column): the
    sensitivity of the reference VJP with every grad_output 1, whose entry i is column i's sum (the
    entry itself for an elementwise op). One VJP and its probes, not one per row."""
    if not tol.sens or cfg.reference_vjp is None or ex.ref_out is None:
        return 0.0
    ones = [np.ones(np.shape(r)) if j in ex.float_outs else None for j, r in enumerate(ex.ref_out)]
    present = [g for g in ones if g is not None]
    base = as_tuple(cfg.reference_vjp(*ex.arrays, *ones))
    found = _sensitivity_of(cfg, cfg.reference_vjp, ex.arrays, list(base), seed=2, extra=present, grad=True)
    cols = []
    for i in ex.diff:
        s = found[i] if found is not None else None
        size = int(np.size(ex.arrays[i]))
        cols.append(np.zeros(size) if s is None else (tol.sens * s.scale + s.noise).ravel())
    return np.concatenate(cols)[None, :]


def check_jacobian(cfg: Config, ex: Example, *, h: float) -> None:
    """Check 'jacobian': the implementation's full Jacobian entry by entry against finite
    differences, for small inputs and outputs (``cfg.jacobian == "auto"``) or always."""
    n_in = sum(np.size(ex.arrays[i]) for i in ex.diff)
    if cfg.jacobian == "auto" and n_in > JACOBIAN_MAX:
        return
    with timed(cfg, ex, "jacobian"):
        base = cfg.forward64(ex.arrays)
        out_sizes = [int(np.prod(np.shape(base[j]))) for j in ex.float_outs]
        n_out = sum(out_sizes)
        if (cfg.jacobian == "auto" and n_out > JACOBIAN_MAX) or n_out == 0 or n_in == 0:
            return
        j_impl, j_terms = _impl_jacobian(cfg, ex, out_sizes=out_sizes, n_in=n_in)
        j_fd, j_err = fd.jacobian_columns(
            cfg.forward64,
            ex.arrays,
            base=base,
            diff=ex.diff,
            float_outs=ex.float_outs,
            h=h,
            depth=cfg.depth_of(ex.arrays),
        )
        tol = cfg.tolerance(ex.arrays, grad=True)
        bound = tol.bound(j_fd, j_terms) + 2 * j_err + _baseline_jacobian_allowance(cfg, ex, j_fd, out_sizes, n_in)
        err = np.abs(j_impl - j_fd)
        if (err > bound).any() and tol.sens:  # the cancellation term only where it is needed
            bound = bound + _jacobian_sensitivity(cfg, ex, tol)
        if (err > bound).any() and _reference_opinion(cfg):
            j_ref, j_ref_err = fd.jacobian_columns(
                cfg.reference_forward,
                ex.arrays,
                base=cfg.reference_forward(ex.arrays),
                diff=ex.diff,
                float_outs=ex.float_outs,
                h=h,
                depth=cfg.depth_of(ex.arrays),
            )
            extra = bound - tol.bound(j_fd, j_terms) - 2 * j_err  # the baseline's allowance, the cancellation term
            bound_r = tol.bound(j_ref, j_terms) + 2 * j_ref_err + extra  # the same bound about the reference's
            if (np.abs(j_impl - j_ref) <= bound_r).all():
                j_fd, bound, err = j_ref, bound_r, np.abs(j_impl - j_ref)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(np.isfinite(err), err / bound, np.inf)
        o, i_ = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        c = Comparison(
            float(ratio[o, i_]),
            index=(int(o), int(i_)),
            actual=float(j_impl[o, i_]),
            expected=float(j_fd[o, i_]),
            error=float(err[o, i_]),
            tol=float(bound[o, i_]),
            n_bad=int((ratio > 1).sum()),
        )
        if c.ratio > 1:
            fail(
                cfg,
                ex,
                "jacobian",
                [
                    f"Jacobian entry d out[{o}] / d in[{i_}] (flattened over outputs and differentiable "
                    f"inputs): impl={c.actual!r}, finite differences={c.expected!r}",
                    f"|err|={c.error:.4g} > tol={c.tol:.4g}; {c.n_bad} of {ratio.size} entries over tolerance",
                    f"tolerance: {tol.describe()} + finite-difference error"
                    + ("; the reference's own differences disagree too" if _reference_opinion(cfg) else ""),
                ],
            )
        record(cfg, ex, "jacobian", c)
