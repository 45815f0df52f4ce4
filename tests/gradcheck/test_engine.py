"""Unit tests of the engine's pieces: the tolerance table, layouts and guard bands, strategies,
check_gradients, verify's argument validation and reports, the device and poison hooks, and the
Hypothesis keys per op."""

from __future__ import annotations

import contextlib
import math
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import EntryPoint

import hypothesis
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.database import InMemoryExampleDatabase

import gradcheck as gc
from gradcheck import hooks, profiles
from gradcheck import layouts as lay
from gradcheck import strategies as gs
from gradcheck import tolerances as tl
from tests.gradcheck import zoo

CPU = torch.device("cpu")
FLOATS = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


def _unit_roundoff(dtype: torch.dtype) -> float:
    """u = eps / 2, from torch itself rather than from the table under test."""
    return torch.finfo(dtype).eps / 2


# ---------------------------------------------------------------------------------------------
# tolerances
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_table_row_per_dtype(dtype: torch.dtype) -> None:
    row_name, row = tl.table_row(dtype)
    assert row_name == str(dtype).removeprefix("torch.")
    assert row.dtype == dtype
    assert row.u_out == _unit_roundoff(dtype)
    # half-precision kernels accumulate in fp32; fp32 and fp64 accumulate in their own precision
    expected_acc = _unit_roundoff(torch.float32) if dtype in (torch.float16, torch.bfloat16) else row.u_out
    assert row.u_acc == expected_acc
    assert row.u_mul == 0.0


def test_tf32_row() -> None:
    name, row = tl.table_row(torch.float32, tf32=True)
    assert name == "tf32"
    assert row.u_out == _unit_roundoff(torch.float32)
    assert row.u_mul == 2.0**-11  # TF32 keeps 10 explicit mantissa bits
    assert tl.table_row(torch.float64, tf32=True)[0] == "float64", "only fp32 matmuls run on TF32 cores"
    plain, tf32 = tl.tolerance(torch.float32, depth=64), tl.tolerance(torch.float32, depth=64, tf32=True)
    assert tf32.row == "tf32"
    assert tf32.acc == pytest.approx(plain.acc + 2 * row.u_mul)


def test_table_rejects_non_float_dtypes() -> None:
    with pytest.raises(KeyError, match=r"no tolerance for dtype torch\.int64"):
        tl.table_row(torch.int64)


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_tolerance_scales_with_depth(dtype: torch.dtype) -> None:
    u = tl.table_row(dtype)[1]
    shallow, deep = tl.tolerance(dtype, depth=1), tl.tolerance(dtype, depth=1000)
    assert shallow.depth == 1 and deep.depth == 1000
    assert deep.rel == shallow.rel, "output rounding does not depend on K"
    assert deep.acc - shallow.acc == pytest.approx(999 * u.u_acc)
    assert deep.floor > shallow.floor
    assert tl.tolerance(dtype, depth=0).depth == 1, "an empty sum still rounds once"


def test_tolerance_for_gradients_and_transcendentals() -> None:
    forward, backward = tl.tolerance(torch.float32, depth=8), tl.tolerance(torch.float32, depth=8, grad=True)
    assert backward.rel == pytest.approx(tl.GRAD_FACTOR * forward.rel)
    assert backward.acc == pytest.approx(tl.GRAD_FACTOR * forward.acc)
    with_ulps = tl.tolerance(torch.float32, ulps=4)
    assert with_ulps.rel - tl.tolerance(torch.float32).rel == pytest.approx(4 * _unit_roundoff(torch.float32))


def test_tolerance_bound_is_elementwise_plus_normwise() -> None:
    tol = tl.tolerance(torch.float32, depth=4)
    ref = np.array([1.0, -2.0, 0.0])
    tiny = torch.finfo(torch.float32).tiny
    normwise = tol.bound(ref, None)
    np.testing.assert_allclose(normwise, tol.rel * np.abs(ref) + tol.acc * np.abs(ref) + tol.floor * 2.0 + tiny)
    magnitude = np.array([3.0, 3.0, 3.0])  # sum of |terms|: a multilinear op's cancellation
    np.testing.assert_allclose(tol.bound(ref, magnitude), tol.rel * np.abs(ref) + tol.acc * magnitude + tiny)
    assert "float32 row" in tol.describe() and "K=4" in tol.describe()


# ---------------------------------------------------------------------------------------------
# layouts and guard bands
# ---------------------------------------------------------------------------------------------

LAYOUTS_2D = {
    "contiguous": lay.Layout.contiguous(2),
    "transposed": lay.Layout("transposed", (1, 0), (1, 1), 0),
    "sliced": lay.Layout("sliced", (0, 1), (2, 2), 3),
}


