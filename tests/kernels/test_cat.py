"""cat and contiguous: property test through the engine, plus the edge cases it does not draw."""

import pytest
import torch

from gradcheck.testing import op_tests
from kernels import _runtime as rt
from kernels.cat import cat, contiguous
from tests.kernels.library_checks import DTYPES, assert_compiled_matches_eager, assert_opcheck_passes

test_cat = op_tests("cat")

DEV = rt.device()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64], ids=str)
def test_cat_of_mixed_layouts_matches_torch_bitwise(dtype):
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, 4, 5, generator=gen).to(dtype)
    b = torch.randn(3, 5, 4, generator=gen).to(dtype).transpose(1, 2)  # transposed
    c = torch.randn(3, 9, 5, generator=gen).to(dtype)[:, 1::3]  # sliced with an offset
    d = torch.randn(3, 1, 5, generator=gen).to(dtype).expand(3, 2, 5)  # stride 0
    ts = [t.to(DEV) for t in (a, b, c, d)]
    for dim in (1, -2):
        assert torch.equal(cat(ts, dim), torch.cat(ts, dim))
    nan = torch.full((2, 5), float("nan"), dtype=dtype, device=DEV)
    assert torch.equal(cat([ts[0][0], nan], 0).isnan(), torch.cat([ts[0][0], nan], 0).isnan())


def test_cat_backward_is_slices_of_grad_output():
    parts = [torch.randn(2, n, device=DEV, requires_grad=True) for n in (3, 0, 4)]
    g = torch.randn(2, 7, device=DEV)
    grads = torch.autograd.grad(cat(parts, 1), parts, g)
    assert [tuple(x.shape) for x in grads] == [(2, 3), (2, 0), (2, 4)]
    assert torch.equal(grads[0], g[:, :3]) and torch.equal(grads[2], g[:, 3:])


def test_cat_skips_legacy_empty_1d_tensors_as_torch():
    a = torch.randn(2, 3, device=DEV, requires_grad=True)
    e = torch.empty(0, device=DEV, requires_grad=True)
    out = cat([e, a, e], 1)
    assert torch.equal(out, torch.cat([e, a, e], 1))
    grads = torch.autograd.grad(out, [a, e], torch.ones(2, 3, device=DEV))
    assert grads[1].shape == (0,)


def test_cat_of_one_tensor_and_of_many_dims():
    x = torch.randn(2, 3, 2, 3, 2, 3, device=DEV).permute(5, 3, 1, 4, 2, 0)  # no two dims merge
    assert torch.equal(cat([x], 0), x.contiguous())
    assert torch.equal(cat([x, x], 4), torch.cat([x, x], 4))


def test_cat_rejects_bad_input():
    with pytest.raises(ValueError, match="at least one tensor"):
        cat([])
    with pytest.raises(TypeError, match="sequence of tensors"):
        cat(torch.ones(2, 3, device=DEV))
    with pytest.raises(ValueError, match=r"sizes must match except along dim 0"):
        cat([torch.ones(2, 3, device=DEV), torch.ones(2, 4, device=DEV)])
    with pytest.raises(TypeError, match="mixed dtypes"):
        cat([torch.ones(2, device=DEV), torch.ones(2, dtype=torch.float64, device=DEV)])
    with pytest.raises(TypeError, match="dtype int64"):
        cat([torch.arange(2, device=DEV)])
    with pytest.raises(ValueError, match="zero-dimensional"):
        cat([torch.tensor(1.0, device=DEV)])
    with pytest.raises(IndexError, match="dim=2 is out of range"):
        cat([torch.ones(2, 3, device=DEV)], 2)
    with pytest.raises(ValueError, match=r"tensors\[1\] is on meta"):
        cat([torch.ones(2, device=DEV), torch.ones(2, device="meta")])


def test_contiguous_copies_any_layout_and_passes_gradients_through():
    base = torch.randn(4, 6, 5, device=DEV)
    for x in (base.transpose(0, 2), base[:, 1::2], base[:1].expand(4, 6, 5), base.permute(2, 0, 1)[1:]):
        leaf = x.detach().requires_grad_()
        y = contiguous(leaf)
        assert y.is_contiguous() and torch.equal(y, x.contiguous())
        g = torch.randn(y.shape, device=DEV)
        assert torch.equal(torch.autograd.grad(y, leaf, g)[0], g)
    assert contiguous(base) is base
    many = torch.randn(2, 3, 2, 3, 2, 3, device=DEV).permute(5, 3, 1, 4, 2, 0)
    assert torch.equal(contiguous(many), many.contiguous())


# ---------------------------------------------------------------------------------------------
# torch.library registration: opcheck and torch.compile
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_opcheck_cat(dtype):
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, 4, dtype=dtype, generator=gen).to(DEV).requires_grad_()
    b = torch.randn(2, 3, dtype=dtype, generator=gen).to(DEV).t().requires_grad_()  # transposed
    skipped = torch.empty(0, dtype=dtype, device=DEV, requires_grad=True)
    assert_opcheck_passes(torch.ops.blitz.cat.default, ([a, b, skipped], 1))
    assert_opcheck_passes(torch.ops.blitz.cat.default, ([a, b[:, :1].expand(3, 4)], 0))
    assert_opcheck_passes(torch.ops.blitz.contiguous.default, (b,))


def test_cat_compiles():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, 4, generator=gen).to(DEV)
    b = torch.randn(3, 2, generator=gen).to(DEV)
    assert_compiled_matches_eager(lambda x, y: cat([x, y * 2], 1) * torch.arange(6.0, device=DEV), a, b)
    assert_compiled_matches_eager(lambda x: contiguous(x.t()) * 3, a)
