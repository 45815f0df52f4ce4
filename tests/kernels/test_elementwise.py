"""add ... pow: property tests through the engine, plus the edge cases it does not draw."""

import math

import pytest
import torch

from gradcheck.testing import op_tests
from gradcheck.tolerances import assert_close
from kernels import _runtime as rt
from kernels import elementwise as ew
from tests.kernels.library_checks import DTYPES, assert_compiled_matches_eager, assert_opcheck_passes

test_add = op_tests("add")
test_sub = op_tests("sub")
test_mul = op_tests("mul")
test_div = op_tests("div")
test_neg = op_tests("neg")
test_exp = op_tests("exp")
test_log = op_tests("log")
test_sqrt = op_tests("sqrt")
test_sigmoid = op_tests("sigmoid")
test_tanh = op_tests("tanh")
test_pow = op_tests("pow")

DEV = rt.device()
INF, NAN = math.inf, math.nan
SPECIAL = [0.0, -0.0, 1.0, -1.0, 0.5, INF, -INF, NAN, 1e-30, 100.0, -100.0]

UNARY = {
    "neg": (ew.neg, torch.neg),
    "exp": (ew.exp, torch.exp),
    "log": (ew.log, torch.log),
    "sqrt": (ew.sqrt, torch.sqrt),
    "sigmoid": (ew.sigmoid, torch.sigmoid),
    "tanh": (ew.tanh, torch.tanh),
}
BINARY = {
    "add": (ew.add, torch.add),
    "sub": (ew.sub, torch.sub),
    "mul": (ew.mul, torch.mul),
    "div": (ew.div, torch.div),
}


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """torch's result at the same dtype; libdevice's transcendentals are within 2 ulps."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    assert_close(actual, expected, ulps=2, expected_rounded=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", list(UNARY))
def test_unary_nan_inf_and_zero_match_torch(name, dtype):
    """log(0) = -inf, log(-1) = NaN, sqrt(-1) = NaN, exp(+-inf), sigmoid/tanh saturating, NaN in NaN out."""
    ours, theirs = UNARY[name]
    x = torch.tensor(SPECIAL, dtype=dtype, device=DEV)
    _close(ours(x), theirs(x))


@pytest.mark.parametrize("p", [0.0, 1.0, 2.0, 3.0, 0.5, -1.0, 2.5, -2.0, 1.0 / 3.0])
def test_pow_special_values_match_torch(p):
    """Negative base with a non-integer power is NaN; 0 ** negative is inf; x ** 0 = 1 even for NaN."""
    x = torch.tensor(SPECIAL, dtype=torch.float64, device=DEV)
    # exp(p log|x|) carries log's rounding times |p log x| into the result: 138 ulps at 1e-30 ** -2
    finite = [abs(v) for v in SPECIAL if math.isfinite(v) and v != 0]
    amplification = max(abs(p * math.log(v)) for v in finite)
    assert ew.pow(x, p).shape == x.shape
    assert_close(ew.pow(x, p), torch.pow(x, p), ulps=4 + amplification, expected_rounded=True)


@pytest.mark.parametrize("name", list(BINARY))
def test_binary_nan_inf_match_torch(name):
    ours, theirs = BINARY[name]
    a = torch.tensor(SPECIAL, device=DEV)[:, None]
    b = torch.tensor(SPECIAL, device=DEV)[None, :]
    _close(ours(a, b), theirs(a, b))


def _layouts(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The same values at other strides: transposed, sliced with an offset, channels_last."""
    out = {"contiguous": x, "transposed": x.transpose(0, -1).contiguous().transpose(0, -1)}
    padded = torch.full((*x.shape[:-1], 2 * x.shape[-1] + 1), NAN, dtype=x.dtype, device=x.device)
    padded[..., 1::2] = x
    out["sliced"] = padded[..., 1::2]
    if x.dim() == 4:
        out["channels_last"] = x.contiguous(memory_format=torch.channels_last)
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("name", list(BINARY))
def test_binary_layouts_and_broadcast_backward_match_torch(name, dtype):
    """Forward and both gradients against torch for every pair of layouts, one operand broadcast
    along two dims (its gradient sums over them) and one expanded with stride 0."""
    ours, theirs = BINARY[name]
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, 4, 5, 6, generator=gen, dtype=torch.float64).to(dtype).to(DEV)
    b = (torch.rand(4, 1, 6, generator=gen, dtype=torch.float64) + 0.5).to(dtype).to(DEV)
    g = torch.randn(3, 4, 5, 6, generator=gen, dtype=torch.float64).to(dtype).to(DEV)
    expanded = b[:, :, :1].expand(4, 1, 6)  # stride 0 along the last dim
    for la in _layouts(a).values():
        for lb in [*_layouts(b).values(), expanded]:
            for lg in (g, g.transpose(1, 2).contiguous().transpose(1, 2), g[:1].expand_as(g)):
                xa, xb = la.detach().requires_grad_(), lb.detach().requires_grad_()
                ta, tb = la.detach().requires_grad_(), lb.detach().requires_grad_()
                out, ref = ours(xa, xb), theirs(ta, tb)
                assert_close(out, ref, expected_rounded=True, msg="forward")
                da, db = torch.autograd.grad(out, (xa, xb), lg)
                ra, rb = torch.autograd.grad(ref, (ta, tb), lg)
                assert_close(da, ra, grad=True, expected_rounded=True, msg="grad a")
                # b's gradient sums 3 * 5 = 15 terms (the broadcast dims)
                assert_close(db, rb, depth=15, grad=True, expected_rounded=True, msg="grad b")


