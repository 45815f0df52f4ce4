"""mse_loss: property tests through the engine, plus the edge cases it does not draw."""

import pytest
import torch
import torch.nn.functional as F

from gradcheck.testing import op_tests
from gradcheck.tolerances import assert_close
from kernels import _runtime as rt
from kernels.mse import mse_loss

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

_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def _opcheck(op, args):
    """``torch.library.opcheck`` (schema, autograd registration, fake tensor, AOT dispatch) passes."""
    results = torch.library.opcheck(op, args)
    assert all(v == "SUCCESS" for v in results.values()), results


def _compiled_matches_eager(fn, *inputs, backend="aot_eager"):
    """``torch.compile(fn, fullgraph=True)`` forward and backward equal eager's."""
    compiled = torch.compile(fn, fullgraph=True, backend=backend)
    results = []
    for f in (fn, compiled):
        leaves = [x.detach().requires_grad_() for x in inputs]
        out = f(*leaves)
        grads = torch.autograd.grad(out, leaves, torch.ones_like(out))
        results.append((out, grads))
    torch.testing.assert_close(results[1], results[0], equal_nan=True)


@pytest.mark.parametrize("dtype", _DTYPES, ids=str)
def test_opcheck_mse_loss(dtype):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, dtype=dtype, generator=gen).to(rt.device()).requires_grad_()
    y = torch.randn(4, 3, dtype=dtype, generator=gen).to(rt.device()).t().requires_grad_()  # transposed
    for reduction in ("mean", "sum", "none"):
        _opcheck(torch.ops.blitz.mse_loss.default, (x, y, reduction))
    _opcheck(torch.ops.blitz.mse_loss_backward.default, (x.detach(), x.detach(), y.detach(), "none", True, False))


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_mse_loss_compiles(reduction):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, generator=gen).to(rt.device())
    y = torch.randn(3, 4, generator=gen).to(rt.device())
    _compiled_matches_eager(lambda a, b: mse_loss(a, b, reduction=reduction) * 3, x, y)
