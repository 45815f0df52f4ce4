"""rotary_embedding: property tests through the engine, plus the edge cases it does not draw."""

import numpy as np
import pytest
import torch

from gradcheck import strategies as gs
from gradcheck.specs.rotary import rotary_embedding as torch_rotary
from gradcheck.testing import op_tests
from gradcheck.tolerances import assert_close
from kernels import _runtime as rt
from kernels.rotary import rotary_embedding
from tests.kernels.library_checks import DTYPES, assert_compiled_matches_eager, assert_opcheck_passes

test_rotary_embedding = op_tests("rotary_embedding")


def _inputs(b, h, t, d, *, dtype=torch.float64, seed=0, start=0):
    x = torch.randn((b, h, t, d), dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    cos, sin = gs.rotary_tables(np.arange(start, start + t), d)
    return tuple(a.to(dtype).to(rt.device()) for a in (x, torch.from_numpy(cos), torch.from_numpy(sin)))


def test_rotary_bad_input_raises():
    x, cos, sin = _inputs(1, 2, 3, 4)
    with pytest.raises(ValueError, match=r"x must be \(B, H, T, D\)"):
        rotary_embedding(x[0], cos, sin)
    with pytest.raises(ValueError, match="D=3 must be even"):
        rotary_embedding(x[..., :3], cos[:, :3], sin[:, :3])
    with pytest.raises(ValueError, match=r"cos must be \(T, D\)"):
        rotary_embedding(x, cos[:2], sin)
    with pytest.raises(TypeError, match="mixed dtypes"):
        rotary_embedding(x, cos.float(), sin)
    with pytest.raises(TypeError, match="x has dtype int64"):
        rotary_embedding(x.long(), cos, sin)


@pytest.mark.parametrize("shape", [(0, 2, 3, 4), (1, 2, 0, 4), (2, 1, 3, 0)], ids=str)
def test_rotary_empty(shape):
    x, cos, sin = _inputs(*shape)
    for a in (x, cos, sin):
        a.requires_grad_()
    out = rotary_embedding(x, cos, sin)
    assert out.shape == shape
    dx, dcos, dsin = torch.autograd.grad(out, (x, cos, sin), torch.ones_like(out))
    assert dx.shape == shape and dcos.shape == cos.shape and dsin.shape == sin.shape
    assert not dcos.any() and not dsin.any()  # an empty batch contributes nothing


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_rotary_layouts_and_table_gradients_match_torch(dtype):
    """x as (B, T, H, D) memory viewed as (B, H, T, D), tables sliced from a longer cache; a head dim
    past one program's columns (D = 2 * 1025) is split across programs."""
    for b, h, t, d in ((2, 3, 5, 6), (1, 1, 3, 2050)):
        x, cos, sin = _inputs(b, t, h, d, dtype=dtype)
        x = x.transpose(1, 2).requires_grad_()  # (B, H, T, D) with T outermost in memory
        _, cos_long, sin_long = _inputs(1, 1, 2 * t, d, dtype=dtype, start=7)
        cos, sin = cos_long[::2].requires_grad_(), sin_long[::2].requires_grad_()  # every other position
        out, ref = rotary_embedding(x, cos, sin), torch_rotary(x, cos, sin)
        assert_close(out, ref.detach(), depth=2, expected_rounded=True)
        g = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).to(dtype)
        got, want = torch.autograd.grad(out, (x, cos, sin), g), torch.autograd.grad(ref, (x, cos, sin), g)
        for a, e, k in zip(got, want, (2, b * h, b * h), strict=True):
            assert_close(a, e, depth=k, grad=True, expected_rounded=True, magnitude=None)


# ---------------------------------------------------------------------------------------------
# torch.library registration: opcheck and torch.compile
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_opcheck_rotary_embedding(dtype):
    x, cos, sin = _inputs(2, 3, 5, 6, dtype=dtype)
    assert_opcheck_passes(torch.ops.blitz.rotary_embedding.default, (x.requires_grad_(), cos, sin))
    assert_opcheck_passes(
        torch.ops.blitz.rotary_embedding_backward.default, (x.detach(), x.detach(), cos, sin, True, True)
    )


def test_rotary_embedding_compiles():
    x, cos, sin = _inputs(2, 3, 5, 6, dtype=torch.float32)
    assert_compiled_matches_eager(lambda a, c, s: rotary_embedding(a, c, s) * 3, x, cos, sin)


@pytest.mark.gpu
def test_rotary_past_2_to_the_31_elements():
    """x (1, 32, 2^16 + 1, 1024) fp16, past 2^31 elements (int64 offsets): the last positions of
    the last head against torch's formula in fp32, forward and dx; dcos at those positions sums
    g * x over the heads."""
    b, h, t, d = 1, 32, 2**16 + 1, 1024
    assert b * h * t * d > 2**31
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(b, h, t, d, device="cuda", dtype=torch.float16, generator=gen).requires_grad_()
    angle = torch.rand(t, d, device="cuda", generator=gen) * 6.3
    cos = angle.cos().half().requires_grad_()
    sin = angle.sin().half().requires_grad_()
    y = rotary_embedding(x, cos, sin)
    g = torch.ones_like(y)
    dx, dcos = torch.autograd.grad(y, (x, cos), g)
    tail = slice(t - 3, t)
    xt = x.detach()[:, -1:, tail].float().requires_grad_()
    ref = torch_rotary(xt, cos.detach()[tail].float(), sin.detach()[tail].float())
    (ref_dx,) = torch.autograd.grad(ref, xt, torch.ones_like(ref))
    assert_close(y[:, -1:, tail], ref, depth=2)
    assert_close(dx[:, -1:, tail], ref_dx, depth=2, grad=True)
    assert_close(dcos[tail], x.detach()[:, :, tail].float().sum((0, 1)), depth=h, grad=True)
