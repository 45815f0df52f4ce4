"""gelu, silu, swiglu, geglu: property tests through the engine, planted bugs it must catch, and
the edge cases it does not draw (NaN/inf, empty batches, bad arguments)."""

import math

import pytest
import torch
import torch.nn.functional as F

import gradcheck as gc
import reference.activations as ra
from gradcheck import profiles
from gradcheck.specs.activations import geglu as torch_geglu
from gradcheck.specs.activations import swiglu as torch_swiglu
from gradcheck.testing import op_tests
from gradcheck.tolerances import assert_close
from kernels import _runtime as rt
from kernels.activations import geglu, gelu, silu, swiglu
from tests.kernels.library_checks import DTYPES, assert_compiled_matches_eager, assert_opcheck_passes

test_gelu = op_tests("gelu")
test_silu = op_tests("silu")
test_swiglu = op_tests("swiglu")
test_geglu = op_tests("geglu")

#: (ours, torch's) pairs, each called with one tensor.
PAIRS = {
    "gelu": (gelu, F.gelu),
    "gelu_tanh": (lambda x: gelu(x, "tanh"), lambda x: F.gelu(x, approximate="tanh")),
    "silu": (silu, F.silu),
    "swiglu": (swiglu, torch_swiglu),
    "geglu": (geglu, torch_geglu),
}


def _forward_backward(fn, x):
    x = x.detach().requires_grad_()
    y = fn(x)
    (dx,) = torch.autograd.grad(y, x, torch.ones_like(y))
    return y, dx


# ---------------------------------------------------------------------------------------------
# edge cases the engine does not draw
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PAIRS))
def test_nan_and_inf_match_torch(name):
    """NaN stays NaN; +inf gives inf forward (a NaN gradient, as torch: inf * 0 in the
    derivative); -inf gives NaN forward (-inf * 0), as torch. Finite neighbours are untouched."""
    ours, theirs = PAIRS[name]
    special = [math.nan, math.inf, -math.inf, -1e4, 1e4, 0.0, -0.5, 2.0]
    x = torch.tensor([special, special[::-1]], device=rt.device())  # gated: a and b mix the specials
    y, dx = _forward_backward(ours, x)
    y_ref, dx_ref = _forward_backward(theirs, x.double())
    assert_close(y, y_ref, ulps=4)  # torch in float64: exact next to fp32; NaN and inf must match
    assert_close(dx, dx_ref, ulps=4, grad=True)


@pytest.mark.parametrize("name", list(PAIRS))
@pytest.mark.parametrize("shape", [(0, 6), (3, 0, 4)], ids=["empty-batch", "empty-middle"])
def test_empty_batch(name, shape):
    ours, theirs = PAIRS[name]
    x = torch.randn(shape, device=rt.device())
    y, dx = _forward_backward(ours, x)
    assert y.shape == theirs(x).shape and dx.shape == x.shape


def test_gated_rejects_an_odd_last_dim_and_0d_input():
    with pytest.raises(ValueError, match="even size"):
        swiglu(torch.randn(3, 5, device=rt.device()))
    with pytest.raises(ValueError, match="even size"):
        geglu(torch.tensor(1.0, device=rt.device()))


def test_gelu_rejects_an_unknown_approximation_and_integer_input():
    with pytest.raises(ValueError, match="approximate"):
        gelu(torch.randn(3, device=rt.device()), "erf")
    with pytest.raises(TypeError, match="dtype int64"):
        silu(torch.arange(3, device=rt.device()))


@pytest.mark.parametrize("x", [-3.0, -6.0, -9.0])
def test_gelu_tanh_keeps_relative_accuracy_in_the_negative_tail(x):
    """x * sigmoid(2u) instead of 0.5 x (1 + tanh u): no cancellation for x < 0, where 1 + tanh u
    rounds to a few ulps of 1 (torch's fp32 result is -0.0 at x = -6 and -9). What is left is the
    conditioning of exp(2u): the fp32 rounding of 2u (up to 66 at x = -9) is amplified |2u| times."""
    t = torch.tensor([x], device=rt.device())
    exact = float(ra.gelu(t.double().cpu().numpy(), "tanh")[0])
    two_u = 2 * ra.GELU_TANH_SCALE * (x + ra.GELU_TANH_CUBIC * x**3)
    assert abs(gelu(t, "tanh").item() - exact) <= (4 + 2 * abs(two_u)) * 2**-24 * abs(exact)


def test_gated_halves_are_views_of_a_strided_input():
    """a and b read through the input's strides: a transposed, sliced 3-d input equals torch."""
    base = torch.randn(6, 5, 10, dtype=torch.float64, device=rt.device())
    x = base.transpose(0, 1)[:, ::2]  # (5, 3, 10), non-contiguous, last dim stride 1
    for ours, theirs in (PAIRS["swiglu"], PAIRS["geglu"]):
        y, dx = _forward_backward(ours, x)
        y_ref, dx_ref = _forward_backward(theirs, x)
        assert_close(y, y_ref, ulps=4, expected_rounded=True)
        assert_close(dx, dx_ref, ulps=4, grad=True, expected_rounded=True)


