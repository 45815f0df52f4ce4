"""softmax and log_softmax: property tests through the engine, plus the edge cases it does not draw."""

import math

import pytest
import torch

import kernels.softmax as ks
from gradcheck.testing import op_tests
from gradcheck.tolerances import assert_close
from kernels import _runtime as rt
from kernels.softmax import log_softmax, softmax
from tests.kernels.library_checks import DTYPES, assert_compiled_matches_eager, assert_opcheck_passes

test_softmax = op_tests("softmax")
test_log_softmax = op_tests("log_softmax")

OPS = [(softmax, torch.softmax), (log_softmax, torch.log_softmax)]
IDS = ["softmax", "log_softmax"]


def _forward_backward(fn, x, dim):
    x = x.detach().requires_grad_()
    y = fn(x, dim)
    g = torch.randn(y.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).to(y)
    (dx,) = torch.autograd.grad(y, x, g)
    return y, dx


@pytest.mark.parametrize(("ours", "theirs"), OPS, ids=IDS)
def test_nan_and_inf_rows_match_torch(ours, theirs):
    """A full -inf row gives NaN, +inf or NaN in a row gives NaN, partial -inf rows are exact 0
    (or -inf): all as torch, forward and backward."""
    inf = math.inf
    x = torch.tensor(
        [[-inf, -inf, -inf], [1.0, inf, 2.0], [1.0, math.nan, 2.0], [-inf, 0.5, -inf], [3.0, -inf, 1.0]],
        device=rt.device(),
    )
    y, dx = _forward_backward(ours, x, 1)
    y_ref, dx_ref = _forward_backward(theirs, x, 1)
    assert_close(y, y_ref, depth=3, expected_rounded=True, msg="forward")
    assert_close(dx, dx_ref, depth=3, grad=True, expected_rounded=True, msg="backward")


@pytest.mark.parametrize(("ours", "theirs"), OPS, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_logits_of_1e4_are_stable(ours, theirs, dtype):
    x = (torch.randn(6, 50, generator=torch.Generator().manual_seed(2)) * 1e4).to(dtype).to(rt.device())
    y, dx = _forward_backward(ours, x, 1)
    y_ref, dx_ref = _forward_backward(theirs, x.double(), 1)
    # no overflow: every probability in [0, 1], every log-probability finite and <= 0, every grad finite
    assert torch.isfinite(y).all() and torch.isfinite(dx).all()
    assert ((y >= 0) & (y <= 1)).all() if ours is softmax else (y <= 0).all()
    # the exact results on the rounded inputs; a row of 50 is the sum's depth
    assert_close(y, y_ref, depth=x.shape[1], msg="forward")
    assert_close(dx, dx_ref, depth=x.shape[1], grad=True, msg="backward")


@pytest.mark.parametrize(("ours", "theirs"), OPS, ids=IDS)
@pytest.mark.parametrize("dim", [0, 1, 2])
def test_rows_longer_than_a_tile_match_torch(ours, theirs, dim):
    """Rows past MAX_ROW are streamed in chunks with an online max; along every dim of a 3-d tensor."""
    shape = [3, 2, 2]
    shape[dim] = ks.MAX_ROW + 77
    x = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3)).to(rt.device()) * 5
    y, dx = _forward_backward(ours, x, dim)
    y_ref, dx_ref = _forward_backward(theirs, x, dim)
    assert_close(y, y_ref, depth=shape[dim], expected_rounded=True, msg="forward")
    assert_close(dx, dx_ref, depth=shape[dim], grad=True, expected_rounded=True, msg="backward")


@pytest.mark.parametrize("length", [3, ks.MAX_ROW + 5])
def test_softmax_gradient_near_saturation_keeps_fp32_accuracy(length):
    """Where one probability is within 1e-7 of 1, y * (g - sum(g y)) computed from a rounded y loses
    the bracket entirely (torch eager's fp32 error there is O(1) relative); ours stays at fp32 level."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(4, length, generator=gen) * 2
    x[:, 1] += 17.0
    g = torch.randn(4, length, generator=gen)
    xd = x.double().requires_grad_()
    (exact,) = torch.autograd.grad(torch.softmax(xd, 1), xd, g.double())
    xs = x.to(rt.device()).requires_grad_()
    (ours,) = torch.autograd.grad(softmax(xs, 1), xs, g.to(rt.device()))
    assert_close(ours, exact, depth=length, grad=True)


@pytest.mark.parametrize(("ours", "expected"), [(softmax, 1.0), (log_softmax, 0.0)], ids=IDS)
def test_zero_dim_input(ours, expected):
    x = torch.tensor(3.5, device=rt.device(), requires_grad=True)
    y = ours(x, 0)
    assert y.shape == () and y.item() == expected
    (dx,) = torch.autograd.grad(y, x)
    assert dx.item() == 0.0


@pytest.mark.parametrize("ours", [softmax, log_softmax], ids=IDS)
def test_empty_input(ours):
    for shape, dim in (((0, 4), 1), ((3, 0), 1), ((3, 0), 0)):
        x = torch.empty(shape, device=rt.device(), requires_grad=True)
        y = ours(x, dim)
        assert y.shape == shape
        (dx,) = torch.autograd.grad(y, x, torch.ones_like(y))
        assert dx.shape == shape


@pytest.mark.parametrize("ours", [softmax, log_softmax], ids=IDS)
def test_bad_input_raises(ours):
    x = torch.randn(2, 3, device=rt.device())
    with pytest.raises(IndexError, match="dim=2 is out of range"):
        ours(x, 2)
    with pytest.raises(TypeError, match="dim must be an int"):
        ours(x, 1.0)
    with pytest.raises(TypeError, match="dtype int64"):
        ours(torch.ones(2, 3, dtype=torch.int64, device=rt.device()), 1)


def test_dtype_option_casts_first():
    x = torch.randn(4, 5, device=rt.device())
    y = softmax(x, 1, dtype=torch.float64)
    assert y.dtype == torch.float64
    assert_close(y, torch.softmax(x.double(), 1), depth=x.shape[1])


# ---------------------------------------------------------------------------------------------
# torch.library registration: opcheck and torch.compile
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_opcheck_softmax(dtype):
    x = torch.randn(4, 6, dtype=dtype, generator=torch.Generator().manual_seed(0)).to(rt.device())
    ops = torch.ops.blitz
    for name in ("softmax", "log_softmax"):
        assert_opcheck_passes(getattr(ops, name).default, (x.requires_grad_(), 1))
        assert_opcheck_passes(getattr(ops, name).default, (x.t(), 0))  # reduced dim not contiguous
        assert_opcheck_passes(getattr(ops, name + "_backward").default, (x.detach()[:, ::2], x.detach()[:, 1::2], 0))


@pytest.mark.parametrize("ours", [softmax, log_softmax], ids=IDS)
def test_softmax_compiles(ours):
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(0)).to(rt.device())
    weights = torch.arange(15.0, device=rt.device()).reshape(3, 5)
    assert_compiled_matches_eager(lambda t: ours(t, 1) * weights, x)


def test_softmax_compiles_with_inductor():
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(0)).to(rt.device())
    weights = torch.arange(15.0, device=rt.device()).reshape(3, 5)
    assert_compiled_matches_eager(lambda t: softmax(t * 2, 0) * weights, x, backend="inductor")
