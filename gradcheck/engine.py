"""The verification engine: :func:`verify` (property-based, every check) and :func:`check_gradients`.

One example runs the implementation on inputs laid out in poisoned buffers, compares forward and
backward with the NumPy float64 reference, ties the backward to finite differences of a float64
forward along a signed random direction (full Jacobian for small inputs), checks the reference
VJP against its own forward, then side checks: guard bands, unchanged inputs, output metadata,
zero grad_output, and a rerun on fresh copies with a different poison (:func:`run_example`).
When ``fn`` calls (or is) a ``torch.library`` custom op, ``torch.library.opcheck``'s tests run on
each op with the arguments of the example's calls (:mod:`gradcheck.opcheck`): its schema and
fake-kernel tests right after the first call, before the forward is judged; its autograd tests
on the call with inputs requiring grad, before the backward runs.

The pieces: :mod:`gradcheck.config` (what is verified, at one dtype), :mod:`gradcheck.example`
(one example's state), :mod:`gradcheck.checks` (one function per check), :mod:`gradcheck.fd`
(finite differences), :mod:`gradcheck.compare` (elementwise comparison), :mod:`gradcheck.hooks`
(default device, poisoned allocation), :mod:`gradcheck.opcheck` (custom-op calls and opcheck).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import hypothesis
import numpy as np
import torch
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from hypothesis.database import ExampleDatabase
from hypothesis.errors import FlakyFailure
from hypothesis.reporting import current_reporter, with_reporter

from gradcheck import checks, fd, isolation, profiles
from gradcheck import layouts as lay
from gradcheck import opcheck as oc
from gradcheck.compare import as_tuple
from gradcheck.config import Config, RunState
from gradcheck.example import Example, describe, draw_grad_output, place_args, prepare_args, values_of
from gradcheck.hooks import default_device
from gradcheck.oracle import Reference
from gradcheck.report import FAMILIES, Report, VerificationError

__all__ = ["BudgetSpent", "check_gradients", "hypothesis_test", "run_example", "verify"]

NAN = float("nan")


# ---------------------------------------------------------------------------------------------
# one example
# ---------------------------------------------------------------------------------------------


def _draw_backward_inputs(cfg: Config, ex: Example, data: st.DataObject) -> None:
    """A grad_output per float output, the reference VJP for it, and which arguments are differentiable."""
    for j in ex.float_outs:
        ex.g_seen[j] = draw_grad_output(data, dtype=cfg.dtype, shape=ex.ref_out[j].shape, j=j)
    ex.g_arrays = [ex.g_seen[j].numpy() if j in ex.g_seen else None for j in range(len(ex.ref_out))]
    if cfg.reference_vjp is not None:
        ex.ref_grads = as_tuple(cfg.reference_vjp(*ex.arrays, *ex.g_arrays))
        if len(ex.ref_grads) != len(ex.args):
            raise TypeError(f"reference_vjp returned {len(ex.ref_grads)} entries for {len(ex.args)} arguments")
    ex.diff = [
        i for i, a in enumerate(ex.args) if a.kind == "float" and (ex.ref_grads is None or ex.ref_grads[i] is not None)
    ]


def _backward_pass(cfg: Config, ex: Example) -> tuple[list[Any], dict[int, lay.Placed]]:
    """The forward with ``ex.diff`` requiring grad, then one backward with the drawn grad_outputs
    (sets ``ex.outs`` and ``ex.grads``). Returns the placed arguments and grad_outputs."""
    placed = place_args(cfg, ex, diff=ex.diff, sentinel=False)
    with checks.timed(cfg, ex, "backward"):
        ex.outs = checks.call_impl(cfg, ex, values_of(placed), fill=NAN, record=True)
    # opcheck's autograd tests on the calls with inputs requiring grad, before the backward runs:
    # a missing autograd formula is a registration bug, not a crash of the backward
    _soft(checks.check_opcheck, cfg, ex, tests=oc.AUTOGRAD_TESTS, final=True)
    g_placed = {
        j: lay.place(ex.g_seen[j], dtype=cfg.dtype, device=cfg.device, layout=ex.g_layouts[j]) for j in ex.float_outs
    }
    ex.context = describe(ex, placed, g_placed)
    with checks.timed(cfg, ex, "backward"):
        ex.grads = checks.call_backward(
            cfg,
            ex,
            [ex.outs[j] for j in ex.float_outs],
            [placed[i].tensor for i in ex.diff],
            [g_placed[j].tensor for j in ex.float_outs],
            fill=NAN,
        )
    return placed, g_placed


def run_example(cfg: Config, report: Report, drawn: Any, data: st.DataObject) -> None:
    """Every check on one drawn tuple of arguments; ``data`` draws layouts, grad_outputs and directions."""
    if not isinstance(drawn, tuple):
        drawn = (drawn,)
    args = prepare_args(drawn, cfg.dtype)
    ex = Example(args=args, arrays=[a.array for a in args], report=report)

    # reference forward first: NumPy, away from the implementation's allocator
    ex.ref_out = cfg.reference_forward(ex.arrays) if cfg.reference else None
    for i, a in enumerate(args):
        if a.kind != "value":
            ex.layouts[i] = data.draw(lay.layouts(a.seen.dim(), kinds=cfg.layouts.get(i)), label=f"layout of arg{i}")

    # ---- pass 1: NaN poison ------------------------------------------------------------------
    placed = place_args(cfg, ex, diff=None, sentinel=False)
    ex.context = describe(ex, placed)
    with checks.timed(cfg, ex, "forward"):
        ex.outs = checks.call_impl(cfg, ex, values_of(placed), fill=NAN, record=True)
    # the custom ops' registrations first: a schema that hides a mutation, a wrong fake kernel
    # explain what the forward's checks would see
    _soft(checks.check_opcheck, cfg, ex, tests=oc.FORWARD_TESTS, final=False)
    if ex.ref_out is None:  # no reference: the implementation at float64 stands in
        try:
            ex.ref_out = cfg.forward64(ex.arrays)
        except Exception as e:
            raise TypeError(
                f"{cfg.name}: with no reference, the implementation at float64 stands in for one, and at float64 "
                f"it raised {type(e).__name__}: {e}. Give reference= (a NumPy float64 function, or a torch one "
                "such as torch.nn.functional.layer_norm, which runs in float64 on the CPU), or support float64."
            ) from e
    try:
        ex.float_outs = checks.check_outputs(cfg, ex)
    except checks.HeldOut:  # outputs of the wrong kind, reported already: nothing else can be judged
        hypothesis.reject()
    _soft(checks.check_forward, cfg, ex)
    _soft(checks.check_guards, cfg, ex, placed, stage="forward")

    if cfg.backward and ex.float_outs:
        _draw_backward_inputs(cfg, ex, data)
    if not ex.diff:
        _soft(checks.check_opcheck, cfg, ex, tests=oc.AUTOGRAD_TESTS, final=True)
        _soft(checks.check_rerun, cfg, ex)
        return

    # pass 1 again, now with the differentiable inputs requiring grad
    for j in ex.float_outs:
        ex.g_layouts[j] = data.draw(lay.layouts(ex.g_seen[j].dim()), label=f"layout of grad_output{j}")
    try:
        placed, g_placed = _backward_pass(cfg, ex)
    except VerificationError as e:
        # a gradient the implementation need not give, which it refuses to be asked for (torch on
        # cross-entropy's class weight: "not differentiable with respect to argument 'weight'"):
        # verify the others without it (a crash for another reason crashes again below)
        optional = [i for i in ex.diff if i in cfg.optional_grads]
        if not (optional and e.check == "raises"):
            raise
        ex.diff = [i for i in ex.diff if i not in cfg.optional_grads]
        if not ex.diff:
            return
        placed, g_placed = _backward_pass(cfg, ex)
    # an optional gradient not given (None) is not demanded; one given is checked
    given_ = [k for k, i in enumerate(ex.diff) if not (ex.grads[k] is None and i in cfg.optional_grads)]
    if len(given_) < len(ex.diff):
        ex.diff = [ex.diff[k] for k in given_]
        ex.grads = tuple(ex.grads[k] for k in given_)
        if not ex.diff:
            return
    if ex.ref_grads is None:  # no reference VJP: finite differences alone judge the backward
        ex.ref_grads = [None] * len(args)
    try:
        checks.check_gradient_outputs(cfg, ex)
    except checks.HeldOut:  # gradients of the wrong kind, reported already
        hypothesis.reject()
    _soft(checks.check_backward, cfg, ex)
    _soft(checks.check_guards, cfg, ex, placed, stage="backward", g_placed=g_placed)
    _soft(checks.check_zero_grad, cfg, ex)

    # ---- finite differences --------------------------------------------------------------------
    _soft(
        checks.check_finite_differences,
        cfg,
        ex,
        draw_seed=lambda: data.draw(st.integers(0, 2**32 - 1), label="direction seed"),
    )

    # ---- pass 2: sentinel poison, fresh buffers ------------------------------------------------
    _soft(checks.check_rerun, cfg, ex)
    _soft(checks.check_nondiff, cfg, ex)


def _soft(check: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Run ``check``; a held-out check that fails (a defect reported already) is skipped."""
    with contextlib.suppress(checks.HeldOut):
        check(*args, **kwargs)


