"""Every distinct defect, preconditions, bounded cost, the measuring stick, single-use backwards
and misuse messages: the engine's behaviour around a failure, on small hand-written kernels.

The kernels here are plain torch functions with hand-written backwards, on the CPU: what is under
test is the engine, and each test takes a few seconds.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import strategies as st

import gradcheck as gc
from gradcheck import strategies as gs
from gradcheck.report import failure_class

CPU = torch.device("cpu")


def _rows_and_weight() -> st.SearchStrategy:
    """(x, weight): rows of width D and a weight of D; the engine lays both out in every way."""
    shape = st.tuples(st.integers(1, 5), st.integers(2, 6))
    return shape.flatmap(lambda s: st.tuples(gs.tensors(st.just(s)), gs.tensors(st.just(s[1:]))))


def _as_if_contiguous(t: torch.Tensor) -> torch.Tensor:
    """``t``'s storage read as a contiguous tensor of its shape: what a kernel that takes a data
    pointer and ignores the strides reads (it materializes a broadcast weight first, as such
    kernels' launchers often do)."""
    if 0 in t.stride():
        t = t.contiguous()
    return torch.as_strided(t, t.shape, torch.empty(t.shape).stride(), t.storage_offset())


class _ScaleRows(torch.autograd.Function):
    """y = x * w (w broadcast over rows), reading w as contiguous; ``grad_x_bug`` doubles dx."""

    @staticmethod
    def forward(ctx, x, w, grad_x_bug):
        w_read = _as_if_contiguous(w.detach())
        ctx.save_for_backward(x, w_read)
        ctx.grad_x_bug = grad_x_bug
        return x * w_read

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        dx = g * w * (2.0 if ctx.grad_x_bug else 1.0)
        return dx, (g * x).sum(0), None


def _scale_rows(x, weight):
    return _ScaleRows.apply(x, weight, False)


def _scale_rows_buggy(x, weight):
    return _ScaleRows.apply(x, weight, True)


def _scale_reference(x, w):
    return x * w


def _scale_vjp(x, w, g):
    return g * w, (g * x).sum(0)


def _verify_scale(fn, **kwargs):
    return gc.verify(
        fn,
        _rows_and_weight(),
        reference=_scale_reference,
        reference_vjp=_scale_vjp,
        device=CPU,
        max_examples=30,
        **kwargs,
    )


@pytest.mark.long(seconds=34)  # measured under load on 2 cores
def test_an_undeclared_layout_restriction_is_reported_as_such_and_the_real_bug_too():
    """A kernel that reads its weight as contiguous and doubles dx: two findings, each with its own
    counterexample: the weight's layout (with how to declare it), then the backward."""
    with pytest.raises(gc.VerificationError) as caught:
        _verify_scale(_scale_rows_buggy)
    findings = caught.value.findings
    assert len(findings) >= 2, str(caught.value)
    layout = [f for f in findings if "layouts={" in str(f) and "1: 'contiguous'" in str(f)]
    assert layout, "the weight's layout is named with the declaration that fixes it"
    backward = [f for f in findings if f.check in ("backward", "backward_fd", "jacobian")]
    assert backward, "the doubled dx is reported too"
    assert all(f.found_at is not None and f.found_at >= 1 for f in findings)
    assert "more distinct failure(s)" in str(caught.value)


def test_a_declared_layout_restriction_is_honoured():
    report = _verify_scale(_scale_rows, layouts={"weight": "contiguous"})
    assert report.passed
    with pytest.raises(gc.VerificationError) as caught:
        _verify_scale(_scale_rows_buggy, layouts={"weight": "contiguous"})
    assert caught.value.check in ("backward", "backward_fd", "jacobian")
    assert all("layout:" not in str(f) for f in caught.value.findings)


def test_layout_names_must_be_parameters():
    with pytest.raises(ValueError, match="'wieght' is not a positional parameter"):
        _verify_scale(_scale_rows, layouts={"wieght": "contiguous"})
    with pytest.raises(ValueError, match="expected 'contiguous', 'dense'"):
        _verify_scale(_scale_rows, layouts={1: "strided"})


def test_each_check_and_argument_is_its_own_identity():
    """Hypothesis tells failures apart by exception type: one per (check, argument)."""
    assert failure_class("backward", "arg0") is failure_class("backward", "arg0")
    assert failure_class("backward", "arg0") is not failure_class("backward", "arg1")
    assert failure_class("backward", "arg0") is not failure_class("forward", "output0")
    assert issubclass(failure_class("rerun"), gc.VerificationError)


def test_supports_skips_and_counts_the_draws_it_refuses():
    report = _verify_scale(_scale_rows, layouts={1: "contiguous"}, supports=lambda x, w: x.shape[0] != 1)
    not_run = report.runs["float32"]["not_run"]
    assert not_run.get("not supported (supports=)", 0) > 0, report.runs
    assert "not supported" in str(report)


def test_the_time_budget_stops_generation_and_says_so():
    report = _verify_scale(_scale_rows, layouts={1: "contiguous"}, budget=0.0)
    run = report.runs["float32"]
    assert run["budget_spent"] and 1 <= run["examples"] < 30, run
    assert "stopped at the time budget" in str(report)


class _ScaledByConstant(torch.autograd.Function):
    """y = c * x, for the measuring stick."""

    @staticmethod
    def forward(ctx, x, c):
        ctx.c = c
        return x * c

    @staticmethod
    def backward(ctx, g):
        return g * ctx.c, None


@pytest.mark.long(seconds=26)  # measured under load on 2 cores
def test_the_baseline_adds_its_error_times_c_and_the_report_shows_both():
    """An implementation 1% off passes next to a baseline 0.6% off (2 x 0.6% covers it) and fails
    next to one 0.4% off; the report and the failure show the baseline's error."""

    def ours(x):
        return _ScaledByConstant.apply(x, 1.01)

    def verify_with(baseline):
        return gc.verify(
            ours,
            gs.tensors(gs.shapes(max_dims=2, min_side=1, max_side=6, large=False)),
            reference=lambda x: x,
            reference_vjp=lambda x, g: (g,),
            baseline=baseline,
            device=CPU,
            max_examples=10,
        )

    report = verify_with(lambda x: x * 1.006)
    assert report.stat("float32", "forward").baseline_error > 0
    assert "baseline's worst" in str(report)
    with pytest.raises(gc.VerificationError, match=r"baseline \(same dtype\): worst error"):
        verify_with(lambda x: x * 1.004)


class _SingleUse(torch.autograd.Function):
    """A fused loss's pattern: the forward computes the gradient, the backward scales it in place
    and hands it over; a second backward on the same graph would be wrong."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(2 * x)
        ctx.used = False
        return (x * x).sum()

    @staticmethod
    def backward(ctx, g):
        if ctx.used:
            raise RuntimeError("this backward may run only once per forward")
        ctx.used = True
        (grad,) = ctx.saved_tensors
        return grad.mul_(g)


def test_a_single_use_backward_is_verified():
    report = gc.verify(
        _SingleUse.apply,
        gs.tensors(gs.shapes(max_dims=2, min_side=1, max_side=4, large=False)),
        reference=lambda x: (x * x).sum(),
        reference_vjp=lambda x, g: (2 * x * g,),
        device=CPU,
        max_examples=10,
    )
    assert report.stat("float32", "zero_grad").examples > 0 and report.stat("float32", "rerun").examples > 0


def test_a_forward_only_kernel_is_told_about_backward_false():
    def forward_only(x):
        return (x * 2).detach()

    inputs = gs.tensors(gs.shapes(max_dims=1, min_side=1, max_side=4, large=False))
    with pytest.raises(gc.VerificationError, match="backward=False") as caught:
        gc.verify(forward_only, inputs, reference=lambda x: 2 * x, reference_vjp=lambda x, g: (2 * g,), device=CPU)
    assert caught.value.check == "raises"
    gc.verify(forward_only, inputs, reference=lambda x: 2 * x, backward=False, device=CPU, max_examples=5)


def test_no_float64_and_no_reference_says_what_to_do():
    def no_float64(x):
        return {torch.float32: lambda t: t * 2}[x.dtype](x)

    inputs = gs.tensors(gs.shapes(max_dims=1, min_side=1, max_side=4, large=False))
    with pytest.raises(TypeError, match="Give reference="):
        gc.verify(no_float64, inputs, device=CPU, max_examples=3)
