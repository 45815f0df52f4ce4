"""matmul, linear and linear_relu: property tests through the engine, plus the edge cases it does not draw."""

import pytest
import torch
import torch.nn.functional as F

from gradcheck.testing import op_tests
from gradcheck.tolerances import assert_close
from kernels import _runtime as rt
from kernels.matmul import linear, linear_relu, matmul

test_matmul = op_tests("matmul")
test_linear = op_tests("linear")
test_linear_relu = op_tests("linear_relu", cpu_max_examples=6)  # linear (tested at 10) then relu


def _t(*shape, dtype=torch.float64, grad=False):
    return torch.randn(shape, dtype=dtype, device=rt.device()).requires_grad_(grad)


def _grads(fn, *args):
    """fn's output and the gradients of its tensor arguments for a fixed random grad_output."""
    out = fn(*args)
    g = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(0)).to(out.device)
    wrt = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    return out, torch.autograd.grad(out, wrt, g)


# ---------------------------------------------------------------------------------------------
# bad input: clear errors before any launch
# ---------------------------------------------------------------------------------------------


def test_matmul_rejects_mismatched_inner_dims():
    with pytest.raises(ValueError, match="inner dimensions"):
        matmul(_t(3, 4), _t(5, 2))


@pytest.mark.parametrize("shapes", [((4,), (4, 2)), ((3, 4), (4,)), ((2, 2, 3, 4), (2, 2, 4, 5))])
def test_matmul_rejects_unsupported_ranks(shapes):
    with pytest.raises(ValueError, match="2-D and 3-D"):
        matmul(_t(*shapes[0]), _t(*shapes[1]))


def test_matmul_rejects_batches_that_do_not_broadcast():
    with pytest.raises(ValueError, match="batch"):
        matmul(_t(3, 2, 4), _t(2, 4, 5))


def test_matmul_rejects_mixed_and_integer_dtypes():
    with pytest.raises(TypeError, match="mixed dtypes"):
        matmul(_t(2, 3), _t(3, 2, dtype=torch.float32))
    with pytest.raises(TypeError, match="dtype int64"):
        matmul(torch.ones(2, 3, dtype=torch.int64, device=rt.device()), _t(3, 2))


@pytest.mark.parametrize(
    ("x", "w", "b", "message"),
    [
        ((3, 5), (4, 6), None, "in_features=6"),
        ((3, 5), (4, 5, 1), None, "must be 2-D"),
        ((3, 5), (4, 5), (3,), r"bias must have shape \(4,\)"),
        ((), (4, 5), None, "at least 1 dimension"),
    ],
)
def test_linear_rejects_bad_shapes(x, w, b, message):
    with pytest.raises(ValueError, match=message):
        linear(_t(*x), _t(*w), None if b is None else _t(*b))


# ---------------------------------------------------------------------------------------------
# semantics the property tests do not reach
# ---------------------------------------------------------------------------------------------


def test_matmul_empty_and_zero_inner_dim():
    assert matmul(_t(0, 3), _t(3, 4)).shape == (0, 4)
    a, b = _t(3, 0, grad=True), _t(0, 4, grad=True)
    out, (da, db) = _grads(matmul, a, b)
    assert torch.equal(out, torch.zeros(3, 4, dtype=out.dtype, device=out.device))
    assert da.shape == (3, 0) and db.shape == (0, 4)
    # a zero-length reduction in the backward: dB sums over M = 0 rows
    a, b = _t(0, 3, grad=True), _t(3, 4, grad=True)
    _, (da, db) = _grads(matmul, a, b)
    assert da.shape == (0, 3) and torch.equal(db, torch.zeros_like(db))


def test_matmul_nan_and_inf_match_torch():
    a = _t(4, 3)
    b = _t(3, 5)
    a[0, 0] = float("nan")
    a[1, 1] = float("inf")
    b[2, 2] = float("-inf")
    assert_close(matmul(a, b), torch.matmul(a, b), depth=3, expected_rounded=True)


def test_matmul_broadcast_batch_gradient_is_deterministic():
    """dB sums over the batch B was broadcast along, in one fixed order: bitwise equal reruns."""
    a = _t(5, 33, 17, dtype=torch.float32, grad=True)
    b = _t(17, 9, dtype=torch.float32, grad=True)
    _, first = _grads(matmul, a, b)
    _, second = _grads(matmul, a, b)
    for x, y in zip(first, second, strict=True):
        assert torch.equal(x, y)
    ref_a, ref_b = a.detach().requires_grad_(), b.detach().requires_grad_()
    _, expected = _grads(torch.matmul, ref_a, ref_b)
    for x, y in zip(first, expected, strict=True):  # dB sums 5 * 33 products
        assert_close(x, y, depth=5 * 33, grad=True, expected_rounded=True)