# ---------------------------------------------------------------------------------------------
# Hypothesis
# ---------------------------------------------------------------------------------------------


class _KeyedDatabase(ExampleDatabase):
    """``inner`` with every key prefixed. Hypothesis keys the examples it stores by the test
    function, which is the same inner function for every op; the prefix (op and dtype) keeps a
    stored failure of one op from replaying on another."""

    def __init__(self, inner: ExampleDatabase, prefix: bytes) -> None:
        super().__init__()
        self.inner = inner
        self.prefix = prefix

    def __repr__(self) -> str:
        return f"_KeyedDatabase({self.inner!r}, {self.prefix!r})"

    def save(self, key: bytes, value: bytes) -> None:
        self.inner.save(self.prefix + key, value)

    def fetch(self, key: bytes) -> Iterable[bytes]:
        return self.inner.fetch(self.prefix + key)

    def delete(self, key: bytes, value: bytes) -> None:
        self.inner.delete(self.prefix + key, value)

    def move(self, src: bytes, dest: bytes, value: bytes) -> None:
        self.inner.move(self.prefix + src, self.prefix + dest, value)


def _settings(max_examples: int | None, key: str) -> hypothesis.settings:
    parent = hypothesis.settings()  # the active profile
    database = parent.database
    if database is not None:
        database = _KeyedDatabase(database, f"gradcheck.verify[{key}]:".encode())
    return hypothesis.settings(
        parent,
        max_examples=max_examples if max_examples is not None else parent.max_examples,
        deadline=None,
        print_blob=True,
        database=database,
        # one shrunk counterexample per verification: a VerificationError, never an ExceptionGroup
        # of distinct failures (fixing the first usually fixes or changes the others)
        report_multiple_bugs=False,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
            HealthCheck.differing_executors,
            # draws an implementation does not support, or that hit a held-out crash, are rejected
            # on purpose (and counted in the report)
            HealthCheck.filter_too_much,
        ],
    )