@pytest.mark.parametrize("kind", sorted(LAYOUTS_2D))
def test_place_keeps_values_inside_a_poisoned_buffer(kind: str) -> None:
    values = torch.arange(12, dtype=torch.float64).reshape(3, 4)
    placed = lay.place(values, dtype=torch.float32, device=CPU, layout=LAYOUTS_2D[kind])
    assert placed.tensor.dtype == torch.float32
    assert torch.equal(placed.tensor, values.float())
    assert placed.tensor.storage_offset() >= lay.GUARD
    outside = placed.buffer[torch.from_numpy(~placed.footprint)]
    assert outside.numel() >= 2 * lay.GUARD and bool(torch.isnan(outside).all())
    assert placed.problems("x") == []


def test_place_layout_strides() -> None:
    values = torch.zeros(3, 4, dtype=torch.float64)
    assert lay.place(values, dtype=torch.float64, device=CPU, layout=LAYOUTS_2D["transposed"]).tensor.stride() == (1, 3)
    sliced = lay.place(values, dtype=torch.float64, device=CPU, layout=LAYOUTS_2D["sliced"]).tensor
    assert sliced.stride() == (16, 2) and sliced.storage_offset() == lay.GUARD + 3
    nchw = torch.zeros(2, 3, 4, 5, dtype=torch.float64)
    channels_last = lay.place(
        nchw, dtype=torch.float64, device=CPU, layout=lay.Layout("channels_last", (0, 2, 3, 1), (1, 1, 1, 1), 0)
    )
    assert channels_last.tensor.is_contiguous(memory_format=torch.channels_last)


def test_place_keeps_a_broadcast_dim_stride_zero() -> None:
    values = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64).expand(4, 3)
    placed = lay.place(values, dtype=torch.float32, device=CPU, layout=LAYOUTS_2D["sliced"])
    assert placed.tensor.stride()[0] == 0
    assert torch.equal(placed.tensor, values.float())


def test_guard_band_catches_a_write_out_of_bounds() -> None:
    placed = lay.place(
        torch.ones(5, dtype=torch.float64), dtype=torch.float32, device=CPU, layout=lay.Layout.contiguous(1)
    )
    end = placed.tensor.storage_offset() + placed.tensor.numel()
    placed.buffer[end] = 0.0  # one past the end, as an unmasked store would
    (problem,) = placed.problems("arg0")
    assert "arg0" in problem and "out of bounds" in problem and f"buffer index {end}" in problem


def test_guard_band_catches_a_write_into_a_gap() -> None:
    placed = lay.place(
        torch.ones(3, 4, dtype=torch.float64), dtype=torch.float64, device=CPU, layout=LAYOUTS_2D["sliced"]
    )
    gap = placed.tensor.storage_offset() + 1  # between the first two elements of row 0
    placed.buffer[gap] = 7.0
    assert any("out of bounds" in p for p in placed.problems("x"))


def test_guard_band_catches_an_in_place_modification() -> None:
    placed = lay.place(
        torch.ones(2, 3, dtype=torch.float64), dtype=torch.float32, device=CPU, layout=LAYOUTS_2D["transposed"]
    )
    placed.tensor.data[1, 2] = 5.0
    (problem,) = placed.problems("arg1")
    assert "arg1 was modified in place" in problem and "(1, 2)" in problem


def test_poison_values() -> None:
    assert math.isnan(lay.poison_value(torch.float32, sentinel=False))
    assert lay.poison_value(torch.float16, sentinel=True) == torch.finfo(torch.float16).max / 2
    assert lay.poison_value(torch.int64, sentinel=False) < -(2**31), "an int poison must be far outside any index"
    placed = lay.place(
        torch.ones(4, dtype=torch.float64),
        dtype=torch.float32,
        device=CPU,
        layout=lay.Layout.contiguous(1),
        sentinel=True,
    )
    assert float(placed.buffer[0]) == lay.poison_value(torch.float32, sentinel=True)
    assert placed.problems("x") == []


@given(st.integers(0, 4).flatmap(lambda ndim: st.tuples(st.just(ndim), lay.layouts(ndim))))
def test_layouts_match_their_rank(drawn: tuple[int, lay.Layout]) -> None:
    ndim, layout = drawn
    assert sorted(layout.order) == list(range(ndim)) and len(layout.steps) == ndim
    assert layout.kind != "channels_last" or ndim == 4