@pytest.mark.parametrize("name", [*UNARY, "pow"])
def test_unary_layouts_match_torch(name):
    ours, theirs = UNARY.get(name, (lambda x: ew.pow(x, 2.5), lambda x: torch.pow(x, 2.5)))
    gen = torch.Generator().manual_seed(1)
    x = (torch.rand(2, 3, 4, 5, generator=gen, dtype=torch.float64) + 0.1).to(DEV)
    g = torch.randn(2, 3, 4, 5, generator=gen, dtype=torch.float64).to(DEV)
    for lx in _layouts(x).values():
        xr, xt = lx.detach().requires_grad_(), lx.detach().requires_grad_()
        out, ref = ours(xr), theirs(xt)
        assert_close(out, ref, ulps=2, expected_rounded=True, msg="forward")
        gt = g.transpose(-1, -2).contiguous().transpose(-1, -2)  # grad_output in another layout
        got, want = torch.autograd.grad(out, xr, gt)[0], torch.autograd.grad(ref, xt, gt)[0]
        assert_close(got, want, ulps=2, grad=True, expected_rounded=True, msg="backward")


def test_empty_and_zero_dim():
    e = torch.empty(0, 3, device=DEV)
    assert ew.add(e, torch.ones(3, device=DEV)).shape == (0, 3)
    assert ew.exp(e).shape == (0, 3)
    s = torch.tensor(2.0, device=DEV)
    assert ew.mul(s, s).item() == 4.0 and ew.mul(s, s).shape == ()
    assert ew.sqrt(torch.tensor(4.0, device=DEV)).item() == 2.0


def test_gradient_of_an_operand_broadcast_along_an_empty_dim_is_zero():
    """(1, 3) + (0, 3): the first operand's gradient sums over no rows."""
    a = torch.randn(1, 3, device=DEV, requires_grad=True)
    b = torch.randn(0, 3, device=DEV, requires_grad=True)
    da, db = torch.autograd.grad(ew.mul(a, b), (a, b), torch.ones(0, 3, device=DEV))
    assert torch.equal(da, torch.zeros(1, 3, device=DEV)) and db.shape == (0, 3)


def test_only_the_inputs_that_need_grad_get_one():
    a = torch.randn(4, 3, device=DEV, requires_grad=True)
    b = torch.randn(3, device=DEV)
    (da,) = torch.autograd.grad(ew.div(a, b), (a,), torch.ones(4, 3, device=DEV))
    assert_close(da, (1 / b).expand(4, 3), grad=True, expected_rounded=True)


