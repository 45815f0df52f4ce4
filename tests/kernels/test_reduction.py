"""sum, mean, amax/amin, max/min: property tests through the engine, plus the edge cases it does not draw."""

import math

import pytest
import torch

from gradcheck.testing import op_tests
from gradcheck.tolerances import assert_close
from kernels import _runtime as rt
from kernels import reduction as rd
from tests.kernels.library_checks import DTYPES, assert_compiled_matches_eager, assert_opcheck_passes

test_sum = op_tests("sum")
test_mean = op_tests("mean")
test_amax = op_tests("amax")
test_amin = op_tests("amin")
test_max = op_tests("max")
test_min = op_tests("min")

DEV = rt.device()
NAN = math.nan


def _grads(fn, x: torch.Tensor, g: torch.Tensor | None = None):
    """(output, grad of the input) for ``fn`` on a fresh leaf copy of ``x``."""
    x = x.detach().requires_grad_()
    out = fn(x)
    values = out[0] if isinstance(out, tuple) else out
    grad = torch.autograd.grad(values, x, torch.ones_like(values) if g is None else g)[0]
    return out, grad


def test_max_over_a_row_with_nan_returns_nan_and_its_index_as_torch():
    x = torch.tensor(
        [[1.0, NAN, 3.0, NAN], [2.0, 5.0, 5.0, 1.0], [-math.inf, -math.inf, -math.inf, -math.inf]], device=DEV
    )
    for ours, theirs in ((rd.max, torch.max), (rd.min, torch.min)):
        (v, i), dx = _grads(lambda t, ours=ours: ours(t, 1), x)
        (tv, ti), tdx = _grads(lambda t, theirs=theirs: theirs(t, 1), x)
        assert torch.equal(v.isnan(), tv.isnan()) and torch.equal(v[~v.isnan()], tv[~tv.isnan()])  # exact
        assert torch.equal(i, ti)  # the first NaN, the first of tied maxima
        assert torch.equal(dx, tdx)


def test_amax_propagates_nan_and_splits_the_gradient_among_ties_as_torch():
    x = torch.tensor([[1.0, 5.0, 5.0, 2.0], [1.0, NAN, 3.0, 0.0], [7.0, 7.0, 7.0, 7.0]], device=DEV)
    for ours, theirs in ((rd.amax, torch.amax), (rd.amin, torch.amin)):
        y, dx = _grads(lambda t, ours=ours: ours(t, 1), x)
        ty, tdx = _grads(lambda t, theirs=theirs: theirs(t, 1), x)
        assert_close(y, ty, expected_rounded=True)  # a max is exact; NaN where torch has NaN
        assert_close(dx, tdx, grad=True, expected_rounded=True)  # 1/2 to each tie, NaN across a NaN row


