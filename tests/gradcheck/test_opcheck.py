"""Check 'opcheck': ``torch.library.opcheck`` on every custom op an implementation calls, with the
arguments of each drawn example. Every custom op here is registered in this file (namespace
``gctest``), wraps plain torch math on the CPU, and has a planted registration bug or none.

opcheck runs on every example Hypothesis tries, shrinking included (a few hundred for one
failure): the planted-bug tests skip the shrink phase, except the one that tests it."""

from __future__ import annotations

from collections.abc import Iterator

import hypothesis
import numpy as np
import pytest
import torch

import gradcheck as gc
from gradcheck import opcheck as oc
from gradcheck import profiles
from gradcheck import strategies as gs

CPU = torch.device("cpu")


# ---------------------------------------------------------------------------------------------
# the ops: a correct one, then one planted registration bug each
# ---------------------------------------------------------------------------------------------


@torch.library.custom_op("gctest::scale", mutates_args=())
def scale(x: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
    return (x * alpha).contiguous()


@scale.register_fake
def _(x: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
    return x.new_empty(x.shape)


def _scale_setup(ctx, inputs, output) -> None:
    ctx.alpha = inputs[1]


def _scale_backward(ctx, g: torch.Tensor):
    return g * ctx.alpha, None


scale.register_autograd(_scale_backward, setup_context=_scale_setup)


# (a) the fake kernel returns the transposed shape: right only for square inputs
@torch.library.custom_op("gctest::transposed_fake", mutates_args=())
def transposed_fake(x: torch.Tensor) -> torch.Tensor:
    return (x * 2).contiguous()


@transposed_fake.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return x.new_empty(x.shape[::-1])


transposed_fake.register_autograd(lambda ctx, g: g * 2)


# (b) writes into its input without declaring it in mutates_args (its output is right)
@torch.library.custom_op("gctest::hidden_mutation", mutates_args=())
def hidden_mutation(x: torch.Tensor) -> torch.Tensor:
    y = (x * 2).contiguous()
    if x.numel():  # one element only: valid for any layout, stride-0 expansions included
        x.as_strided((1,), (1,), x.storage_offset()).add_(1.0)
    return y


@hidden_mutation.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return x.new_empty(x.shape)


hidden_mutation.register_autograd(lambda ctx, g: g * 2)


# (c) the fake kernel always says float32
@torch.library.custom_op("gctest::float32_fake", mutates_args=())
def float32_fake(x: torch.Tensor) -> torch.Tensor:
    return (x * 2).contiguous()


@float32_fake.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty(x.shape, dtype=torch.float32, device=x.device)


float32_fake.register_autograd(lambda ctx, g: g * 2)


# (d) no register_autograd at all
@torch.library.custom_op("gctest::no_autograd", mutates_args=())
def no_autograd(x: torch.Tensor) -> torch.Tensor:
    return (x * 2).contiguous()


@no_autograd.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return x.new_empty(x.shape)


# a correct op whose output is NaN where its input is negative (as torch.log)
@torch.library.custom_op("gctest::log", mutates_args=())
def log(x: torch.Tensor) -> torch.Tensor:
    return torch.log(x).contiguous()


@log.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return x.new_empty(x.shape)


def _log_setup(ctx, inputs, output) -> None:
    ctx.save_for_backward(inputs[0])


log.register_autograd(lambda ctx, g: g / ctx.saved_tensors[0], setup_context=_log_setup)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _replayable() -> Iterator[None]:
    """The same examples every run, none stored between runs (a stored failure replays first)."""
    with profiles.overridden(database=None, derandomize=True):
        yield


def _matrices(min_side: int = 0):
    shape = gs.shapes(min_dims=2, max_dims=2, min_side=min_side, max_side=5, large=False, awkward=False)
    return gs.tensors(shape).map(lambda x: (x,))


def _twice(x: np.ndarray) -> np.ndarray:
    return 2 * x


def _twice_vjp(x: np.ndarray, g: np.ndarray) -> tuple[np.ndarray]:
    return (2 * g,)


def _verify(fn, *, dtypes=(torch.float32,), max_examples: int = 6, min_side: int = 0, **kwargs) -> gc.Report:
    kwargs.setdefault("opcheck_examples", None)  # every example, whatever the active profile's bound
    return gc.verify(
        fn,
        _matrices(min_side),
        reference=kwargs.pop("reference", _twice),
        reference_vjp=kwargs.pop("reference_vjp", _twice_vjp),
        dtypes=dtypes,
        max_examples=max_examples,
        device=CPU,
        **kwargs,
    )


def _opcheck_stats(report: gc.Report) -> dict[str, tuple[int, int]]:
    return {s.dtype: (s.examples, s.skipped) for s in report.stats if s.check == "opcheck"}


# ---------------------------------------------------------------------------------------------
# correct ops pass, and opcheck ran on them
# ---------------------------------------------------------------------------------------------


def test_correct_custom_op_passes_and_is_opchecked() -> None:
    report = _verify(scale, dtypes=(torch.float32, torch.float16))
    stats = _opcheck_stats(report)
    assert set(stats) == {"float32", "float16"}
    for dtype, (examples, skipped) in stats.items():
        # every example is opchecked but those with only empty tensors (nothing for opcheck to compare)
        assert examples > 0 and examples + skipped == report.examples(dtype)
    assert "opcheck" in str(report)


def test_a_correct_op_returning_nan_passes() -> None:
    """opcheck's AOT test compares outputs with NaN unequal to NaN (torch's own aten.log fails it
    on a negative input): a call that returned NaN skips that test, and no other."""
    strategy = gs.tensors(gs.shapes(min_dims=1, max_dims=1, min_side=1, max_side=4, large=False), elements="normal")
    with np.errstate(invalid="ignore", divide="ignore"):
        report = gc.verify(
            log,
            strategy.map(lambda x: (x,)),
            reference=np.log,
            reference_vjp=lambda x, g: (g / x,),
            dtypes=(torch.float64,),
            max_examples=10,
            device=CPU,
        )
    assert _opcheck_stats(report)["float64"][0] > 0
    call = oc.OpCall("gctest::log", torch.ops.gctest.log.default, (torch.tensor([-1.0, 2.0]),), {}, nan_outputs=True)
    assert oc.run_tests(call, oc.TESTS) == []


@pytest.mark.parametrize(
    ("fn", "factor"),
    [
        pytest.param(torch.ops.gctest.scale, 2.0, id="packet"),
        pytest.param(torch.ops.gctest.scale.default, 2.0, id="overload"),
        pytest.param(lambda x: scale(x.t(), alpha=3.0).t() + 0, 3.0, id="inside-a-function-with-kwargs"),
    ],
)
def test_custom_op_reached_any_way_is_opchecked(fn, factor: float) -> None:
    report = _verify(fn, max_examples=3, reference=lambda x: factor * x, reference_vjp=lambda x, g: (factor * g,))
    examples, skipped = _opcheck_stats(report)["float32"]
    assert examples > 0 and examples + skipped == report.examples()


# ---------------------------------------------------------------------------------------------
# planted registration bugs: each one fails check 'opcheck', naming opcheck's test
# ---------------------------------------------------------------------------------------------


def _opcheck_failure(fn, test: str, *, dtype: str = "float32", shrink: bool = False, **kwargs) -> gc.VerificationError:
    phases = list(hypothesis.Phase) if shrink else [hypothesis.Phase.explicit, hypothesis.Phase.generate]
    with profiles.overridden(phases=phases), pytest.raises(gc.VerificationError) as info:
        _verify(fn, **kwargs)
    e = info.value
    assert e.check == "opcheck", str(e)
    assert e.dtype == dtype
    assert e.details["test"] == test, str(e)
    assert e.details["op"].startswith("gctest::")
    assert f"opcheck's {test} failed" in str(e) and "replay: torch.library.opcheck(torch.ops.gctest." in str(e)
    return e


def test_wrong_fake_shape_is_caught() -> None:
    e = _opcheck_failure(transposed_fake, "test_faketensor", max_examples=10)
    assert "Shapes" in str(e) and "are not equal" in str(e)


def test_undeclared_mutation_is_caught_before_the_guards() -> None:
    e = _opcheck_failure(hidden_mutation, "test_schema")
    assert "is not defined as mutable but was mutated" in str(e)
    # without opcheck the same bug is still caught, by the guard bands
    with profiles.overridden(phases=[hypothesis.Phase.generate]), pytest.raises(gc.VerificationError) as info:
        _verify(hidden_mutation, opcheck="off")
    assert info.value.check == "guards"


def test_wrong_fake_dtype_is_caught_at_float16() -> None:
    e = _opcheck_failure(float32_fake, "test_faketensor", dtype="float16", dtypes=(torch.float32, torch.float16))
    assert "Dtypes torch.float16 and torch.float32 are not equal" in str(e)
    assert e.report is not None and _opcheck_stats(e.report)["float32"][0] > 0, "float32 ran opcheck and passed"


@pytest.mark.long(seconds=28)  # measured under load on 2 cores
def test_missing_autograd_is_an_opcheck_failure_not_a_backward_crash() -> None:
    # opcheck's test_autograd_registration passes (custom_op's autograd fallback is registered
    # to the Autograd key); test_aot_dispatch_dynamic backpropagates and names the problem
    e = _opcheck_failure(no_autograd, "test_aot_dispatch_dynamic", min_side=1)
    assert "no autograd formula was registered" in str(e)
    assert "requires_grad" in str(e), "the recorded call had its input requiring grad"
    # without opcheck, the engine's own backward call is what fails
    with profiles.overridden(phases=[hypothesis.Phase.generate]), pytest.raises(gc.VerificationError) as info:
        _verify(no_autograd, opcheck="off")
    assert info.value.check == "raises" and "no autograd formula" in str(info.value)


# ---------------------------------------------------------------------------------------------
# when opcheck runs, and its budget
# ---------------------------------------------------------------------------------------------


def test_plain_function_is_not_opchecked() -> None:
    report = _verify(lambda x: x * 2, max_examples=3)
    assert _opcheck_stats(report) == {}


def test_opcheck_off() -> None:
    report = _verify(scale, max_examples=3, opcheck="off")
    assert _opcheck_stats(report) == {}
    report = _verify(float32_fake, max_examples=3, opcheck="off", dtypes=(torch.float16,))
    assert _opcheck_stats(report) == {}, "a wrong fake kernel only opcheck sees passes unseen"


def test_opcheck_examples_bounds_the_examples_opchecked() -> None:
    report = _verify(scale, max_examples=6, opcheck_examples=2)
    examples, skipped = _opcheck_stats(report)["float32"]
    assert examples == 2 and examples + skipped == report.examples()


@pytest.mark.long(seconds=45)  # measured under load on 2 cores
def test_a_failure_within_the_budget_shrinks_and_replays() -> None:
    # every example mutates (no empty inputs); shrinking and the final replay run past the budget
    # of 2 examples, so the op is opchecked on every example once it failed (else: Flaky)
    e = _opcheck_failure(hidden_mutation, "test_schema", opcheck_examples=2, min_side=1, max_examples=10, shrink=True)
    assert "float32[1, 1]" in str(e), "shrunk to the smallest input that mutates"


@pytest.mark.parametrize("kwargs", [{"opcheck": "on"}, {"opcheck": True}, {"opcheck_examples": 0}])
def test_opcheck_options_are_validated(kwargs) -> None:
    with pytest.raises(ValueError, match="opcheck"):
        _verify(scale, **kwargs)


# ---------------------------------------------------------------------------------------------
# the recorder
# ---------------------------------------------------------------------------------------------


def test_recorder_sees_custom_ops_only_with_a_snapshot_of_their_arguments() -> None:
    buf = torch.full((6, 7), float("nan"))
    x = buf[1:4, 2:6].t()  # sliced, transposed, in a NaN band
    x.copy_(torch.arange(12.0).reshape(4, 3))
    with oc.CustomOpRecorder() as rec:
        y = hidden_mutation(torch.sin(x))  # an aten op, then the custom op on its output
        scale(x, alpha=5.0)
        scale(y)  # a second call of the same op is not recorded
    assert list(rec.calls) == ["gctest::hidden_mutation", "gctest::scale"]
    call = rec.calls["gctest::scale"]
    (snap,) = call.args
    assert call.kwargs == {"alpha": 5.0}
    assert snap.shape == x.shape and snap.stride() == x.stride() and snap.storage_offset() == x.storage_offset()
    assert snap.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()
    assert torch.equal(snap, x) and not snap.requires_grad
    # the snapshot is taken before the op runs: the mutation does not reach it
    (mutated,) = rec.calls["gctest::hidden_mutation"].args
    assert torch.equal(mutated, torch.sin(torch.arange(12.0).reshape(4, 3)))
    assert oc.custom_op_name(torch.ops.aten.sin.default) is None
    assert oc.custom_op_name(torch.ops.gctest.scale) == "gctest::scale"
    assert "strides (1, 7) offset 9" in oc.describe_call(call)


def test_snapshot_keeps_requires_grad_and_empty_tensors_are_contiguous() -> None:
    x = torch.randn(3, 4, requires_grad=True)
    with oc.CustomOpRecorder() as rec:
        scale(x)
        no_autograd(torch.empty_strided((0, 9), (18, 1)))
    (snap,) = rec.calls["gctest::scale"].args
    assert snap.requires_grad and snap.is_leaf
    (empty,) = rec.calls["gctest::no_autograd"].args
    assert empty.shape == (0, 9) and empty.is_contiguous()