class BudgetSpent(KeyboardInterrupt):
    """Raised through Hypothesis when a run's time budget is spent: generation stops there, or
    shrinking keeps the smallest failure so far. Hypothesis treats an interrupt as the user's stop:
    not a failure, nothing recorded for the example (any other exception would be taken for a
    failure, and a rejection would contradict the runs of the same choices it has recorded).
    :func:`verify` catches it; it never reaches the caller."""


def _is_final() -> bool:
    """Whether Hypothesis is replaying its final, shrunk example (which must run, whatever the budget)."""
    try:
        from hypothesis.control import current_build_context

        return bool(current_build_context().is_final)
    except Exception:  # outside a test context, or a Hypothesis without the attribute
        return False


def _float_size(drawn: tuple) -> int:
    return sum(a.numel() for a in drawn if isinstance(a, torch.Tensor) and a.is_floating_point())


def _gate(cfg: Config, drawn: tuple) -> None:
    """Before an example runs: stop at the time budget (raise :class:`BudgetSpent`), and reject (count,
    do not run) a draw the implementation does not support, or one too costly for what is left of
    the budget: over twice the mean size, and predicted (the mean cost per example after the first,
    scaled by size) to end past the budget. The verdict is kept per draw size (``RunState.admitted``)."""
    state = cfg.state
    now = time.perf_counter()
    if state.started is None:
        state.started = now
    generating = state.found_at is None
    if not _is_final():
        if generating and cfg.budget is not None and state.examples and now - state.started > cfg.budget:
            state.budget_spent = state.stopped = True
            raise BudgetSpent
        if not generating and cfg.shrink_budget is not None and now - state.failed_at > cfg.shrink_budget:
            state.stopped = True
            raise BudgetSpent
    if cfg.supports is not None and not cfg.supports(*drawn):
        if generating:
            state.not_run["not supported (supports=)"] = state.not_run.get("not supported (supports=)", 0) + 1
        hypothesis.reject()
    size = _float_size(drawn)
    admit = state.admitted.get(size)
    if admit is None and generating and cfg.budget is not None and state.examples >= 3 and not _is_final():
        # the first example carries compilation and warm-up: the costs are those of the others
        spent, warm = now - state.started, state.examples - 1
        mean_cost = (now - state.first_done) / warm
        mean_size = max((state.sizes - state.first_size) / warm, 1.0)
        cost = mean_cost * max(1.0, size / mean_size)  # the cost of a draw grows with its size
        admit = not (size > 2 * mean_size and spent + cost > cfg.budget)
        state.admitted[size] = admit
    if admit is False:
        why = "too costly for the time budget"
        state.not_run[why] = state.not_run.get(why, 0) + 1
        hypothesis.reject()
    state.admitted.setdefault(size, True)


