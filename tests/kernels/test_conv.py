"""conv2d: the engine's property test, torch-matching edge cases, layouts and bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gradcheck.testing import op_tests
from gradcheck.tolerances import assert_close
from kernels import _runtime as rt
from kernels.conv import conv2d

DEVICE = rt.device()
DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


test_conv2d = op_tests("conv2d", cpu_max_examples=6)


@pytest.fixture(autouse=True)
def _tensors_on_the_kernel_device():
    """Tensors made in these tests land where the kernels run (CUDA compiled, CPU interpreted)."""
    with torch.device(DEVICE):
        yield


def _grads(fn, x, w, b, g, **kwargs):
    leaves = [t.detach().clone().requires_grad_(True) if t is not None else None for t in (x, w, b)]
    y = fn(*leaves, **kwargs)
    grads = torch.autograd.grad(y, [t for t in leaves if t is not None], g)
    return y.detach(), grads


def _check_against_torch(x, w, b, g=None, **kwargs):
    """Forward and every gradient against torch run in float64 on the same values."""
    if g is None:
        shape = F.conv2d(x.double(), w.double(), None, **kwargs).shape
        g = torch.randn(shape, dtype=torch.float64).to(x.dtype)
    y, grads = _grads(conv2d, x, w, b, g, **kwargs)
    f64 = [t.double().cpu() if t is not None else None for t in (x, w, b)]
    y_ref, grads_ref = _grads(F.conv2d, *f64, g.double().cpu(), **kwargs)
    # sum|terms| of every result: the same convolution and its VJP on absolute values
    mags = _grads(F.conv2d, *(None if t is None else t.abs() for t in f64), g.double().cpu().abs(), **kwargs)
    mags = (mags[0], *mags[1])
    oh, ow = y.shape[-2:]
    oc, c_in, kh, kw = w.shape
    groups = kwargs.get("groups", 1)
    depth = max(c_in * kh * kw, oc // groups * kh * kw, x.shape[0] * oh * ow if x.dim() == 4 else oh * ow)
    results = (("output", y, y_ref), *zip(("dx", "dw", "db"), grads, grads_ref, strict=False))
    for (name, got, want), mag in zip(results, mags, strict=False):
        assert got.dtype == x.dtype and got.shape == want.shape, name
        assert_close(got, want, depth=depth, grad=name != "output", magnitude=mag, msg=name)
    return y, grads


GEOMETRIES = [
    # (N, C, OC, H, W, KH, KW, kwargs)
    (2, 3, 6, 9, 11, 3, 2, {}),
    (3, 4, 6, 10, 7, 3, 3, {"stride": (2, 3), "padding": (1, 0), "dilation": (2, 1)}),
    (17, 6, 4, 12, 7, 5, 3, {"stride": 2, "padding": (2, 1), "groups": 2}),
    (2, 6, 6, 8, 8, 3, 3, {"padding": 1, "groups": 6}),  # depthwise
    (2, 3, 5, 9, 10, 4, 3, {"padding": "same", "dilation": (1, 2)}),  # asymmetric 'same' padding
    (1, 2, 3, 5, 5, 5, 5, {"padding": "valid"}),  # the kernel covers the whole input
    (2, 32, 20, 7, 6, 3, 3, {"padding": 1, "stride": 2}),  # taps-outer kernels (>= 16 channels)
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: f"{g[:7]}{g[7]}")
def test_matches_torch(geometry, dtype):
    n, c, oc, h, w, kh, kw, kwargs = geometry
    groups = kwargs.get("groups", 1)
    torch.manual_seed(0)
    x = torch.randn(n, c, h, w, dtype=torch.float64).to(dtype)
    wt = torch.randn(oc, c // groups, kh, kw, dtype=torch.float64).to(dtype)
    b = torch.randn(oc, dtype=torch.float64).to(dtype)
    _check_against_torch(x, wt, b, **kwargs)


def _layouts(t: torch.Tensor) -> dict[str, torch.Tensor]:
    """The same values in several memory layouts."""
    wide = torch.zeros(t.shape[0], t.shape[1], t.shape[2], 2 * t.shape[3] + 1, dtype=t.dtype)
    wide[..., 1::2] = t
    return {
        "contiguous": t.contiguous(),
        "channels_last": t.contiguous(memory_format=torch.channels_last),
        "transposed_hw": t.transpose(2, 3).contiguous().transpose(2, 3),
        "sliced": wide[..., 1::2],
    }


@pytest.mark.parametrize("x_layout", ["contiguous", "channels_last", "transposed_hw", "sliced"])
@pytest.mark.parametrize("w_layout", ["contiguous", "channels_last", "sliced"])
def test_layouts(x_layout, w_layout):
    torch.manual_seed(1)
    x = torch.randn(3, 4, 9, 8, dtype=torch.float64)
    w = torch.randn(6, 2, 3, 2, dtype=torch.float64)
    b = torch.randn(12, dtype=torch.float64)[::2]  # a strided bias
    _check_against_torch(_layouts(x)[x_layout], _layouts(w)[w_layout], b, stride=(1, 2), padding=1, groups=2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_channels_last_weight_gradient(dtype):
    """FlagGems returned a weight gradient off by up to 41 for a channels_last weight."""
    torch.manual_seed(2)
    x = torch.randn(4, 8, 12, 12, dtype=dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(16, 8, 3, 3, dtype=dtype).contiguous(memory_format=torch.channels_last)
    _, (dx, dw, _) = _check_against_torch(x, w, torch.randn(16, dtype=dtype), padding=1)
    assert dw.is_contiguous(memory_format=torch.channels_last), "the weight gradient follows the weight's layout"
    assert dx.is_contiguous(memory_format=torch.channels_last), "the input gradient follows the input's layout"


def test_expanded_grad_output():
    """A stride-0 grad_output (FlagGems' linear backward broke on one)."""
    torch.manual_seed(3)
    x, w, b = torch.randn(2, 3, 6, 6, dtype=torch.float64), torch.randn(4, 3, 3, 3, dtype=torch.float64), None
    g = torch.randn(2, 4, 1, 4, dtype=torch.float64).expand(2, 4, 4, 4)
    _check_against_torch(x, w, b, g=g)


def test_output_follows_input_layout():
    x = torch.randn(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    y = conv2d(x, torch.randn(5, 3, 3, 3))
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert conv2d(x.contiguous(), torch.randn(5, 3, 3, 3)).is_contiguous()


def test_unbatched_input():
    torch.manual_seed(4)
    x, w = torch.randn(3, 7, 6, dtype=torch.float64), torch.randn(2, 3, 3, 3, dtype=torch.float64)
    b = torch.randn(2, dtype=torch.float64)
    assert_close(conv2d(x, w, b, padding=1), F.conv2d(x, w, b, padding=1), depth=3 * 3 * 3, expected_rounded=True)


def test_backward_is_deterministic():
    torch.manual_seed(5)
    x = torch.randn(17, 3, 20, 20, requires_grad=True)
    w = torch.randn(6, 3, 5, 5, requires_grad=True)
    b = torch.randn(6, requires_grad=True)
    g = torch.randn(17, 6, 16, 16)
    first = torch.autograd.grad(conv2d(x, w, b), (x, w, b), g)
    second = torch.autograd.grad(conv2d(x, w, b), (x, w, b), g)
    for a, c in zip(first, second, strict=True):
        assert torch.equal(a, c)


def test_only_some_gradients():
    """Each of dx, dw, db is computed alone when only it is needed."""
    torch.manual_seed(6)
    x, w = torch.randn(2, 3, 6, 6, dtype=torch.float64), torch.randn(4, 3, 3, 3, dtype=torch.float64)
    b = torch.randn(4, dtype=torch.float64)
    g = torch.randn(2, 4, 4, 4, dtype=torch.float64)
    for which in range(3):
        ours = [t.clone().requires_grad_(i == which) for i, t in enumerate((x, w, b))]
        ref = [t.clone().requires_grad_(i == which) for i, t in enumerate((x, w, b))]
        (got,) = torch.autograd.grad(conv2d(*ours), ours[which], g)
        (want,) = torch.autograd.grad(F.conv2d(*ref), ref[which], g)
        assert_close(got, want, depth=2 * 4 * 4, grad=True, expected_rounded=True)  # dw sums N * OH * OW


def test_nan_and_inf_propagate_like_torch():
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    x[0, 0, 1, 1] = float("nan")
    x[0, 1, 4, 4] = float("inf")
    w = torch.randn(3, 2, 2, 2, dtype=torch.float64)
    got, want = conv2d(x, w, stride=2), F.conv2d(x, w, stride=2)
    assert torch.equal(torch.isnan(got), torch.isnan(want))
    finite = torch.isfinite(want)
    assert_close(got[finite], want[finite], depth=2 * 2 * 2, expected_rounded=True)


def test_empty_batch():
    x = torch.randn(0, 3, 8, 8, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    b = torch.randn(4, requires_grad=True)
    y = conv2d(x, w, b)
    assert y.shape == (0, 4, 6, 6)
    dx, dw, db = torch.autograd.grad(y, (x, w, b), torch.ones_like(y))
    assert dx.shape == x.shape and bool((dw == 0).all()) and bool((db == 0).all())


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "kwargs", "error", "message"),
    [
        ((1, 3, 4, 4), (2, 3, 5, 5), {}, ValueError, "larger than the padded input"),
        ((1, 3, 4, 4), (2, 3, 3, 3), {"dilation": 2}, ValueError, "larger than the padded input"),
        ((1, 3, 8, 8), (2, 3, 3, 3), {"stride": 0}, ValueError, "stride must be positive"),
        ((1, 3, 8, 8), (2, 3, 3, 3), {"stride": (1, -1)}, ValueError, "stride must be positive"),
        ((1, 3, 8, 8), (2, 3, 3, 3), {"padding": -1}, ValueError, "padding must be non-negative"),
        ((1, 3, 8, 8), (2, 3, 3, 3), {"dilation": 0}, ValueError, "dilation must be positive"),
        ((1, 4, 8, 8), (2, 3, 3, 3), {}, ValueError, "expects an input with 3 channels"),
        ((1, 3, 8, 8), (2, 3, 3, 3), {"groups": 2}, ValueError, "does not divide the input's 3 channels"),
        ((1, 4, 8, 8), (3, 2, 3, 3), {"groups": 2}, ValueError, "does not divide the weight's 3 output channels"),
        ((1, 4, 8, 8), (2, 4, 3, 3), {"groups": 0}, ValueError, "groups must be a positive int"),
        ((3, 8, 8, 1, 1), (2, 3, 3, 3), {}, ValueError, "4-D input"),
        ((8, 8), (2, 3, 3, 3), {}, ValueError, "4-D input"),
        ((1, 3, 8, 8), (2, 3, 3), {}, ValueError, "4-D weight"),
        ((1, 3, 8, 8), (2, 3, 3, 3), {"padding": "same", "stride": 2}, ValueError, "padding='same' needs stride 1"),
        ((1, 3, 8, 8), (2, 3, 3, 3), {"padding": "full"}, ValueError, "expected an int, a pair of ints"),
        ((1, 3, 8, 8), (2, 3, 3, 3), {"stride": (1, 2, 3)}, TypeError, "stride must be an int or a pair"),
    ],
)
def test_bad_input_raises(x_shape, w_shape, kwargs, error, message):
    with pytest.raises(error, match=message):
        conv2d(torch.randn(x_shape), torch.randn(w_shape), **kwargs)


def test_bad_bias_and_dtypes_raise():
    x, w = torch.randn(1, 3, 8, 8), torch.randn(2, 3, 3, 3)
    with pytest.raises(ValueError, match=r"bias must have shape \(2,\)"):
        conv2d(x, w, torch.randn(3))
    with pytest.raises(TypeError, match="mixed dtypes"):
        conv2d(x, w.double())
    with pytest.raises(TypeError, match="input has dtype int64"):
        conv2d(x.long(), w)
    with pytest.raises(TypeError, match=r"weight must be a torch\.Tensor"):
        conv2d(x, [[1.0]])


@pytest.mark.gpu
def test_past_int32_offsets():
    """An input of more than 2^31 elements (offsets need int64), checked against torch on slices."""
    x = torch.randn(1, 64, 6000, 6000, dtype=torch.float16, device="cuda")  # 2.3e9 elements
    w = torch.randn(2, 64, 1, 1, dtype=torch.float16, device="cuda")
    y = conv2d(x, w)
    rows = slice(5990, 6000)
    want = F.conv2d(x[:, :, rows].float(), w.float())
    assert_close(y[:, :, rows], want.double(), depth=64)


# ---------------------------------------------------------------------------------------------
# torch.library registration: blitz::conv2d and blitz::conv2d_backward
# ---------------------------------------------------------------------------------------------


def _opcheck_args(case: str, dtype: torch.dtype) -> tuple:
    """Inputs of blitz::conv2d as its schema takes them: padding (top, bottom, left, right)."""
    torch.manual_seed(7)

    def t(*shape):
        return torch.randn(shape, dtype=dtype, device=rt.device()).requires_grad_()

    if case == "contiguous_bias":
        return t(2, 3, 7, 6), t(4, 3, 3, 3), t(4), [1, 1], [1, 1, 0, 0], [1, 1], 1
    if case == "channels_last_groups":
        x = torch.randn(2, 4, 7, 6, dtype=dtype, device=rt.device()).contiguous(memory_format=torch.channels_last)
        return x.requires_grad_(), t(4, 2, 2, 3), None, [2, 1], [0, 1, 1, 1], [1, 2], 2
    # strided input ("same" padding, asymmetric for an even kernel)
    x = torch.randn(1, 2, 12, 10, dtype=dtype, device=rt.device())[:, :, ::2, 1::2]
    return x.requires_grad_(), t(3, 2, 2, 2), t(3), [1, 1], [0, 1, 0, 1], [1, 1], 1


@pytest.mark.parametrize("case", ["contiguous_bias", "channels_last_groups", "strided_same"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64], ids=str)
def test_opcheck_conv2d(case, dtype):
    """torch.library.opcheck (schema, fake tensor, autograd registration, AOT dispatch with dynamic
    shapes, which runs blitz::conv2d_backward too) on the op the public function calls."""
    results = torch.library.opcheck(torch.ops.blitz.conv2d.default, _opcheck_args(case, dtype))
    assert results and set(results.values()) == {"SUCCESS"}, results