def test_linear_leading_dims_that_do_not_merge_match_torch():
    """x (2, 3, 4, 6) permuted: its leading dims collapse to no two, so one is copied."""
    x = _t(3, 2, 6, 4).permute(1, 0, 3, 2).detach().requires_grad_()
    w, b = _t(5, 6, grad=True), _t(5, grad=True)
    out, grads = _grads(linear, x, w, b)
    ref, ref_grads = _grads(F.linear, x, w, b)
    assert_close(out, ref, depth=6, expected_rounded=True)
    for got, want in zip(grads, ref_grads, strict=True):  # dW and db sum the 24 rows
        assert_close(got, want, depth=24, grad=True, expected_rounded=True)


def test_linear_bias_gradient_alone():
    x, w, b = _t(7, 3), _t(4, 3), _t(4, grad=True)
    (db,) = _grads(linear, x, w, b)[1]
    (ref,) = _grads(F.linear, x, w, b)[1]
    assert_close(db, ref, depth=7, grad=True, expected_rounded=True)


def test_linear_relu_gradient_is_zero_at_zero():
    """Outputs exactly 0 pass no gradient (torch's rule), whatever the upstream gradient."""
    x = torch.tensor([[1.0, -1.0], [2.0, 0.5]], dtype=torch.float64, device=rt.device(), requires_grad=True)
    w = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64, device=rt.device(), requires_grad=True)
    y = linear_relu(x, w)
    assert y[0, 0].item() == 0.0
    (dx, dw) = torch.autograd.grad(y, (x, w), torch.ones_like(y))
    xr, wr = x.detach().requires_grad_(), w.detach().requires_grad_()
    expected = torch.autograd.grad(F.relu(F.linear(xr, wr)), (xr, wr), torch.ones_like(y))
    assert_close(dx, expected[0], depth=2, grad=True, expected_rounded=True)
    assert_close(dw, expected[1], depth=2, grad=True, expected_rounded=True)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_linear_relu_low_precision_matches_torch(dtype):
    """Outputs and gradients in the input's dtype, within a few roundings (relative to the largest
    value) of float64 on the same inputs."""
    gen = torch.Generator().manual_seed(5)
    x, w, b = (torch.randn(s, generator=gen).to(dtype).to(rt.device()) for s in ((37, 24), (20, 24), (20,)))
    g = torch.randn(37, 20, generator=gen).to(dtype).to(rt.device())
    results = []
    for fn, args in ((linear_relu, (x, w, b)), (_torch_linear_relu, tuple(t.double() for t in (x, w, b)))):
        args = tuple(t.detach().requires_grad_() for t in args)
        out = fn(*args)
        results.append((out, torch.autograd.grad(out, args, g.to(out.dtype))))
    (out, grads), (ref, ref_grads) = results
    assert out.dtype == dtype and all(gr.dtype == dtype for gr in grads)
    for got, want in zip((out, *grads), (ref, *ref_grads), strict=True):  # depth: db sums 37 rows
        assert_close(got, want, depth=37, grad=got is not out)


def _torch_linear_relu(x, w, b):
    return F.relu(F.linear(x, w, b))


# ---------------------------------------------------------------------------------------------
# torch.library registration: blitz::matmul, blitz::linear, blitz::linear_relu and their backwards
# ---------------------------------------------------------------------------------------------

OPCHECK_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def _opcheck_args(case: str, dtype: torch.dtype):
    torch.manual_seed(6)

    def t(*shape):
        return torch.randn(shape, dtype=dtype, device=rt.device())

    if case == "matmul_2d_transposed":
        return torch.ops.blitz.matmul.default, (t(5, 3), t(4, 3).t())
    if case == "matmul_broadcast_batch":
        return torch.ops.blitz.matmul.default, (t(2, 5, 3), t(1, 3, 4))
    if case == "linear_3d_strided":
        return torch.ops.blitz.linear.default, (t(3, 2, 6).transpose(0, 1), t(4, 6), t(4))
    return torch.ops.blitz.linear_relu.default, (t(5, 6), t(6, 4).t(), None)  # a transposed weight, no bias


@pytest.mark.parametrize("case", ["matmul_2d_transposed", "matmul_broadcast_batch", "linear_3d_strided", "linear_relu"])
@pytest.mark.parametrize("dtype", OPCHECK_DTYPES, ids=str)
def test_opcheck(case, dtype):
    """torch.library.opcheck (schema, fake tensor, autograd registration, AOT dispatch with dynamic
    shapes, which runs the backward ops too) on the ops the public functions call."""
    op, args = _opcheck_args(case, dtype)
    args = tuple(a.requires_grad_() if isinstance(a, torch.Tensor) else a for a in args)
    results = torch.library.opcheck(op, args)
    assert results and set(results.values()) == {"SUCCESS"}, results


def test_outputs_do_not_alias_inputs():
    a, b = _t(1, 1), _t(1, 1)
    for out in (matmul(a, b), linear(a, b), linear_relu(a, b)):
        assert out.untyped_storage().data_ptr() not in (a.untyped_storage().data_ptr(), b.untyped_storage().data_ptr())