@pytest.mark.parametrize("n", [1, 17, 4097, 50_000])
def test_long_rows_and_split_reductions_match_torch(n):
    """Rows longer than a tile (the loop) and few rows with a long reduction (split into partial
    results and a second pass), with ties placed in different splits."""
    gen = torch.Generator().manual_seed(n)
    x = torch.randn(3, n, generator=gen, dtype=torch.float64).to(DEV)
    x[:, n // 3] = x[:, -1] = 10.0  # tied maxima far apart
    x[1, n // 2] = NAN
    for ours, theirs in ((rd.max, torch.max), (rd.min, torch.min)):
        (v, i), _ = _grads(lambda t, ours=ours: ours(t, 1), x)
        tv, ti = theirs(x, 1)
        assert_close(v, tv, expected_rounded=True)
        assert torch.equal(i, ti)
    for dim in (None, 1, 0):
        depth = x.numel() if dim is None else x.shape[dim]
        assert_close(rd.sum(x, dim), x.sum(dim) if dim is not None else x.sum(), depth=depth, expected_rounded=True)
        everything = dim if dim is not None else ()
        assert_close(rd.amax(x, everything), x.amax(everything), expected_rounded=True)
    y = torch.randn(n, 5, generator=gen, dtype=torch.float64).to(DEV)
    assert_close(rd.sum(y, 0), y.sum(0), depth=n, expected_rounded=True)  # memory runs along the kept dim
    assert_close(rd.mean(y, (0,), keepdim=True), y.mean(0, keepdim=True), depth=n, expected_rounded=True)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_sums_accumulate_in_fp32(dtype):
    """2048 + 4096 ones: an fp16/bf16 accumulator stops at 2048 (or 256) + a few; fp32 is exact."""
    x = torch.ones(4097, dtype=dtype, device=DEV)
    x[0] = 2048.0
    assert rd.sum(x).item() == 6144.0
    # within one unit of bf16 (the interpreter truncates fp32 -> bf16; a GPU rounds to nearest)
    assert rd.mean(x.view(1, -1), 1).item() == pytest.approx(6144.0 / 4097, rel=2**-7)


@pytest.mark.parametrize("op", ["sum", "mean", "amax", "max"])
def test_layouts_that_do_not_collapse_match_torch(op):
    """Six dims permuted so that no two merge, reducing every other dim: the rare copy path."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 2, 3, 2, 3, generator=gen, dtype=torch.float64).to(DEV).permute(5, 3, 1, 4, 2, 0)
    dims = (0, 2, 4)
    calls = {
        "sum": (lambda t: rd.sum(t, dims), lambda t: t.sum(dims)),
        "mean": (lambda t: rd.mean(t, dims, keepdim=True), lambda t: t.mean(dims, keepdim=True)),
        "amax": (lambda t: rd.amax(t, dims), lambda t: t.amax(dims)),
        "max": (lambda t: rd.max(t, 3)[0], lambda t: t.max(3)[0]),
    }
    ours, theirs = calls[op]
    y, dx = _grads(ours, x)
    ty, tdx = _grads(theirs, x)
    assert_close(y, ty, depth=3 * 3 * 3, expected_rounded=True)  # sums of the 27 reduced elements
    assert_close(dx, tdx, grad=True, expected_rounded=True)


def test_dim_forms_and_keepdim_match_torch():
    x = torch.randn(2, 3, 4, dtype=torch.float64, device=DEV)
    for dim in (None, (), 0, -1, (0, 2), (-1, 0), [1]):
        for keepdim in (False, True):
            ref_dim = tuple(range(3)) if dim is None or dim == () else dim
            depth = x.numel()
            assert_close(rd.sum(x, dim, keepdim), x.sum(ref_dim, keepdim), depth=depth, expected_rounded=True)
            assert_close(rd.mean(x, dim, keepdim), x.mean(ref_dim, keepdim), depth=depth, expected_rounded=True)
            if dim is not None:
                assert_close(rd.amax(x, dim, keepdim), x.amax(dim, keepdim), expected_rounded=True)


def test_empty_and_zero_dim():
    e = torch.empty(0, 3, device=DEV)
    assert torch.equal(rd.sum(e, 0), torch.zeros(3, device=DEV))
    assert torch.isnan(rd.mean(e, 0)).all()
    assert rd.amax(e, 1).shape == (0,)
    s = torch.tensor(3.0, device=DEV)
    assert rd.sum(s).item() == 3.0 and rd.amax(s).item() == 3.0
    v, i = rd.max(s, 0)
    assert v.item() == 3.0 and i.item() == 0 and i.dtype == torch.int64


def test_sum_backward_is_a_broadcast_of_grad_output():
    x = torch.randn(4, 5, device=DEV, requires_grad=True)
    g = torch.randn(5, device=DEV)
    (dx,) = torch.autograd.grad(rd.sum(x, 0), x, g)
    assert torch.equal(dx, g.expand(4, 5))


def test_rejects_bad_dims():
    x = torch.ones(2, 3, device=DEV)
    with pytest.raises(IndexError, match=r"dim=2 is out of range"):
        rd.sum(x, 2)
    with pytest.raises(IndexError, match=r"dim=-3 is out of range"):
        rd.amax(x, (0, -3))
    with pytest.raises(ValueError, match="appears more than once"):
        rd.mean(x, (1, -1))
    with pytest.raises(TypeError, match="dim must be an int"):
        rd.sum(x, "0")
    with pytest.raises(TypeError, match="dim must be an int"):
        rd.max(x, None)


def test_rejects_empty_extremes_integer_dtypes_and_other_devices():
    with pytest.raises(IndexError, match="reduction dim 0 has size 0"):
        rd.amax(torch.empty(0, 3, device=DEV), 0)
    with pytest.raises(IndexError, match="reduction dim 1 has size 0"):
        rd.max(torch.empty(2, 0, device=DEV), 1)
    with pytest.raises(TypeError, match="dtype int64"):
        rd.sum(torch.arange(3, device=DEV))
    with pytest.raises(ValueError, match="input is on meta"):
        rd.sum(torch.ones(3, device="meta"))


def test_reruns_are_bitwise_identical():
    x = torch.randn(7, 20_000, dtype=torch.float32, device=DEV)
    assert torch.equal(rd.sum(x, 1), rd.sum(x.clone(), 1))
    assert torch.equal(rd.sum(x), rd.sum(x.clone()))


@pytest.mark.gpu
def test_sum_past_2_31_elements():
    """int64 offsets: the whole sum, rows whose second half starts past 2^31, and columns. Zeros
    except a few integers, some stored past 2^31, so every sum is exact and an offset that wraps
    at 2^31 (reading the wrong element, or none) changes it."""
    n = 2**31 + 2**21
    x = torch.zeros(n, dtype=torch.float32, device=DEV)
    marks = {7: 1.0, 2**30 + 3: 2.0, 2**31 + 123: 4.0, n - 2: 8.0, n - 1: 16.0}
    for index, value in marks.items():
        x[index] = value
    assert rd.sum(x).item() == 31.0
    half = n // 2  # rows of 2^30 + 2^20: row 1 holds every index from half on
    rows = rd.sum(x.view(2, half), 1).tolist()
    assert rows == [sum(v for i, v in marks.items() if i < half), sum(v for i, v in marks.items() if i >= half)]
    cols = rd.sum(x.view(half, 2), 0).tolist()  # even and odd indices
    assert cols == [sum(v for i, v in marks.items() if i % 2 == 0), sum(v for i, v in marks.items() if i % 2 == 1)]


# ---------------------------------------------------------------------------------------------
# torch.library registration: opcheck and torch.compile
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_opcheck_reduction(dtype):
    x = torch.randn(3, 4, 5, dtype=dtype, generator=torch.Generator().manual_seed(0)).to(rt.device())
    x = x.transpose(0, 2).requires_grad_()  # (5, 4, 3), not contiguous
    ops = torch.ops.blitz
    for name in ("sum", "mean", "amax", "amin"):
        assert_opcheck_passes(getattr(ops, name).default, (x, [0, 2], False))
        assert_opcheck_passes(getattr(ops, name).default, (x, [1], True))
    for name in ("max", "min"):
        assert_opcheck_passes(getattr(ops, name).default, (x, 1, False))
    scalar = torch.tensor(2.0, dtype=dtype, device=rt.device(), requires_grad=True)
    assert_opcheck_passes(ops.sum.default, (scalar, [], False))  # no dims: a copy, never the input itself
    assert_opcheck_passes(ops.max.default, (scalar, 0, True))


@pytest.mark.parametrize("name", ["sum", "mean", "amax", "amin", "max", "min"])
def test_reduction_compiles(name):
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0)).to(rt.device())
    weights = torch.arange(3.0, device=rt.device())
    fn = getattr(rd, name)
    if name in ("max", "min"):
        assert_compiled_matches_eager(lambda t: fn(t, 1).values * weights, x)
    else:
        assert_compiled_matches_eager(lambda t: fn(t, 1) * weights, x)
