"""mse_loss: property tests through the engine, plus the edge cases it does not draw."""

import pytest
import torch
import torch.nn.functional as F

from gradcheck.testing import op_tests
from gradcheck.tolerances import assert_close
from kernels import _runtime as rt
from kernels.mse import mse_loss
from tests.kernels.library_checks import DTYPES, assert_compiled_matches_eager, assert_opcheck_passes

test_mse_loss = op_tests("mse_loss")


def _randn(*shape, dtype=torch.float64, seed=0):
    return torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(seed)).to(rt.device())


def test_mse_loss_bad_input_raises():
    with pytest.raises(ValueError, match="differ in shape"):
        mse_loss(_randn(3, 4), _randn(4))
    with pytest.raises(ValueError, match="reduction='max'"):
        mse_loss(_randn(3), _randn(3), reduction="max")
    with pytest.raises(TypeError, match="mixed dtypes"):
        mse_loss(_randn(3), _randn(3, dtype=torch.float32))
    with pytest.raises(NotImplementedError, match="weight"):
        mse_loss(_randn(3), _randn(3), weight=_randn(3))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_loss_empty_and_zero_dim(reduction):
    for shape in ((0, 3), ()):
        x, y = _randn(*shape).requires_grad_(), _randn(*shape, seed=1).requires_grad_()
        out = mse_loss(x, y, reduction=reduction)
        ref = F.mse_loss(x.detach(), y.detach(), reduction=reduction)
        assert_close(out, ref, depth=max(x.numel(), 1), expected_rounded=True)
        dx, dy = torch.autograd.grad(out, (x, y), torch.ones_like(out))
        assert dx.shape == shape and dy.shape == shape


def test_mse_loss_both_gradients_and_layouts_match_torch():
    x = _randn(5, 6, 7).transpose(0, 2).requires_grad_()
    y = _randn(1, 6, 1, seed=2).expand(7, 6, 5).requires_grad_()
    for reduction in ("mean", "sum", "none"):
        out = mse_loss(x, y, reduction=reduction)
        ref = F.mse_loss(x, y, reduction=reduction)
        g = _randn(*out.shape, seed=3)
        assert_close(out, ref, depth=x.numel(), expected_rounded=True)
        for got, want in zip(torch.autograd.grad(out, (x, y), g), torch.autograd.grad(ref, (x, y), g), strict=True):
            # y's gradient sums over the 7 * 5 positions it was expanded along
            assert_close(got, want, depth=7 * 5, grad=True, expected_rounded=True)


@pytest.mark.parametrize(
    ("legacy", "reduction"),
    [
        ({"reduce": False}, "none"),
        ({"size_average": False}, "sum"),
        ({"size_average": True}, "mean"),
        ({"size_average": False, "reduce": False}, "none"),
        ({"reduce": True}, "mean"),
    ],
)
def test_mse_loss_legacy_reduction_flags(legacy, reduction):
    """torch's deprecated size_average/reduce pair, when given, overrides ``reduction``, as torch."""
    x, y = _randn(4, 3), _randn(4, 3, seed=1)
    out = mse_loss(x, y, reduction="sum" if reduction == "mean" else "mean", **legacy)
    assert_close(out, F.mse_loss(x, y, reduction=reduction), depth=x.numel(), expected_rounded=True)


# ---------------------------------------------------------------------------------------------
# torch.library registration: opcheck and torch.compile
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_opcheck_mse_loss(dtype):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, dtype=dtype, generator=gen).to(rt.device()).requires_grad_()
    y = torch.randn(4, 3, dtype=dtype, generator=gen).to(rt.device()).t().requires_grad_()  # transposed
    for reduction in ("mean", "sum", "none"):
        assert_opcheck_passes(torch.ops.blitz.mse_loss.default, (x, y, reduction))
    assert_opcheck_passes(
        torch.ops.blitz.mse_loss_backward.default, (x.detach(), x.detach(), y.detach(), "none", True, False)
    )


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_mse_loss_compiles(reduction):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, generator=gen).to(rt.device())
    y = torch.randn(3, 4, generator=gen).to(rt.device())
    assert_compiled_matches_eager(lambda a, b: mse_loss(a, b, reduction=reduction) * 3, x, y)