# ---------------------------------------------------------------------------------------------
# strategies
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda: gs.sides(min_side=-1), ValueError, "min_side must be >= 0, got -1"),
        (lambda: gs.sides(min_side=5, max_side=2), ValueError, "max_side=2 < min_side=5"),
        (lambda: gs.sides(max_side=2.5), TypeError, "max_side must be an int, got 2.5"),
        (lambda: gs.shapes(min_side=-3), ValueError, "min_side must be >= 0, got -3"),
        (lambda: gs.shapes(min_side=4, max_side=2), ValueError, "max_side=2 < min_side=4"),
        (lambda: gs.shapes(min_dims=3, max_dims=1), ValueError, "max_dims=1 < min_dims=3"),
        (lambda: gs.shapes(max_numel=0), ValueError, "max_numel must be >= 1, got 0"),
        (lambda: gs.tensors((2, -1)), ValueError, "must be >= 0, got -1"),
        (lambda: gs.tensors((2,), elements="gaussian"), ValueError, "elements='gaussian'; expected one of"),
        (lambda: gs.tensors((2,), min_value=1.0, max_value=0.0), ValueError, "min_value=1.0 must be < max_value=0.0"),
        (lambda: gs.class_targets((4,), 0), ValueError, "num_classes must be >= 1, got 0"),
        (lambda: gs.class_targets((4,), 3, p_ignore=1.5), ValueError, "p_ignore=1.5 must be in"),
    ],
)
def test_strategies_validate_arguments_eagerly(build, error: type[Exception], message: str) -> None:
    """Bad arguments fail where the strategy is built, with a message naming the argument."""
    with pytest.raises(error, match=re.escape(message)):
        build()


@given(gs.shapes(max_dims=4, max_side=64, max_numel=1000))
def test_shapes_respect_max_numel(shape: tuple[int, ...]) -> None:
    assert len(shape) <= 4
    assert math.prod(shape) <= 1000
    assert all(s >= 0 for s in shape)


def test_sides_reach_past_2048() -> None:
    """Now and then a side goes past 2048, where block-multiple bugs live."""
    assert hypothesis.find(gs.sides(), lambda side: side > 2048) in gs.LARGE_SIZES
    assert hypothesis.find(gs.shapes(min_dims=2, max_numel=1 << 14), lambda s: max(s) > 2048)


@given(gs.tensors(gs.shapes(max_numel=256), elements="separated"))
def test_separated_values_are_distinct_and_away_from_zero(x: torch.Tensor) -> None:
    assert x.dtype == torch.float64 and x.device == CPU
    flat = np.sort(x.numpy().ravel())
    assert np.all(np.diff(flat) >= 1 / 16 - 1e-12), "values must be separated by more than any FD step"
    assert np.all(np.abs(flat) >= 1 / 32)


@given(gs.tensors((3, 5), elements="uniform", min_value=-0.5, max_value=0.25))
def test_tensor_values_respect_their_range(x: torch.Tensor) -> None:
    assert tuple(x.shape) == (3, 5)
    assert float(x.min()) >= -0.5 and float(x.max()) <= 0.25


@given(gs.broadcastable_shapes(max_numel=512))
def test_broadcastable_shapes_broadcast(pair: tuple[tuple[int, ...], tuple[int, ...]]) -> None:
    np.broadcast_shapes(*pair)


@given(gs.class_targets((6,), 4, ignore_index=-100))
def test_class_targets_are_classes_or_ignored(targets: torch.Tensor) -> None:
    assert targets.dtype == torch.int64
    assert bool(((targets >= 0) & (targets < 4) | (targets == -100)).all())


@given(gs.conv2d_geometries())
def test_conv2d_geometries_are_consistent(geo: gs.ConvGeometry) -> None:
    x = torch.zeros(geo.input_shape)
    w = torch.zeros(geo.weight_shape)
    out = torch.nn.functional.conv2d(x, w, None, geo.stride, geo.padding, geo.dilation, geo.groups)
    assert tuple(out.shape[2:]) == geo.output_hw and min(geo.output_hw) >= 1


# ---------------------------------------------------------------------------------------------
# check_gradients
# ---------------------------------------------------------------------------------------------


def _f64(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).standard_normal(shape))


def _counting(fn):
    """``fn``, counting its float64 calls in ``.calls`` (the finite differences make them)."""

    def counted(*args):
        counted.calls += any(isinstance(a, torch.Tensor) and a.dtype == torch.float64 for a in args)
        return fn(*args)

    counted.calls = 0
    counted.__name__ = getattr(fn, "__name__", "fn")
    return counted


def test_check_gradients_passes_a_correct_function() -> None:
    sin = _counting(torch.sin)
    assert gc.check_gradients(sin, _f64(5)) is True  # full Jacobian
    assert sin.calls >= 4 * 5, "a Richardson column (4 float64 calls) per input element"
    matmul = _counting(torch.matmul)
    assert gc.check_gradients(matmul, _f64(16, 16), _f64(16, 16, seed=1)) is True  # directional
    assert matmul.calls >= 4 * 4, "4 directions, a 4-point stencil each"