def test_rejects_shapes_that_do_not_broadcast():
    with pytest.raises(ValueError, match=r"shapes \(2, 3\) and \(4,\) do not broadcast"):
        ew.add(torch.ones(2, 3, device=DEV), torch.ones(4, device=DEV))


def test_rejects_integer_and_mixed_dtypes():
    with pytest.raises(TypeError, match="dtype int64"):
        ew.mul(torch.arange(3, device=DEV), torch.ones(3, device=DEV))
    with pytest.raises(TypeError, match="mixed dtypes"):
        ew.sub(torch.ones(3, device=DEV), torch.ones(3, dtype=torch.float64, device=DEV))
    with pytest.raises(TypeError, match="dtype int32"):
        ew.exp(torch.ones(3, dtype=torch.int32, device=DEV))


def test_rejects_tensors_on_another_device():
    with pytest.raises(ValueError, match="other is on meta"):
        ew.add(torch.ones(3, device=DEV), torch.ones(3, device="meta"))


def test_rejects_non_tensor_and_non_number_arguments():
    with pytest.raises(TypeError, match=r"other must be a torch\.Tensor"):
        ew.add(torch.ones(3, device=DEV), 2.0)
    with pytest.raises(TypeError, match="exponent must be a Python number"):
        ew.pow(torch.ones(3, device=DEV), torch.ones(1, device=DEV))


@pytest.mark.gpu
def test_add_past_2_31_elements():
    """int64 offsets: a contiguous add and a broadcast one whose outputs pass 2^31 elements."""
    n = 2**31 + 2**20 + 7
    a = torch.randn(n, dtype=torch.float16, device=DEV)
    b = torch.randn(n, dtype=torch.float16, device=DEV)
    out = ew.add(a, b)
    assert torch.equal(out, a + b)
    del a, b, out
    col = torch.randn(2**16 + 3, 1, dtype=torch.float16, device=DEV)
    row = torch.randn(1, 2**15 + 5, dtype=torch.float16, device=DEV)
    out = ew.add(col, row)
    assert out.numel() > 2**31 and torch.equal(out, col + row)


# ---------------------------------------------------------------------------------------------
# torch.library registration: opcheck and torch.compile
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_opcheck_elementwise(dtype):
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(4, 3, dtype=dtype, generator=gen).to(rt.device()).t().requires_grad_()  # transposed
    b = torch.randn(1, 4, dtype=dtype, generator=gen).to(rt.device()).requires_grad_()  # broadcast
    ops = torch.ops.blitz
    for name in ("add", "sub", "mul", "div"):
        assert_opcheck_passes(getattr(ops, name).default, (a, b))
    positive = (torch.rand(6, 4, dtype=dtype, generator=gen) + 0.5).to(rt.device())[::2].requires_grad_()
    for name in ("neg", "exp", "log", "sqrt", "sigmoid", "tanh"):
        assert_opcheck_passes(getattr(ops, name).default, (positive,))
    assert_opcheck_passes(ops.pow.default, (positive, 2.5))
    assert_opcheck_passes(ops.exp_backward.default, (positive.detach(), a.detach()))
    assert_opcheck_passes(
        ops.binary_backward.default, (a.detach(), a.detach(), b.detach(), [3, 4], [1, 4], "div", True, True)
    )


@pytest.mark.parametrize("name", ["add", "sub", "mul", "div"])
def test_binary_compiles(name):
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, 4, generator=gen).to(rt.device())
    b = torch.randn(4, generator=gen).to(rt.device()) + 3.0
    assert_compiled_matches_eager(getattr(ew, name), a, b)


def test_unary_compiles():
    x = torch.rand(3, 4, device=rt.device()) + 0.5
    assert_compiled_matches_eager(lambda t: ew.pow(ew.tanh(ew.log(ew.exp(ew.sqrt(ew.sigmoid(ew.neg(t)))))), 3.0), x)
