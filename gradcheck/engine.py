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

import hashlib
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

from gradcheck import checks, fd, profiles
from gradcheck import layouts as lay
from gradcheck import opcheck as oc
from gradcheck.compare import as_tuple
from gradcheck.config import Config
from gradcheck.example import Example, describe, draw_grad_output, place_args, prepare_args, values_of
from gradcheck.hooks import default_device
from gradcheck.oracle import Reference
from gradcheck.report import Report, VerificationError

__all__ = ["check_gradients", "hypothesis_test", "run_example", "verify"]

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
            ex.layouts[i] = data.draw(lay.layouts(a.seen.dim()), label=f"layout of arg{i}")

    # ---- pass 1: NaN poison ------------------------------------------------------------------
    placed = place_args(cfg, ex, diff=None, sentinel=False)
    ex.context = describe(ex, placed)
    with checks.timed(cfg, ex, "forward"):
        ex.outs = checks.call_impl(cfg, ex, values_of(placed), fill=NAN, record=True)
    # the custom ops' registrations first: a schema that hides a mutation, a wrong fake kernel
    # explain what the forward's checks would see
    checks.check_opcheck(cfg, ex, tests=oc.FORWARD_TESTS, final=False)
    if ex.ref_out is None:
        ex.ref_out = cfg.forward64(ex.arrays)  # no reference: the implementation at float64 stands in
    ex.float_outs = checks.check_outputs(cfg, ex)
    checks.check_forward(cfg, ex)
    checks.check_guards(cfg, ex, placed, stage="forward")

    if cfg.backward and ex.float_outs:
        _draw_backward_inputs(cfg, ex, data)
    if not ex.diff:
        checks.check_opcheck(cfg, ex, tests=oc.AUTOGRAD_TESTS, final=True)
        checks.check_rerun(cfg, ex)
        return

    # pass 1 again, now with the differentiable inputs requiring grad
    placed = place_args(cfg, ex, diff=ex.diff, sentinel=False)
    with checks.timed(cfg, ex, "backward"):
        ex.outs = checks.call_impl(cfg, ex, values_of(placed), fill=NAN, record=True)
    # opcheck's autograd tests on the calls with inputs requiring grad, before the backward runs:
    # a missing autograd formula is a registration bug, not a crash of the backward
    checks.check_opcheck(cfg, ex, tests=oc.AUTOGRAD_TESTS, final=True)
    for j in ex.float_outs:
        ex.g_layouts[j] = data.draw(lay.layouts(ex.g_seen[j].dim()), label=f"layout of grad_output{j}")
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
    if ex.ref_grads is None:  # no reference VJP: finite differences alone judge the backward
        ex.ref_grads = [None] * len(args)
    checks.check_gradient_outputs(cfg, ex)
    checks.check_backward(cfg, ex)
    checks.check_guards(cfg, ex, placed, stage="backward", g_placed=g_placed)
    checks.check_zero_grad(cfg, ex, placed)

    # ---- finite differences --------------------------------------------------------------------
    checks.check_finite_differences(
        cfg, ex, draw_seed=lambda: data.draw(st.integers(0, 2**32 - 1), label="direction seed")
    )

    # ---- pass 2: sentinel poison, fresh buffers ------------------------------------------------
    checks.check_rerun(cfg, ex)
    checks.check_nondiff(cfg, ex)


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
        ],
    )


def hypothesis_test(
    cfg: Config, report: Report, strategy: st.SearchStrategy, *, max_examples: int | None
) -> Callable[[], None]:
    """The Hypothesis test of ``cfg``: :func:`run_example` on each drawn example. Examples it
    stores are keyed by op and dtype; a derandomized profile draws a sequence of its own per op
    and dtype (seeded from them), as it would for distinct test functions."""
    key = f"{cfg.name}, {cfg.dname}"
    active = _settings(max_examples, key)

    def run(drawn: Any, data: st.DataObject) -> None:
        run_example(cfg, report, drawn, data)

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
        cfg = Config(
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
        )
        try:
            hypothesis_test(cfg, report, strategy, max_examples=max_examples)()
        except VerificationError as e:
            report.failures.append(str(e))
            first_error = first_error or e
        except FlakyFailure as e:
            inner = next((x for x in e.exceptions if isinstance(x, VerificationError)), None)
            msg = (
                f"{name} [{cfg.dname}]: a failure did not reproduce when replayed: the implementation is "
                f"nondeterministic\n{inner if inner else e}"
            )
            err = VerificationError(msg, op=name, dtype=cfg.dname, check="rerun")
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