def hypothesis_test(
    cfg: Config, report: Report, strategy: st.SearchStrategy, *, max_examples: int | None, round_: str = ""
) -> Callable[[], None]:
    """The Hypothesis test of ``cfg``: :func:`run_example` on each drawn example. Examples it
    stores are keyed by op and dtype (and the round's held-out features); a derandomized profile
    draws a sequence of its own per op and dtype (seeded from them), as it would for distinct test
    functions. The time budget and ``supports`` gate each example (:func:`_gate`)."""
    key = f"{cfg.name}, {cfg.dname}"
    active = _settings(max_examples, key + round_)

    def run(drawn: Any, data: st.DataObject) -> None:
        drawn_t = drawn if isinstance(drawn, tuple) else (drawn,)
        _gate(cfg, drawn_t)
        state = cfg.state
        state.examples += 1
        state.sizes += _float_size(drawn_t)
        if state.examples == 1:
            state.first_size = state.sizes
        if cfg.example_log is not None:  # isolated: record the example before it can kill the process
            cfg.example_log.write(drawn_t, isolation.describe_drawn(drawn_t))
        try:
            run_example(cfg, report, drawn, data)
        except VerificationError as e:
            if state.found_at is None:
                state.found_at, state.failed_at, state.first = state.examples, time.perf_counter(), type(e)
            state.first_seen.setdefault(type(e), state.examples)
            e.found_at = state.first_seen[type(e)]
            state.latest[type(e)] = e
            raise
        finally:
            if state.first_done is None:
                state.first_done = time.perf_counter()

    # what Hypothesis' reports call the test (an identifier: it prints a call of it)
    run.__name__ = run.__qualname__ = re.sub(r"\W+", "_", f"verify_{cfg.name}_{cfg.dname}")
    test = active(given(drawn=strategy, data=st.data())(run))
    if active.derandomize:
        test = hypothesis.seed(int.from_bytes(hashlib.sha256(key.encode()).digest()[:16], "big"))(test)
    return test


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------


