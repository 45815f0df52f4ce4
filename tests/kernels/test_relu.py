"""relu: property test through the engine, plus the edge cases it does not draw."""

import pytest
import torch

from gradcheck.testing import op_tests
from kernels import _runtime as rt
from kernels.relu import relu
from tests.kernels.library_checks import DTYPES, assert_compiled_matches_eager, assert_opcheck_passes

test_relu = op_tests("relu")


def test_relu_nan_and_inf_match_torch():
    x = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 0.0, 2.0], device=rt.device())
    torch.testing.assert_close(relu(x), torch.relu(x), equal_nan=True, rtol=0, atol=0)  # exact


def test_relu_empty_and_scalar():
    assert relu(torch.empty(0, 3, device=rt.device())).shape == (0, 3)
    assert relu(torch.tensor(-2.0, device=rt.device())).item() == 0.0


def test_relu_rejects_integer_input():
    with pytest.raises(TypeError, match="dtype int64"):
        relu(torch.arange(3, device=rt.device()))


# ---------------------------------------------------------------------------------------------
# torch.library registration: opcheck and torch.compile
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_opcheck_relu(dtype):
    x = torch.randn(4, 6, dtype=dtype, generator=torch.Generator().manual_seed(0)).to(rt.device())
    for arg in (x, x.t(), x[:, ::2]):  # contiguous, transposed, strided
        assert_opcheck_passes(torch.ops.blitz.relu.default, (arg.requires_grad_(),))
    assert_opcheck_passes(torch.ops.blitz.relu_backward.default, (x.detach().t(), x.detach().t()))


def test_relu_compiles():
    x = torch.randn(5, 7, device=rt.device())
    assert_compiled_matches_eager(lambda t: relu(t) * 2, x.t())