def test_check_gradients_catches_a_wrong_function() -> None:
    scaled = zoo.make_silu_grad_scaled(True)
    for mode in ("full", "directional"):
        with pytest.raises(gc.VerificationError):
            gc.check_gradients(scaled, _f64(6), mode=mode)
    correct = _counting(zoo.make_silu_grad_scaled(False))
    assert gc.check_gradients(correct, _f64(6)) is True
    assert correct.calls >= 4 * 6, "the full Jacobian was taken, not skipped"


def test_check_gradients_sees_one_wrong_jacobian_entry() -> None:
    """Signed random directions see what torch.autograd.gradcheck's fast mode cannot."""
    with pytest.raises(gc.VerificationError):
        gc.check_gradients(zoo.make_matmul16_wrong_entry(True), _f64(16, 16), _f64(16, 16, seed=1), mode="directional")


def test_check_gradients_validates_its_arguments() -> None:
    with pytest.raises(ValueError, match="mode='fast'"):
        gc.check_gradients(torch.sin, _f64(3), mode="fast")
    with pytest.raises(ValueError, match="at least one floating-point tensor"):
        gc.check_gradients(lambda n: n, torch.arange(3))
    with pytest.raises(TypeError, match="mixed dtypes"):
        gc.check_gradients(torch.add, _f64(3), _f64(3).float())


# ---------------------------------------------------------------------------------------------
# verify: argument validation
# ---------------------------------------------------------------------------------------------

_ONE_TENSOR = gs.tensors((3,)).map(lambda x: (x,))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"fn": 3}, TypeError, "fn must be callable, got int"),
        ({"reference_vjp": zoo.tanh_vjp}, ValueError, "reference_vjp without reference"),
        ({"jacobian": "sometimes"}, ValueError, "jacobian='sometimes'"),
        ({"dtypes": (torch.int32,)}, TypeError, "dtypes must be floating torch dtypes"),
        ({"dtypes": ("float32",)}, TypeError, "dtypes must be floating torch dtypes"),
        ({"max_examples": 0}, ValueError, "max_examples must be >= 1, got 0"),
    ],
)
def test_verify_validates_its_arguments(kwargs: dict, error: type[Exception], message: str) -> None:
    fn = kwargs.pop("fn", torch.tanh)
    with pytest.raises(error, match=re.escape(message)):
        gc.verify(fn, _ONE_TENSOR, **kwargs)


def _counts(report: gc.Report, dtype: str) -> dict[str, tuple[int, int]]:
    """check -> (examples, skipped) of one dtype's cells, for checks that ran or skipped at least once."""
    return {s.check: (s.examples, s.skipped) for s in report.stats if s.dtype == dtype and (s.examples or s.skipped)}


def _tanh_vjp_terms(x, g):
    """torch's tanh backward is g * (1 - y^2) from the rounded output y: the terms g and g y^2
    cancel for |x| > 2 (at x = -2.58 a correct fp32 backward is 1.2 tolerances off without them)."""
    return (np.abs(g) * (1 + np.tanh(x) ** 2),)


def test_verify_returns_a_report() -> None:
    report = gc.verify(
        torch.tanh,
        _ONE_TENSOR,
        reference=zoo.tanh_ref,
        reference_vjp=zoo.tanh_vjp,
        vjp_terms=_tanh_vjp_terms,
        dtypes=(torch.float32, torch.float64),
        ulps=4,
        name="tanh",
    )
    assert report.name == "tanh" and report.failures == []
    for dtype in ("float32", "float64"):
        counts = _counts(report, dtype)
        complete = counts["rerun"][0]  # the rerun is the last check of an example: it ran them all
        assert complete > 0 and report.examples(dtype) >= complete
        # 3 finite elements: every check runs on every example (the Jacobian too), none is skipped;
        # guards run after the forward, the backward and both halves of the rerun. (An example
        # Hypothesis abandons at a later draw, an overrun, counts in the earlier checks only.)
        for check in ("backward_fd", "reference_fd", "jacobian", "rerun"):
            assert counts[check] == (complete, 0), f"{dtype} {check}: {counts[check]}, {complete} complete examples"
        for check in ("outputs", "forward", "backward", "zero_grad"):
            assert counts[check][0] >= complete and counts[check][1] == 0, f"{dtype} {check}: {counts[check]}"
        assert counts["guards"][0] >= 4 * complete
        assert "nondiff" not in counts and "raises" not in counts