def verify(
    fn: Callable[..., Any],
    inputs: st.SearchStrategy | Callable[[torch.dtype], st.SearchStrategy],
    *,
    reference: Callable[..., Any] | None = None,
    reference_vjp: Callable[..., Any] | None = None,
    dtypes: Sequence[torch.dtype] = (torch.float32,),
    name: str | None = None,
    max_examples: int | None = None,
    depth: Callable[..., int] | int | None = None,
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
    opcheck: str = "auto",
    opcheck_examples: int | str | None = "profile",
    rounding_model: Callable[..., Any] | None = None,
    layouts: dict[int | str, str | Sequence[str]] | None = None,
    supports: Callable[..., bool] | None = None,
    optional_grads: Sequence[int | str] = (),
    baseline: Callable[..., Any] | None = None,
    baseline_factor: float = 2.0,
    budget: float | str | None = "profile",
    shrink_budget: float | str | None = "profile",
    max_findings: int = 3,
    isolate: bool = False,
) -> Report:
    """Verify ``fn`` forward and backward on inputs drawn from ``inputs``, at each of ``dtypes``.

    ``inputs`` is a Hypothesis strategy of positional-argument tuples (float64 CPU tensors, integer
    tensors, plain values), or a function dtype -> such a strategy. ``reference(*arrays)`` is the
    NumPy float64 forward; ``reference_vjp(*arrays, *grad_outputs)`` returns one gradient per
    argument (None: no gradient). Without a reference, ``fn`` at float64 stands in for it (then
    include float64 in what ``fn`` supports). ``reference`` may also be a torch callable
    (``F.layer_norm``, a module, a lambda calling torch): it then runs in float64 on the CPU and its
    VJP comes from torch.autograd, itself checked against finite differences ('reference_fd').
    ``depth``, ``multilinear``, ``ulps`` feed the tolerance (see ``gradcheck.tolerances``): they
    tighten it, none is needed. ``depth`` (K, the longest sum) defaults to the longest dimension of
    any float argument (:func:`gradcheck.config.auto_depth`); where results cancel, the bound
    scales with the reference's sensitivity to relative perturbations of the inputs and
    grad_outputs (:mod:`gradcheck.sensitivity`), unless ``multilinear``, ``terms`` or
    ``vjp_terms`` give the exact sum of |terms|. A torch oracle, or ``rounding_model`` (a torch
    callable of the same function, next to a NumPy reference; ``verify_op`` gives the catalog's
    ``torch_fn``), is also run with every intermediate result perturbed at one unit of roundoff
    (:class:`gradcheck.oracle.SimulatedRounding`), which shows cancellation inside the algorithm:
    a backward computed from the rounded forward output, a norm at hidden size 1. The term is
    measured only for examples that exceed the bound without it. ``kinks`` is the distance to the
    nearest non-differentiable point; ``jacobian`` is "auto" (full Jacobian for small inputs), "off" or
    "always"; ``tf32`` selects the TF32 row for fp32 (default: on when an fp32 matmul would use
    it, i.e. ``torch.get_float32_matmul_precision() != "highest"``, and the op is ``multilinear``).
    ``terms(*arrays)`` / ``vjp_terms(*arrays, *grad_outputs)`` give the sum of |terms| per element
    of the forward / the VJP for ops whose terms cancel (an affine update, a softmax backward),
    where neither |ref| nor the multilinear bound applies. ``device`` is where ``fn``'s inputs
    are placed; default :func:`gradcheck.hooks.default_device` (the current CUDA device when
    there is one, else the CPU).

    ``opcheck="auto"`` (the default) runs ``torch.library.opcheck``'s tests on every registered
    ``torch.library`` custom op ``fn`` calls (or is), on each example, with the arguments it
    called it with (their layout and dtype; ``requires_grad`` on the call with differentiable
    inputs): check 'opcheck'. "off" never does; a function that calls no custom op is not
    affected either way. ``opcheck_examples=N`` opchecks only the first N examples of each custom
    op at each dtype (None: every example); an op that failed is opchecked on every example after.
    The default, "profile", takes the bound of the active gradcheck profile
    (:func:`gradcheck.profiles.opcheck_examples`; every example under any other profile).

    Preconditions and restrictions: ``layouts`` maps an argument (position or parameter name) to
    the layouts the implementation supports ("contiguous", "dense", or layout kinds of
    :func:`gradcheck.layouts.layouts`): only those are drawn for it. ``supports(*drawn)`` says
    whether the implementation supports a drawn example (at least one row, no label smoothing);
    draws it refuses are not run, and the report counts them. ``optional_grads`` (positions or
    names) are gradients checked when the implementation gives one and never demanded.

    Every distinct defect, not the first: after a failure, verification goes on at that dtype
    with the failing feature held out, up to ``max_findings`` failures: a layout the shrunk
    counterexample still needs (that argument is drawn contiguous from then on, and the report
    says how to declare it; if the same defect shows again with it contiguous, the note is taken
    back), else the failing check and those that judge the same numbers.
    Each failure has its own identity for Hypothesis (check and argument), so shrinking keeps to
    one defect. The raised error is the first; ``error.findings`` holds them all, each with the
    example number at which it was first found (``found_at``).

    Bounded cost: ``budget`` seconds per dtype (examples stop there; the report says how many
    ran) and ``shrink_budget`` seconds of shrinking per failure (the smallest counterexample by
    then is reported); "profile" takes the active gradcheck profile's
    (:data:`gradcheck.profiles.BUDGETS`), None is no bound. Near the budget, draws much larger
    than the mean are skipped (and counted).

    A measuring stick: ``baseline`` is a second implementation at the same dtype (torch's op):
    ``fn``'s error against the reference may exceed the bound by ``baseline_factor`` times the
    baseline's worst error on the same example. The report shows both errors ("baseline's worst").

    Every backward the engine calls runs on a fresh forward, so an implementation whose backward
    may run only once per forward (a fused loss that scales its saved gradient in place) is
    verified as it is used. A forward-only implementation is verified with ``backward=False``.

    A crash is a verdict: with ``isolate=True`` each dtype runs in a forked child process that
    records every example before running it (:mod:`gradcheck.isolation`), so an implementation
    that kills the process (segfault, heap corruption, a poisoned CUDA context) fails check
    'crash' with that example, and the dtypes before it keep their verdicts. The command line
    isolates by default.

    Every allocation ``fn`` makes is poisoned while it runs (:func:`gradcheck.hooks.poisoned`:
    torch's deterministic fill, plus the registered poison hooks of custom allocators).

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
    if opcheck not in ("auto", "off"):
        raise ValueError(f"opcheck={opcheck!r}; expected 'auto' or 'off'")
    if opcheck_examples == "profile":
        opcheck_examples = profiles.opcheck_examples()
    if opcheck_examples is not None and (
        not isinstance(opcheck_examples, int) or isinstance(opcheck_examples, bool) or opcheck_examples < 1
    ):
        raise ValueError(f"opcheck_examples must be >= 1 or None, got {opcheck_examples!r}")
    if max_examples is not None and max_examples < 1:
        raise ValueError(f"max_examples must be >= 1, got {max_examples}")
    name = name or getattr(fn, "__name__", None) or getattr(fn, "_qualname", None) or type(fn).__name__
    dev = torch.device(device) if device is not None else default_device()
    ref = Reference(reference, reference_vjp, rounding_model=rounding_model) if reference is not None else None
    positions = _positions(fn, layouts or {}, "layouts")
    declared = {i: _layout_kinds(k) for i, k in positions.items()}
    optional = frozenset(_positions(fn, dict.fromkeys(optional_grads, True), "optional_grads"))
    if budget == "profile" or shrink_budget == "profile":
        prof_budget, prof_shrink = profiles.budgets()
        budget = prof_budget if budget == "profile" else budget
        shrink_budget = prof_shrink if shrink_budget == "profile" else shrink_budget
    if max_findings < 1:
        raise ValueError(f"max_findings must be >= 1, got {max_findings}")
    report = Report(name)
    errors: list[VerificationError] = []
    t_start = time.perf_counter()
    for dtype in dtypes:
        strategy = inputs(dtype) if callable(inputs) and not isinstance(inputs, st.SearchStrategy) else inputs
        use_tf32 = (
            tf32
            if tf32 is not None
            else (dtype == torch.float32 and multilinear and torch.get_float32_matmul_precision() != "highest")
        )
        base = Config(
            fn=fn,
            name=name,
            dtype=dtype,
            device=dev,
            ref=ref,
            depth=depth,
            multilinear=multilinear,
            ulps=ulps,
            kinks=kinks,
            backward=backward,
            deterministic=deterministic,
            tf32=bool(use_tf32),
            jacobian=jacobian,
            f64_impl=torch.float64 in dtypes or reference is None,
            terms=terms,
            vjp_terms=vjp_terms,
            opcheck=opcheck,
            opcheck_examples=opcheck_examples,
            layouts=declared,
            supports=supports,
            optional_grads=optional,
            baseline=baseline,
            baseline_factor=baseline_factor,
            budget=budget,
            shrink_budget=shrink_budget,
        )
        run_dtype = _verify_dtype_isolated if isolate else _verify_dtype
        errors += run_dtype(base, report, strategy, max_examples=max_examples, max_findings=max_findings)
    report.seconds = time.perf_counter() - t_start
    if errors:
        first = errors[0]
        first.report = report
        first.findings = errors
        if len(errors) > 1:
            others = "\n\n".join(f"[finding {k + 2} of {len(errors)}] {e}" for k, e in enumerate(errors[1:]))
            first.args = (f"{first}\n\n{len(errors) - 1} more distinct failure(s):\n\n{others}",)
        raise first
    return report


def _verify_dtype_isolated(
    base: Config, report: Report, strategy: st.SearchStrategy, *, max_examples: int | None, max_findings: int
) -> list[VerificationError]:
    """:func:`_verify_dtype` in a forked child (:mod:`gradcheck.isolation`): a crash becomes a failure
    of check 'crash' with the example that did it; what the child found otherwise comes back."""

    def job(log: isolation.ExampleLog) -> tuple[Report, list[VerificationError]]:
        child = Report(report.name)
        cfg = dataclasses.replace(base, example_log=log)
        found = _verify_dtype(cfg, child, strategy, max_examples=max_examples, max_findings=max_findings)
        return child, found

    # a child that outlives its budgets several times over is hung: that is a verdict too
    budgets = [b for b in (base.budget, base.shrink_budget) if b is not None]
    timeout = 3 * sum(budgets) * max_findings + 60 if len(budgets) == 2 else None
    outcome, value = isolation.run_isolated(job, timeout=timeout)
    if outcome == "raised":
        raise value
    if outcome == "ok":
        child, found = value
        report.stats.extend(child.stats)
        report.runs.update(child.runs)
        report.failures.extend(child.failures)
        return found
    how, example, args_path = value
    error = isolation.crash_error(base.name, base.dname, how, example, args_path)
    number = re.match(r"example (\d+):", example)
    error.found_at = int(number.group(1)) if number else None
    report.failures.append(str(error))
    report.runs[base.dname] = {
        "examples": error.found_at or 0,
        "seconds": 0.0,
        "not_run": {},
        "crashed": how,
        "findings": [{"check": "crash", "found_at": error.found_at, "round": 1}],
    }
    return [error]


def _verify_dtype(
    base: Config, report: Report, strategy: st.SearchStrategy, *, max_examples: int | None, max_findings: int
) -> list[VerificationError]:
    """Every distinct defect at one dtype, up to ``max_findings``: after each failure the verification
    runs again with the failing feature held out (:func:`_hold_out`), each finding shrunk on its own."""
    findings: list[VerificationError] = []
    run_info: dict[str, Any] = {"examples": 0, "seconds": 0.0, "not_run": {}, "findings": []}
    report.runs[base.dname] = run_info
    cfg = base
    t0 = time.perf_counter()
    for round_ in range(2 * max_findings):  # a layout note taken back costs a round
        if len(findings) >= max_findings:
            break
        if round_:
            left = None if base.budget is None else base.budget - (time.perf_counter() - t0)
            if left is not None and left <= 0:
                break
            held = ",".join(sorted(cfg.held_out)) + ";" + ",".join(f"{i}:{k}" for i, k in sorted(cfg.layouts.items()))
            cfg = dataclasses.replace(cfg, budget=left, state=RunState())
        error = _run_round(cfg, report, strategy, max_examples=max_examples, round_=f"#{held}" if round_ else "")
        state = cfg.state
        run_info["examples"] += state.examples if state.found_at is None else state.found_at
        for why, n in state.not_run.items():
            run_info["not_run"][why] = run_info["not_run"].get(why, 0) + n
        run_info["budget_spent"] = run_info.get("budget_spent", False) or state.budget_spent
        run_info["budget"] = base.budget
        if error is None:
            break
        previous = findings[-1] if findings else None
        if previous is not None and "before_layout" in previous.details and type(error) is type(previous):
            # the same defect with those arguments contiguous: the layout was not its cause. Take the
            # note back and hold out the check instead (this finding is the same one, not another)
            previous.args = (previous.details.pop("before_layout"),)
            previous.details.pop("held_out", None)
            report.failures[-1] = str(previous)
            held_cfg = _hold_out(cfg, error, layouts=False)
            if held_cfg is None:
                break
            cfg = held_cfg
            continue
        findings.append(error)
        report.failures.append(str(error))
        run_info["findings"].append({"check": error.check, "found_at": error.found_at, "round": round_ + 1})
        held_cfg = _hold_out(cfg, error)
        if held_cfg is None:
            break
        cfg = held_cfg
    run_info["seconds"] = time.perf_counter() - t0
    return findings


def _run_round(
    cfg: Config, report: Report, strategy: st.SearchStrategy, *, max_examples: int | None, round_: str
) -> VerificationError | None:
    """One Hypothesis run of ``cfg``: None when it passes (or its budget ends it), else the failure."""
    outer = current_reporter()

    def quiet_stop(value: Any) -> None:  # a budget's stop is not a failure to reproduce with @seed
        if not (cfg.state.stopped and isinstance(value, str) and value.startswith("You can reproduce this failure")):
            outer(value)

    try:
        with with_reporter(quiet_stop):
            hypothesis_test(cfg, report, strategy, max_examples=max_examples, round_=round_)()
    except BudgetSpent:
        state = cfg.state
        if state.found_at is None:
            return None
        error = state.latest[state.first]
        note = (
            f"\n  (shrinking stopped at its budget of {cfg.shrink_budget:.0f}s: this is the smallest "
            "counterexample found by then)"
        )
        details = {**error.details, "shrunk": False}
        again = type(error)(str(error) + note, op=error.op, dtype=error.dtype, check=error.check, details=details)
        again.found_at = error.found_at
        return again
    except VerificationError as e:
        state = cfg.state
        if state.first is None or type(e) is state.first or state.first not in state.latest:
            return e
        # Hypothesis met another defect while shrinking the first and reports whichever it shrank
        # last; the first one found is this round's (the other is found again once it is held out)
        first = state.latest[state.first]
        first.details["shrunk"] = False  # its shrinking may have been cut short by the other's
        return first
    except hypothesis.errors.Unsatisfiable:
        # every draw was held out or unsupported: nothing more to verify at this dtype
        cfg.state.not_run["every draw held out or unsupported"] = 1
        return None
    except FlakyFailure as e:
        inner = next((x for x in e.exceptions if isinstance(x, VerificationError)), None)
        msg = (
            f"{cfg.name} [{cfg.dname}]: a failure did not reproduce when replayed: the implementation is "
            f"nondeterministic\n{inner if inner else e}"
        )
        err = VerificationError(msg, op=cfg.name, dtype=cfg.dname, check="rerun")
        err.found_at = cfg.state.found_at
        return err
    return None


def _hold_out(cfg: Config, error: VerificationError, *, layouts: bool = True) -> Config | None:
    """``cfg`` with the feature behind ``error`` held out, or None when there is nothing to hold out.

    The feature is a layout when the shrunk counterexample still has an argument laid out other
    than contiguously: Hypothesis shrinks layouts to contiguous, so that layout is needed for the
    failure (a kernel that reads its weight as contiguous). Those arguments are then drawn
    contiguous only, and the error says how to declare the restriction. Otherwise it is the failing
    check and the checks that judge the same numbers (:data:`gradcheck.report.FAMILIES`)."""
    # only a fully shrunk counterexample tells which layouts a failure needs
    drawn = error.details.get("layouts", {}) if layouts and error.details.get("shrunk", True) else {}
    needed = {i: k for i, k in drawn.items() if k != "contiguous" and i not in cfg.layouts}
    if needed and error.check not in ("opcheck",):
        which = ", ".join(f"arg{i} ({k})" for i, k in sorted(needed.items()))
        declare = ", ".join(f"{i}: 'contiguous'" for i in sorted(needed))
        error.details["before_layout"] = str(error)  # taken back if the next round fails the same way
        error.args = (
            f"{error}\n  layout: the smallest failing example needs {which} laid out this way; the verification "
            f"went on with those arguments contiguous. If the implementation supports only contiguous "
            f"inputs there, declare it: layouts={{{declare}}} (or by argument name).",
        )
        error.details["held_out"] = f"layouts of {which}"
        return dataclasses.replace(cfg, layouts={**cfg.layouts, **dict.fromkeys(needed, ("contiguous",))})
    family = FAMILIES.get(error.check, frozenset({error.check}))
    if family <= cfg.held_out:
        return None
    error.details["held_out"] = "checks " + ", ".join(sorted(family))
    return dataclasses.replace(cfg, held_out=cfg.held_out | family)


def _positions(fn: Callable[..., Any], given_: dict[Any, Any], what: str) -> dict[int, Any]:
    """``given_`` keyed by argument position: ints as they are, names looked up in ``fn``'s signature."""
    out: dict[int, Any] = {}
    names: list[str] | None = None
    for key, value in given_.items():
        if isinstance(key, int) and not isinstance(key, bool):
            out[key] = value
            continue
        if names is None:
            try:
                params = inspect.signature(fn).parameters.values()
            except (TypeError, ValueError):
                params = []
            names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if key not in names:
            raise ValueError(
                f"{what}: {key!r} is not a positional parameter of {getattr(fn, '__name__', fn)!r} "
                f"(its parameters: {names or 'unknown'}); give the argument's position instead"
            )
        out[names.index(key)] = value
    return out


