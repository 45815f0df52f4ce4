"""relu: property test through the engine, plus the edge cases it does not draw."""

import pytest
import torch

from gradcheck.testing import op_tests
from kernels import _runtime as rt
from kernels.relu import relu

test_relu = op_tests("relu")


def test_relu_nan_and_inf_match_torch():
    x = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 0.0, 2.0], device=rt.device())
    torch.testing.assert_close(relu(x), torch.relu(x), equal_nan=True)


def test_relu_empty_and_scalar():
    assert relu(torch.empty(0, 3, device=rt.device())).shape == (0, 3)
    assert relu(torch.tensor(-2.0, device=rt.device())).item() == 0.0


def test_relu_rejects_integer_input():
    with pytest.raises(TypeError, match="dtype int64"):
        relu(torch.arange(3, device=rt.device()))


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
def test_opcheck_relu(dtype):
    x = torch.randn(4, 6, dtype=dtype, generator=torch.Generator().manual_seed(0)).to(rt.device())
    for arg in (x, x.t(), x[:, ::2]):  # contiguous, transposed, strided
        _opcheck(torch.ops.blitz.relu.default, (arg.requires_grad_(),))
    _opcheck(torch.ops.blitz.relu_backward.default, (x.detach().t(), x.detach().t()))


def test_relu_compiles():
    x = torch.randn(5, 7, device=rt.device())
    _compiled_matches_eager(lambda t: relu(t) * 2, x.t())