def test_tolerance_assert_close_uses_the_table():
    """The tests' comparison helper: within the dtype's bound passes; an error past it, a NaN or an
    inf where the expected value is finite, and a shape mismatch each fail with the element named."""
    assert_close, tolerance = tl.assert_close, tl.tolerance
    exact = torch.tensor([1.0, -2.0, 3.0, 1e-3], dtype=torch.float64)
    got = exact.float()
    assert_close(got, exact)  # one rounding to fp32
    bound = tolerance(torch.float32).bound(exact.numpy(), None)
    off = got.clone()
    off[2] += float(3 * bound[2])
    with pytest.raises(AssertionError, match=r"worst at \(2,\)"):
        assert_close(off, exact)
    assert_close(off, exact, depth=1000)  # a length-1000 sum may be off by that much
    with pytest.raises(AssertionError, match="NaN mismatch at"):
        assert_close(torch.tensor([float("nan"), 0.0]), torch.zeros(2, dtype=torch.float64))
    with pytest.raises(AssertionError, match="inf mismatch at"):
        assert_close(torch.tensor([float("inf")]), torch.tensor([-float("inf")]))
    with pytest.raises(AssertionError, match="shape"):
        assert_close(torch.zeros(2), torch.zeros(3))


def _squared_error(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b) ** 2


def _squared_error_ref(a, b):
    return (np.asarray(a) - np.asarray(b)) ** 2


def _squared_error_vjp(a, b, g):
    d = 2 * (np.asarray(a) - np.asarray(b)) * g
    return d, -d


@pytest.mark.parametrize(
    "values", [[2.0] * 5, [4.0, -3.0, 3.0, -1.0, 0.0], [0.125732421875] * 3], ids=["constant", "mixed", "fraction"]
)
def test_finite_differences_at_a_minimum_are_not_false_positives(values) -> None:
    """At a = b the gradient of (a - b)^2 is exactly 0 while the finite difference is rounding of
    x + t v times the slope beside x (O(h)): the bound must count it (the thorough profile found
    mse_loss failing here at float32, bfloat16 and float64)."""
    x = torch.tensor(values, dtype=torch.float64)
    report = gc.verify(
        _squared_error,
        st.just((x, x.clone())),
        reference=_squared_error_ref,
        reference_vjp=_squared_error_vjp,
        dtypes=(torch.float32, torch.bfloat16, torch.float64),
        max_examples=40,
        name="squared_error_at_a_minimum",
    )
    assert report.failures == []
    for dtype in ("float32", "bfloat16", "float64"):
        counts = _counts(report, dtype)
        complete = counts["rerun"][0]
        # the finite differences were taken at the minimum on every complete example, not skipped
        assert complete > 0
        for check in ("backward_fd", "reference_fd", "jacobian"):
            assert counts[check] == (complete, 0), f"{dtype} {check}: {counts[check]}, {complete} complete examples"


def _smooth_l1_1d(x: np.ndarray) -> np.ndarray:
    """smooth-L1 at beta = 1 of one element: C1, its second derivative jumps from 1 to 0 at |x| = 1."""
    a = np.abs(x)
    return np.where(a < 1.0, 0.5 * x * x, a - 0.5)


@pytest.mark.parametrize("side", [1.0, -1.0])
def test_the_richardson_bound_covers_a_jump_of_the_second_derivative(side) -> None:
    """A C1 function whose second derivative jumps by J inside the stencil: the central
    differences d1 (step h) and d2 (2h) are off by J h p(a) and J h q(a), with a the jump's distance
    in steps, and Richardson's (4 d1 - d2) / 3 stays within 2/3 of |d1 - d2| (the truncation term of
    ``fd.directional``'s bound) for every a (the worst, 2/3, with the jump at x). So finite
    differences of smooth-L1 or Huber need no kink declared at the threshold."""
    from gradcheck import fd

    h = 1e-3
    worst = 0.0
    for a in np.linspace(-3.0, 3.0, 241):
        x = np.array([side * (1.0 + a * h)])
        slope = np.where(np.abs(x) < 1.0, x, np.sign(x))
        est, bound = fd.directional(
            lambda arrays: [_smooth_l1_1d(arrays[0])], [x], diff=[0], vs=[np.ones(1)],
            grad_outputs={0: np.ones(1)}, h=h, slopes=[slope], depth=1,
        )  # fmt: skip
        worst = max(worst, abs(est - float(slope[0])) / bound)  # the slope is continuous: C1
    assert 0.5 < worst <= 2 / 3 + 1e-6


def _layer_norm_last(x, w, b):
    return torch.nn.functional.layer_norm(x, x.shape[-1:], w, b)


def test_finite_differences_of_a_norm_bending_below_the_step_take_a_second_opinion() -> None:
    """Rows of spread 0.01 around 10: a norm bends on the scale of the spread, the engine's step is
    1e-3 of the inputs' scale (10), and the Richardson estimate at that step was off by more than
    its own error bound: torch's own layer_norm against itself failed backward_fd at float64
    (measured). The check now takes the difference again at h/8 and h/64 before a verdict."""
    gen = torch.Generator().manual_seed(1)
    x = 10.0 + 0.01 * torch.randn(3, 8, generator=gen, dtype=torch.float64)
    w, b = (torch.randn(8, generator=gen, dtype=torch.float64) for _ in range(2))
    with profiles.overridden(derandomize=True, database=None):  # the directions that failed
        report = gc.verify(
            _layer_norm_last, st.just((x, w, b)), reference=_layer_norm_last, dtypes=(torch.float64,), max_examples=30
        )
    assert report.stat("float64", "backward_fd").examples > 0


