"""max_pool2d: the engine's property test, torch's tie and NaN rules, layouts and bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gradcheck.testing import op_tests
from kernels import _runtime as rt
from kernels.pool import max_pool2d

DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
NAN, INF = math.nan, math.inf


test_max_pool2d = op_tests("max_pool2d", cpu_max_examples=8)


@pytest.fixture(autouse=True)
def _tensors_on_the_kernel_device():
    """Tensors made in these tests land where the kernels run (CUDA compiled, CPU interpreted)."""
    with torch.device(rt.device()):
        yield


def _compare_with_torch(x: torch.Tensor, *args):
    """Values, indices and the gradient exactly as torch: ties and NaN pick the same winner, and
    an integer-valued grad_output makes every gradient sum exact in any order."""
    ours = x.detach().clone().requires_grad_(True)
    theirs = x.detach().clone().requires_grad_(True)
    y, idx = max_pool2d(ours, *args, return_indices=True)
    y_ref, idx_ref = F.max_pool2d(theirs, *args, return_indices=True)
    assert y.shape == y_ref.shape and y.dtype == y_ref.dtype
    assert torch.equal(torch.isnan(y), torch.isnan(y_ref))
    assert torch.equal(y.nan_to_num(nan=0.0), y_ref.detach().nan_to_num(nan=0.0))
    assert torch.equal(idx, idx_ref)
    g = torch.randint(-3, 4, y.shape).to(x.dtype)
    (dx,) = torch.autograd.grad(y, ours, g)
    (dx_ref,) = torch.autograd.grad(y_ref, theirs, g)
    assert torch.equal(dx, dx_ref)
    return y, dx


POOLS = [
    # (kernel_size, stride, padding, dilation, ceil_mode)
    (2, None, 0, 1, False),
    (3, 2, 1, 1, False),
    (3, 1, 1, 1, False),  # overlapping windows: gradients sum over up to 9 windows
    ((3, 2), (1, 2), (1, 1), (2, 1), True),
    (3, 2, 1, 2, True),
    (2, 3, 0, 1, True),  # stride past the kernel: elements in no window
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("pool", POOLS, ids=str)
def test_ties_pick_torchs_winner(pool, dtype):
    """Small integers: ties in nearly every window."""
    torch.manual_seed(0)
    _compare_with_torch(torch.randint(-2, 3, (2, 3, 9, 8)).to(dtype), *pool)


@pytest.mark.parametrize("pool", POOLS, ids=str)
def test_nan_and_inf_follow_torch(pool):
    """NaN wins its window (the last NaN when there are several); a window of -inf keeps its first
    in-bounds element."""
    torch.manual_seed(1)
    x = torch.randint(-2, 3, (2, 3, 9, 8)).float()
    specials = torch.rand(x.shape)
    x[specials < 0.1] = NAN
    x[(specials >= 0.1) & (specials < 0.4)] = -INF
    x[(specials >= 0.4) & (specials < 0.45)] = INF
    _compare_with_torch(x, *pool)


def test_all_nan_and_all_minus_inf_windows():
    x = torch.tensor([[[[NAN, NAN, -INF, -INF], [NAN, 1.0, -INF, -INF]]]])
    y, _ = _compare_with_torch(x, 2)
    assert math.isnan(y[0, 0, 0, 0].item()) and y[0, 0, 0, 1].item() == -INF


def test_windows_of_padding_only():
    """Kernel 2, dilation 2, padding 1 on a 1-wide input: a window can miss the input entirely.
    Its value is -inf and its index torch's (first row and column at or past 0, here outside the
    input), as torch; its gradient is 0 (the output does not depend on the input), where torch
    scatters it to that flat index, which on a 1-wide plane aliases a real element of a later row."""
    x = torch.randn(1, 2, 3, 1, requires_grad=True)
    y, idx = max_pool2d(x, 2, 1, 1, 2, return_indices=True)
    y_ref, idx_ref = F.max_pool2d(x, 2, 1, 1, 2, return_indices=True)
    assert torch.equal(y, y_ref) and bool((y == -INF).all()) and torch.equal(idx, idx_ref)
    (dx,) = torch.autograd.grad(y, x, torch.ones_like(y))
    assert bool((dx == 0).all())


@pytest.mark.parametrize("layout", ["channels_last", "transposed_hw", "sliced"])
def test_layouts(layout):
    torch.manual_seed(2)
    x = torch.randn(2, 5, 9, 10, dtype=torch.float64)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "transposed_hw":
        x = x.transpose(2, 3).contiguous().transpose(2, 3)
    else:
        x = torch.randn(2, 5, 9, 21, dtype=torch.float64)[..., ::2]
    y, dx = _compare_with_torch(x, 3, 2, 1)
    if layout == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last)
        assert dx.is_contiguous(memory_format=torch.channels_last)


def test_expanded_grad_output():
    torch.manual_seed(3)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 3, 4, 1, dtype=torch.float64).expand(2, 3, 4, 4)
    (dx,) = torch.autograd.grad(max_pool2d(x, 2), x, g)
    (dx_ref,) = torch.autograd.grad(F.max_pool2d(x, 2), x, g)
    assert torch.equal(dx, dx_ref)


def test_backward_is_deterministic():
    torch.manual_seed(4)
    x = torch.randn(4, 6, 28, 28, requires_grad=True)
    g = torch.randn(4, 6, 28, 28)
    first = torch.autograd.grad(max_pool2d(x, 3, 1, 1), x, g)[0]
    second = torch.autograd.grad(max_pool2d(x, 3, 1, 1), x, g)[0]
    assert torch.equal(first, second)


def test_unbatched_and_return_indices():
    x = torch.randn(3, 7, 6)
    y, idx = max_pool2d(x, 2, return_indices=True)
    y_ref, idx_ref = F.max_pool2d(x, 2, return_indices=True)
    assert torch.equal(y, y_ref) and torch.equal(idx, idx_ref)
    assert torch.equal(max_pool2d(x, 2), y_ref)


def test_indices_are_not_differentiable():
    x = torch.randn(1, 1, 4, 4, requires_grad=True)
    y, idx = max_pool2d(x, 2, return_indices=True)
    assert y.requires_grad and not idx.requires_grad and idx.dtype == torch.int64


def test_no_grad_forward():
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    with torch.no_grad():
        assert torch.equal(max_pool2d(x, 2), F.max_pool2d(x, 2))


def test_empty_batch():
    x = torch.randn(0, 3, 8, 8, requires_grad=True)
    y = max_pool2d(x, 2)
    assert y.shape == (0, 3, 4, 4)
    (dx,) = torch.autograd.grad(y, x, torch.ones_like(y))
    assert dx.shape == x.shape


@pytest.mark.parametrize(
    ("shape", "args", "error", "message"),
    [
        ((1, 1, 8, 8), (3, 1, 2), ValueError, "padding .* must be at most half the kernel size"),
        ((1, 1, 8, 8), (2, 0), ValueError, "stride must be positive"),
        ((1, 1, 8, 8), (0,), ValueError, "kernel_size must be positive"),
        ((1, 1, 8, 8), (2, 2, -1), ValueError, "padding must be non-negative"),
        ((1, 1, 8, 8), (2, 2, 0, 0), ValueError, "dilation must be positive"),
        ((1, 1, 2, 2), (3,), ValueError, "too small for kernel"),
        ((1, 1, 3, 3), (2, 1, 0, 3), ValueError, "too small for kernel"),
        ((8, 8), (2,), ValueError, r"expects a 4-D \(N, C, H, W\) or 3-D input"),
        ((1, 1, 1, 8, 8), (2,), ValueError, r"expects a 4-D \(N, C, H, W\) or 3-D input"),
        ((1, 0, 8, 8), (2,), ValueError, "non-empty channel and spatial dims"),
        ((1, 1, 8, 8), ((2, 2, 2),), TypeError, "kernel_size must be an int or a pair"),
    ],
)
def test_bad_input_raises(shape, args, error, message):
    with pytest.raises(error, match=message):
        max_pool2d(torch.randn(shape), *args)


def test_bad_dtype_raises():
    with pytest.raises(TypeError, match="input has dtype int64"):
        max_pool2d(torch.zeros(1, 1, 4, 4, dtype=torch.int64), 2)


@pytest.mark.gpu
def test_past_int32_offsets():
    """An input of more than 2^31 elements: offsets need int64."""
    x = torch.randn(4, 8, 8192, 8200, dtype=torch.float16, device="cuda")  # 2.1e9 elements
    y = max_pool2d(x, 2)
    assert torch.equal(y[-1, -1, -4:], F.max_pool2d(x[-1:, -1:, -8:], 2)[0, 0])


# ---------------------------------------------------------------------------------------------
# torch.library registration: blitz::max_pool2d and blitz::max_pool2d_backward
# ---------------------------------------------------------------------------------------------


def _opcheck_inputs(case: str, dtype: torch.dtype) -> torch.Tensor:
    torch.manual_seed(5)
    if case == "contiguous":
        x = torch.randn(2, 3, 7, 6, dtype=dtype)
    elif case == "channels_last":
        x = torch.randn(2, 4, 7, 6, dtype=dtype).contiguous(memory_format=torch.channels_last)
    else:  # strided: every other row and column
        x = torch.randn(2, 3, 14, 12, dtype=dtype)[:, :, ::2, 1::2]
    return x.to(rt.device()).requires_grad_()


OPCHECK_CASES = {
    # (kernel_size, stride, padding, dilation, ceil_mode), as the op's schema takes them
    "contiguous": ([2, 2], [2, 2], [0, 0], [1, 1], False),
    "channels_last": ([3, 2], [2, 1], [1, 1], [1, 1], True),
    "strided": ([2, 2], [1, 1], [0, 0], [2, 1], False),
}


@pytest.mark.parametrize("case", list(OPCHECK_CASES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64], ids=str)
def test_opcheck_max_pool2d(case, dtype):
    """torch.library.opcheck (schema, fake tensor, autograd registration, AOT dispatch with dynamic
    shapes, which runs blitz::max_pool2d_backward too) on the op the public function calls."""
    args = (_opcheck_inputs(case, dtype), *OPCHECK_CASES[case])
    results = torch.library.opcheck(torch.ops.blitz.max_pool2d.default, args)
    assert results and set(results.values()) == {"SUCCESS"}, results


def test_outputs_do_not_alias_the_input():
    x = torch.randn(1, 1, 1, 1)
    y, idx = max_pool2d(x, 1, return_indices=True)
    assert y.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()
    assert idx.dtype == torch.int64