def _layout_kinds(kinds: str | Sequence[str]) -> tuple[str, ...]:
    """A layout precondition as layout kinds: "contiguous", "dense" (contiguous or permuted, no gaps),
    or a sequence of kinds from :func:`gradcheck.layouts.layouts`."""
    named = {"contiguous": ("contiguous",), "dense": ("contiguous", "transposed", "permuted", "channels_last")}
    if isinstance(kinds, str):
        if kinds not in named:
            raise ValueError(f"layout {kinds!r}: expected 'contiguous', 'dense' or a sequence of layout kinds")
        return named[kinds]
    known = {"contiguous", "transposed", "sliced", "channels_last", "permuted"}
    bad = [k for k in kinds if k not in known]
    if bad:
        raise ValueError(f"unknown layout kinds {bad}; known: {sorted(known)}")
    return tuple(kinds)


def check_gradients(
    fn: Callable[..., Any], *tensors: Any, mode: str = "auto", seed: int = 0, directions: int = 4
) -> bool:
    """One-shot finite-difference check of ``fn``'s backward at the given inputs (like
    ``torch.autograd.gradcheck``, without its blind spots): float64 inputs are checked at float64
    accuracy against Richardson-extrapolated central differences of ``fn`` itself, along
    ``directions`` signed random directions ("directional"), or entry by entry ("full"); "auto"
    takes "full" when the inputs and outputs have at most 64 elements. Plain values and integer
    tensors pass through. ``fn`` runs on the device of the tensors given (place them yourself;
    :func:`gradcheck.hooks.default_device` is the usual choice). Returns True or raises
    :class:`VerificationError`.

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
        outs = as_tuple(fn(*tensors))
    n_in = sum(tensors[i].numel() for i in float_pos)
    n_out = sum(o.numel() for o in outs if isinstance(o, torch.Tensor) and o.is_floating_point())
    full = mode == "full" or (mode == "auto" and n_in <= 64 and n_out <= 64)
    report = Report(getattr(fn, "__name__", "fn"))
    cfg = Config(
        fn=fn, name=report.name, dtype=dtype, device=device, jacobian="always" if full else "off", f64_impl=True
    )
    args = prepare_args(drawn, dtype)
    ex = Example(args=args, arrays=[a.array for a in args], report=report, diff=float_pos)
    ex.context = describe(ex, [a.value for a in args])
    ex.ref_grads = [None] * len(args)
    rng = np.random.default_rng(seed)
    inputs = [
        t.detach().requires_grad_(i in float_pos) if isinstance(t, torch.Tensor) and t.is_floating_point() else t
        for i, t in enumerate(tensors)
    ]
    outs = as_tuple(fn(*inputs))
    ex.float_outs = [j for j, o in enumerate(outs) if isinstance(o, torch.Tensor) and o.is_floating_point()]
    h = fd.step(ex.arrays, ex.diff, kinks=cfg.kinks)
    if h is None:
        return True
    if full:
        checks.check_jacobian(cfg, ex, h=h)
        return True
    for _ in range(directions):
        ex.g_seen = {
            j: torch.from_numpy(rng.standard_normal(tuple(outs[j].shape))).to(dtype).to(torch.float64)
            for j in ex.float_outs
        }
        ex.grads = torch.autograd.grad(
            [outs[j] for j in ex.float_outs],
            [inputs[i] for i in float_pos],
            [ex.g_seen[j].to(device=device, dtype=dtype) for j in ex.float_outs],
            retain_graph=True,
            allow_unused=True,
        )
        checks.check_finite_differences(cfg, ex, draw_seed=lambda: int(rng.integers(0, 2**32 - 1)))
    return True