# ---------------------------------------------------------------------------------------------
# planted bugs: verify_op with the catalog's default strategies must catch them (no shrinking:
# the first failing example settles it)
# ---------------------------------------------------------------------------------------------


class _GegluErfBackward(torch.autograd.Function):
    """GeGLU whose forward uses the tanh approximation but whose backward differentiates the exact
    (erf) gelu: the forward/backward mismatch a fused kernel gets when its two halves are written
    from different formulas. The forward check cannot see it."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch_geglu(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        h = x.shape[-1] // 2
        a, b = x[..., :h].double(), x[..., h:].double()
        phi = 0.5 * torch.erfc(-a / math.sqrt(2))
        d_gelu = phi + a * torch.exp(-0.5 * a * a) / math.sqrt(2 * math.pi)
        gd = g.double()
        return torch.cat([gd * b * d_gelu, gd * F.gelu(a, approximate="tanh")], dim=-1).to(x.dtype)


class _SwigluFloat32Backward(torch.autograd.Function):
    """SwiGLU whose backward always computes in float32 and casts back (an unconditional
    ``.to(tl.float32)`` upcast): right at fp32, fp16 and bf16, a precision leak at fp64."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch_swiglu(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        h = x.shape[-1] // 2
        a, b, g32 = x[..., :h].float(), x[..., h:].float(), g.float()
        s = torch.sigmoid(a)
        return torch.cat([g32 * b * s * (1 + a * (1 - s)), g32 * a * s], dim=-1).to(x.dtype)


def test_planted_geglu_backward_with_the_erf_derivative_is_caught():
    with profiles.without_shrinking(), pytest.raises(gc.VerificationError) as err:
        gc.verify_op("geglu", impl=_GegluErfBackward.apply, dtypes=[torch.float32], max_findings=1)
    assert err.value.check in ("backward", "backward_fd", "jacobian")


def test_planted_swiglu_backward_in_float32_is_caught_at_float64():
    with profiles.without_shrinking(), pytest.raises(gc.VerificationError) as err:
        gc.verify_op("swiglu", impl=_SwigluFloat32Backward.apply, dtypes=[torch.float64], max_findings=1)
    assert err.value.check in ("backward", "backward_fd", "jacobian")


# ---------------------------------------------------------------------------------------------
# torch.library registration: opcheck and torch.compile
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_opcheck_activations(dtype):
    ops = torch.ops.blitz
    x = torch.randn(4, 6, dtype=dtype, generator=torch.Generator().manual_seed(0)).to(rt.device())
    for arg in (x, x.t(), x[:, ::2]):  # contiguous, transposed, strided
        assert_opcheck_passes(ops.gelu.default, (arg.detach().requires_grad_(), "tanh"))
        assert_opcheck_passes(ops.silu.default, (arg.detach().requires_grad_(),))
    for arg in (x, x.t().contiguous().t()):  # the gated ops split the last dim
        assert_opcheck_passes(ops.swiglu.default, (arg.detach().requires_grad_(),))
        assert_opcheck_passes(ops.geglu.default, (arg.detach().requires_grad_(),))
    assert_opcheck_passes(ops.gelu_backward.default, (x.t(), x.t(), "none"))
    assert_opcheck_passes(ops.swiglu_backward.default, (x, x[:, :3]))


def test_activations_compile():
    x = torch.randn(5, 8, device=rt.device())
    assert_compiled_matches_eager(lambda t: swiglu(gelu(t, "tanh")) * 2, x.t().contiguous().t())
    assert_compiled_matches_eager(lambda t: geglu(silu(t)), x)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["gelu", "swiglu"])
def test_activations_past_2_to_the_31_elements(name):
    """Outputs past 2^31 elements (int64 offsets): gelu on 2^31 + 2^20 + 7 fp16 values, swiglu on
    (2^20 + 1, 4096) halves of 2048; the last elements are checked against torch in fp32, forward
    and gradient."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    shape = (2**31 + 2**20 + 7,) if name == "gelu" else (2**20 + 1, 4096)
    x = torch.randn(shape, device="cuda", dtype=torch.float16, generator=gen).requires_grad_()
    fn, torch_fn = (gelu, F.gelu) if name == "gelu" else (swiglu, torch_swiglu)
    y = fn(x)
    assert y.numel() > 2**31
    g = torch.ones_like(y)
    (dx,) = torch.autograd.grad(y, x, g)
    tail = slice(x.shape[0] - 3, x.shape[0])
    xt = x.detach()[tail].float().requires_grad_()
    ref = torch_fn(xt)
    (ref_dx,) = torch.autograd.grad(ref, xt, torch.ones_like(ref))
    # torch in fp32 on the fp16 inputs: exact next to fp16's rounding
    assert_close(y[tail], ref, ulps=4)
    assert_close(dx[tail], ref_dx, ulps=4, grad=True)