def _shifted(x):
    """[1000 x0, (100 x1 + 0.5) - 100 x1]: the second output is 0.5 in arithmetic, with a rounding of
    100 |x1| ulps at float64 (within the forward's normwise bound, set by the first output)."""
    return torch.stack([1000 * x[0], (100 * x[1] + 0.5) - 100 * x[1]])


def _shifted_reference(x):
    return np.stack([1000 * x[0], 0.5 + 0 * x[1]])


def _shifted_vjp(x, g):
    return (np.stack([1000 * g[0], 0 * g[1]]),)


def test_finite_differences_of_an_implementation_that_cancels_inside_ask_the_reference() -> None:
    """At float64 the engine differences the implementation's own forward. torch's group_norm
    computes a one-element group as x * (w / sqrt(eps)) + (b - mean * w / sqrt(eps)): b in
    arithmetic, with a rounding of |x w| / sqrt(eps) ulps that the difference divides by the step.
    Its exact Jacobian entry 0 failed 'jacobian' against a difference of 1.6e-10 under thorough
    (measured, this input). The checks now ask the reference's difference before a verdict."""
    x = torch.tensor([[0.12573, -0.132105], [0.640423, 0.1049]], dtype=torch.float64)
    w = torch.tensor([0.12573, -0.132105], dtype=torch.float64)
    spec = gc.catalog()["group_norm"]
    with profiles.overridden(derandomize=True, database=None):
        report = gc.verify_op(
            "group_norm",
            impl=spec.torch_fn,
            inputs=lambda dtype: st.just((x, 2, w, w, 1e-5)),
            dtypes=(torch.float64,),
            max_examples=20,
        )
    assert report.stat("float64", "jacobian").examples > 0


def test_a_gradient_that_overflows_the_dtype_is_not_judged_by_finite_differences() -> None:
    """a / b with a = 2^-7 of shape (1, 1) broadcast over 8194 elements of b = 2^-11: a's gradient,
    the sum of 2048 g, lies past fp16's largest finite value, so a correct fp16 kernel returns inf
    ('backward' expects that overflow). 'backward_fd' failed torch.div there under thorough (a
    difference of finite forwards against an infinite gradient, measured); it now skips it."""
    a = torch.full((1, 1), 2.0**-7, dtype=torch.float64)
    b = torch.full((1, 4097, 2), 2.0**-11, dtype=torch.float64)
    with profiles.overridden(derandomize=True, database=None):
        report = gc.verify_op(
            "div", impl=torch.div, inputs=lambda dtype: st.just((a, b)), dtypes=[torch.float16], max_examples=5
        )
    assert report.stat("float16", "backward").examples > 0
    assert report.stat("float16", "backward_fd").skipped > 0


class _ShiftedWrongSlope(torch.autograd.Function):
    """``_shifted`` whose backward gives x1 a slope of 1 (its true slope is 0)."""

    @staticmethod
    def forward(ctx, x):
        return _shifted(x)

    @staticmethod
    def backward(ctx, g):
        return torch.stack([1000 * g[0], g[1]])


@pytest.mark.parametrize("jacobian", ["always", "off"])
def test_a_wrong_vjp_still_fails_with_the_reference_opinion(jacobian: str) -> None:
    """The reference's difference acquits only a VJP that agrees with it: with no reference VJP, the
    differences alone judge the backward, and a wrong slope fails both."""
    x = torch.tensor([0.7, 1.3], dtype=torch.float64)
    with pytest.raises(gc.VerificationError) as caught:
        gc.verify(
            _ShiftedWrongSlope.apply,
            st.just((x,)),
            reference=_shifted_reference,
            dtypes=(torch.float64,),
            max_examples=5,
            jacobian=jacobian,
            layouts={0: ("contiguous",)},
        )
    assert caught.value.check in ("backward_fd", "jacobian"), str(caught.value)
    assert "the reference's own" in str(caught.value)


# ---------------------------------------------------------------------------------------------
# hooks: default device and poisoned allocation
# ---------------------------------------------------------------------------------------------


def test_default_device_is_the_cpu_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert hooks.default_device() == CPU


def test_default_device_is_the_current_cuda_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert hooks.default_device() == torch.device("cuda", 1)


