"""logsumexp: property test through the engine, plus the edge cases it does not draw."""

import math

import pytest
import torch

from gradcheck.testing import op_tests
from gradcheck.tolerances import assert_close
from kernels import _runtime as rt
from kernels.logsumexp import logsumexp
from tests.kernels.library_checks import DTYPES, assert_compiled_matches_eager, assert_opcheck_passes

test_logsumexp = op_tests("logsumexp")


def _forward_backward(fn, x, dim, keepdim=False):
    x = x.detach().requires_grad_()
    y = fn(x, dim, keepdim)
    (dx,) = torch.autograd.grad(y, x, torch.ones_like(y))
    return y, dx


def test_inf_and_nan_rows_match_torch():
    """A row of -inf gives -inf (gradient NaN, as torch's exp(-inf - -inf)); partial -inf rows are
    exact; a NaN makes the row NaN."""
    inf = math.inf
    x = torch.tensor([[-inf, -inf, -inf], [1.0, -inf, 2.0], [1.0, math.nan, 2.0]], device=rt.device())
    y, dx = _forward_backward(logsumexp, x, 1)
    y_ref, dx_ref = _forward_backward(torch.logsumexp, x.double(), 1)
    assert_close(y, y_ref, depth=3, ulps=4)  # torch in float64; NaN and -inf must match
    assert_close(dx, dx_ref, depth=3, ulps=4, grad=True)


@pytest.mark.parametrize(("shape", "dim"), [((0, 3), 1), ((3, 0), 1), ((), 0), ((2, 0, 4), (0, 2))])
def test_empty_and_scalar_inputs(shape, dim):
    x = torch.randn(shape, device=rt.device())
    y, dx = _forward_backward(logsumexp, x, dim)
    y_ref, dx_ref = _forward_backward(torch.logsumexp, x, dim)
    assert y.shape == y_ref.shape and dx.shape == dx_ref.shape == x.shape
    assert_close(y, y_ref, depth=max(x.numel(), 1), ulps=4, expected_rounded=True)


def test_bad_dims_raise():
    x = torch.randn(2, 3, device=rt.device())
    with pytest.raises(IndexError, match="dim=2"):
        logsumexp(x, 2)
    with pytest.raises(ValueError, match="twice"):
        logsumexp(x, (1, -1))


def test_rows_longer_than_a_block_match_torch():
    x = torch.randn(3, 9000, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).to(rt.device()) * 30
    y, dx = _forward_backward(logsumexp, x, 1)
    y_ref, dx_ref = _forward_backward(torch.logsumexp, x, 1)
    assert_close(y, y_ref, depth=9000, ulps=4, expected_rounded=True)
    assert_close(dx, dx_ref, depth=9000, ulps=4, grad=True, expected_rounded=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_opcheck_logsumexp(dtype):
    x = torch.randn(4, 6, dtype=dtype, generator=torch.Generator().manual_seed(0)).to(rt.device())
    for arg, dim in ((x, [1]), (x.t(), [0]), (x[:, ::2], [0, 1])):
        assert_opcheck_passes(torch.ops.blitz.logsumexp.default, (arg.detach().requires_grad_(), dim))
    out = torch.logsumexp(x, 1)
    assert_opcheck_passes(torch.ops.blitz.logsumexp_backward.default, (x, out, torch.ones_like(out), [1]))


def test_logsumexp_compiles():
    x = torch.randn(5, 7, device=rt.device())
    assert_compiled_matches_eager(lambda t: logsumexp(t, 1, True) * t, x.t())


@pytest.mark.gpu
def test_logsumexp_past_2_to_the_31_elements():
    """(2^18 + 1, 8192) fp16, past 2^31 elements (int64 offsets): the last rows against torch in
    fp32, forward and gradient."""
    rows, k = 2**18 + 1, 8192
    assert rows * k > 2**31
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(rows, k, device="cuda", dtype=torch.float16, generator=gen).requires_grad_()
    y = logsumexp(x, 1)
    (dx,) = torch.autograd.grad(y, x, torch.ones_like(y))
    xt = x.detach()[-3:].float().requires_grad_()
    ref = torch.logsumexp(xt, 1)
    (ref_dx,) = torch.autograd.grad(ref, xt, torch.ones_like(ref))
    # torch in fp32 on the fp16 inputs: exact next to fp16's rounding
    assert_close(y[-3:], ref, depth=k, ulps=4)
    assert_close(dx[-3:], ref_dx, depth=k, ulps=4, grad=True)