class _PoolAllocator:
    """A custom allocator that hands out zeroed memory (a pool, say): torch's deterministic fill
    never reaches it, so only its poison hook can make an element nobody wrote show."""

    def __init__(self) -> None:
        self.fill: float | None = None
        self.fills: list[float] = []  # every fill the hook was entered with

    @contextlib.contextmanager
    def poison(self, fill: float):
        previous, self.fill = self.fill, fill
        self.fills.append(fill)
        try:
            yield
        finally:
            self.fill = previous

    def empty_like(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape, dtype=x.dtype, device=x.device)
        if self.fill is not None:
            out.fill_(self.fill if math.isnan(self.fill) else min(self.fill, torch.finfo(x.dtype).max))
        return out


@pytest.fixture
def pool() -> Iterator[_PoolAllocator]:
    """A pool allocator with its poison hook registered for the test, unregistered after it."""
    allocator = _PoolAllocator()
    hook = allocator.poison
    assert hooks.register_poison_hook(hook) is hook, "returns the hook: a decorator"
    try:
        yield allocator
    finally:
        hooks.unregister_poison_hook(allocator.poison)
    assert allocator.poison not in hooks.poison_hooks()


def _relu_through(allocator: _PoolAllocator):
    """relu that stores only where x > 0 into memory from ``allocator``: correct on zeroed memory, by luck."""

    class PoolReluFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            out = allocator.empty_like(x)
            positive = x > 0
            out[positive] = x[positive]
            return out

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return torch.where(x > 0, g, torch.zeros_like(g))

    PoolReluFunction.__name__ = PoolReluFunction.__qualname__ = "pool_relu"
    return PoolReluFunction.apply


def _identity_through(allocator: _PoolAllocator):
    """y = fmax(acc, x) with the accumulator ``acc`` never initialised (it should start at -inf):
    fmax swallows the NaN of the first pass, so only the rerun's sentinel shows the bug."""

    class PoolRunningMaxFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return torch.fmax(allocator.empty_like(x), x)

        @staticmethod
        def backward(ctx, g):
            return g

    PoolRunningMaxFunction.__name__ = PoolRunningMaxFunction.__qualname__ = "pool_running_max"
    return PoolRunningMaxFunction.apply


_SEPARATED = gs.tensors(gs.shapes(min_dims=1, max_numel=64), elements="separated").map(lambda x: (x,))


def _verify_relu(fn, name: str) -> gc.Report:
    return gc.verify(
        fn,
        _SEPARATED,
        reference=zoo.relu_ref,
        reference_vjp=zoo.relu_vjp,
        kinks=zoo.relu_kinks,
        name=name,
        max_examples=10,
        device=CPU,
        max_findings=1,  # the first failure is what these tests look at
    )


def test_a_poison_hook_shows_an_unwritten_output(pool: _PoolAllocator) -> None:
    with pytest.raises(gc.VerificationError) as caught:
        _verify_relu(_relu_through(pool), "pool_relu")
    assert caught.value.check == "forward"
    assert "NaN where the reference is finite" in str(caught.value)
    assert math.isnan(pool.fills[0]), "the first pass poisons with NaN"
    assert pool.fill is None, "every hook context is left after the call"


def test_without_its_poison_hook_an_unwritten_output_hides() -> None:
    """The same bug on zeroed memory passes: the hook, not luck, is what catches it above."""
    allocator = _PoolAllocator()
    report = _verify_relu(_relu_through(allocator), "pool_relu_unhooked")
    assert report.failures == [] and report.examples("float32") > 0
    assert allocator.fills == []


def test_a_poison_hook_gets_the_sentinel_on_the_rerun(pool: _PoolAllocator) -> None:
    with pytest.raises(gc.VerificationError) as caught:
        gc.verify(
            _identity_through(pool),
            _SEPARATED,
            reference=lambda x: x,
            reference_vjp=lambda x, g: (g,),
            name="pool_running_max",
            max_examples=10,
            device=CPU,
        )
    assert caught.value.check == "rerun", "fmax swallows NaN: the forward pass cannot see the bug"
    sentinel = torch.finfo(torch.float32).max
    assert any(math.isnan(f) for f in pool.fills) and sentinel in pool.fills
    assert repr(sentinel) in str(caught.value)


def test_unregister_poison_hook() -> None:
    allocator = _PoolAllocator()
    hooks.register_poison_hook(allocator.poison)
    hooks.register_poison_hook(allocator.poison)
    assert hooks.poison_hooks().count(allocator.poison) == 1, "registered once"
    with hooks.poisoned(float("nan")):
        assert math.isnan(allocator.fill)
    hooks.unregister_poison_hook(allocator.poison)
    hooks.unregister_poison_hook(allocator.poison)  # not registered any more: ignored
    assert allocator.poison not in hooks.poison_hooks()
    with hooks.poisoned(float("nan")):
        assert allocator.fill is None
    assert len(allocator.fills) == 1
    with pytest.raises(TypeError, match="a poison hook must be callable"):
        hooks.register_poison_hook(3.0)


def test_poisoned_restores_torch_settings() -> None:
    det, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    with hooks.poisoned(float("nan")):
        assert torch.are_deterministic_algorithms_enabled()
        assert bool(torch.isnan(torch.empty(8)).all()), "torch.empty returns NaN-filled memory meanwhile"
    assert torch.are_deterministic_algorithms_enabled() == det
    assert torch.is_deterministic_algorithms_warn_only_enabled() == warn_only


_EP_HOOK_FILLS: list[float] = []


@contextlib.contextmanager
def _entry_point_hook(fill: float):
    _EP_HOOK_FILLS.append(fill)
    yield


def test_advertised_hooks_only_of_imported_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry point of the ``gradcheck.poison`` group counts once its module is imported; one
    whose module is not imported is never loaded (loading it would import it)."""
    imported = EntryPoint("here", f"{__name__}:_entry_point_hook", hooks.POISON_ENTRY_POINT_GROUP)
    elsewhere = EntryPoint("elsewhere", "tests.gradcheck.no_such_module:hook", hooks.POISON_ENTRY_POINT_GROUP)
    monkeypatch.setattr(hooks, "_advertised", lambda: (elsewhere, imported))
    monkeypatch.setattr(hooks, "_loaded", {})
    assert hooks.poison_hooks()[-1] is _entry_point_hook
    assert "tests.gradcheck.no_such_module" not in sys.modules
    assert list(hooks._loaded) == [("here", imported.value)], "loaded once, then cached"
    _EP_HOOK_FILLS.clear()
    with hooks.poisoned(1.5):
        pass
    assert _EP_HOOK_FILLS == [1.5]


def test_an_advertised_hook_that_does_not_load_is_an_engine_error(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = EntryPoint("broken", f"{__name__}:_no_such_hook", hooks.POISON_ENTRY_POINT_GROUP)
    monkeypatch.setattr(hooks, "_advertised", lambda: (broken,))
    monkeypatch.setattr(hooks, "_loaded", {})
    with pytest.raises(RuntimeError, match=r"the poison hook broken = .*_no_such_hook.* does not load"):
        hooks.poison_hooks()


def test_import_gradcheck_imports_no_kernels() -> None:
    """``import gradcheck`` sets no environment variable and imports neither kernels nor triton."""
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "GRADCHECK_INTERPRET")}
    code = (
        "import gradcheck, sys, os; "
        "assert 'triton' not in sys.modules and 'kernels' not in sys.modules, sorted(sys.modules); "
        "assert 'TRITON_INTERPRET' not in os.environ; print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


# ---------------------------------------------------------------------------------------------
# Hypothesis: a database key and a derandomized sequence per op and dtype
# ---------------------------------------------------------------------------------------------


def test_stored_failures_are_keyed_by_op_and_dtype() -> None:
    """Two ops failing on the same engine code store their examples under distinct keys."""
    db = InMemoryExampleDatabase()
    mutant = zoo.make_silu_grad_scaled(True)
    options = {"reference": zoo.silu_ref, "reference_vjp": zoo.silu_vjp, "dtypes": (torch.float64,), "ulps": 4}
    with profiles.overridden(database=db, derandomize=False, phases=[hypothesis.Phase.generate], max_examples=5):
        for name in ("op_a", "op_b"):
            with pytest.raises(gc.VerificationError):
                gc.verify(mutant, _ONE_TENSOR, name=name, **options)
    keys = {name: {k for k in db.data if name.encode() in k} for name in ("op_a", "op_b")}
    assert keys["op_a"] and keys["op_b"], sorted(db.data)
    assert keys["op_a"].isdisjoint(keys["op_b"])
    assert all(k.startswith(b"gradcheck.verify[op_a, float64]:") for k in keys["op_a"])


def test_derandomized_draws_depend_on_op_and_dtype() -> None:
    """Under a derandomized profile each op and dtype gets its own (reproducible) sequence of examples."""

    def drawn(name: str, dtype: torch.dtype) -> list[list[float]]:
        seen: list[list[float]] = []

        def tanh(x: torch.Tensor) -> torch.Tensor:
            if not x.requires_grad:
                seen.append(x.tolist())
            return torch.tanh(x)

        gc.verify(tanh, _ONE_TENSOR, reference=zoo.tanh_ref, dtypes=(dtype,), name=name, ulps=4, backward=False)
        return seen

    with profiles.overridden(derandomize=True, database=None, max_examples=3):
        first = drawn("op_a", torch.float64)
        assert first == drawn("op_a", torch.float64), "derandomized: the same sequence every time"
        assert first != drawn("op_b", torch.float64)
        assert first != drawn("op_a", torch.float32)
