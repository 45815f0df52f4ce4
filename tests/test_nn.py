"""kernels.nn: torch.nn's signatures, parameter names and initialisation on our kernels.

Shapes are small: everything runs the real kernels (the Triton interpreter on CPU).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import kernels.nn as knn
from gradcheck.tolerances import assert_close
from kernels import _runtime as rt
from kernels.blitz.net import BlitzNet, TorchBlitzNet, blitznet_torch

DEV = rt.device()
F64 = torch.float64


def _close(a: torch.Tensor, b: torch.Tensor, depth: int = 1, grad: bool = False, msg: str = "") -> None:
    """Against torch at the same dtype, for a computation whose reductions add up to ``depth``."""
    assert_close(a, b, depth=depth, grad=grad, expected_rounded=True, msg=msg)


# ---------------------------------------------------------------------------------------------
# Initialisation and state_dict interchange
# ---------------------------------------------------------------------------------------------

PAIRS = [
    (lambda: knn.Linear(7, 5, device=DEV), lambda: nn.Linear(7, 5, device=DEV)),
    (lambda: knn.Linear(7, 5, bias=False, device=DEV), lambda: nn.Linear(7, 5, bias=False, device=DEV)),
    (lambda: knn.Conv2d(4, 6, 3, device=DEV), lambda: nn.Conv2d(4, 6, 3, device=DEV)),
    (
        lambda: knn.Conv2d(4, 6, (3, 2), stride=2, padding=1, groups=2, bias=False, device=DEV),
        lambda: nn.Conv2d(4, 6, (3, 2), stride=2, padding=1, groups=2, bias=False, device=DEV),
    ),
    (lambda: BlitzNet(device=DEV), lambda: blitznet_torch(device=DEV)),
]


@pytest.mark.parametrize(("ours", "theirs"), PAIRS)
def test_same_seed_same_initial_weights(ours, theirs):
    """reset_parameters draws exactly like torch.nn's: under one seed both build identical tensors."""
    torch.manual_seed(1234)
    a = ours()
    torch.manual_seed(1234)
    b = theirs()
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert sa[key].shape == sb[key].shape and sa[key].dtype == sb[key].dtype
        assert torch.equal(sa[key], sb[key]), key


def test_initialisation_is_kaiming_uniform_like_torch():
    torch.manual_seed(0)
    layer = knn.Linear(400, 120)
    bound = 1 / 400**0.5  # kaiming_uniform(a=sqrt(5)) on fan_in 400 gives U(-1/sqrt(400), 1/sqrt(400))
    assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.9 * bound
    assert layer.bias.abs().max() <= bound
    conv = knn.Conv2d(6, 16, 5)
    assert conv.weight.abs().max() <= 1 / (6 * 25) ** 0.5


@pytest.mark.parametrize(("ours", "theirs"), PAIRS)
def test_state_dict_loads_both_ways(ours, theirs):
    torch.manual_seed(1)
    a = ours()
    torch.manual_seed(2)
    b = theirs()
    b.load_state_dict(a.state_dict())  # ours -> torch.nn, strict
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    torch.manual_seed(3)
    b = theirs()
    a.load_state_dict(b.state_dict())  # torch.nn -> ours, strict
    for key, value in b.state_dict().items():
        assert torch.equal(a.state_dict()[key], value)


def test_blitznet_keys_are_the_tutorials():
    keys = list(BlitzNet().state_dict())
    assert keys == [f"{layer}.{p}" for layer in ("conv1", "conv2", "fc1", "fc2", "fc3") for p in ("weight", "bias")]
    assert keys == list(TorchBlitzNet().state_dict())
    shapes = {k: tuple(v.shape) for k, v in BlitzNet().state_dict().items()}
    assert shapes["conv1.weight"] == (6, 3, 5, 5) and shapes["conv2.weight"] == (16, 6, 5, 5)
    assert shapes["fc1.weight"] == (120, 400) and shapes["fc2.weight"] == (84, 120) and shapes["fc3.weight"] == (10, 84)


def test_cross_entropy_weight_is_a_buffer_like_torch():
    w = torch.rand(4, device=DEV)
    assert list(knn.CrossEntropyLoss(weight=w).state_dict()) == list(nn.CrossEntropyLoss(weight=w).state_dict())
    assert list(knn.CrossEntropyLoss().state_dict()) == list(nn.CrossEntropyLoss().state_dict()) == []


# ---------------------------------------------------------------------------------------------
# Forward and backward against torch.nn, in float64
# ---------------------------------------------------------------------------------------------


def _check_module(ours: nn.Module, theirs: nn.Module, *inputs: torch.Tensor, depth: int = 1) -> None:
    """Same output and same gradients (inputs and parameters) for the same state, in float64;
    ``depth`` is the summed length of the reductions from the input to the output and back."""
    theirs.load_state_dict(ours.state_dict())
    xs_a = [x.clone().requires_grad_(x.is_floating_point()) for x in inputs]
    xs_b = [x.clone().requires_grad_(x.is_floating_point()) for x in inputs]
    out_a, out_b = ours(*xs_a), theirs(*xs_b)
    _close(out_a, out_b, depth, msg="output")
    g = torch.randn_like(out_b)
    (out_a * g).sum().backward()
    (out_b * g).sum().backward()
    for xa, xb in zip(xs_a, xs_b, strict=True):
        if xa.is_floating_point():
            _close(xa.grad, xb.grad, depth, grad=True, msg="input grad")
    for (name, pa), (_, pb) in zip(ours.named_parameters(), theirs.named_parameters(), strict=True):
        _close(pa.grad, pb.grad, depth, grad=True, msg=name)


@pytest.mark.parametrize("shape", [(5, 7), (7,), (2, 3, 7)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_torch(shape, bias):
    torch.manual_seed(0)
    _check_module(
        knn.Linear(7, 4, bias=bias, device=DEV, dtype=F64),
        nn.Linear(7, 4, bias=bias, device=DEV, dtype=F64),
        torch.randn(shape, device=DEV, dtype=F64),
        depth=7 + 6,  # K = 7 forward, N = 4 for dx, at most 6 rows for dW and db
    )


def test_linear_forward_relu_is_relu_of_linear():
    torch.manual_seed(0)
    layer = knn.Linear(9, 6, device=DEV, dtype=F64)
    x = torch.randn(5, 9, device=DEV, dtype=F64)
    _close(layer.forward_relu(x), torch.relu(torch.nn.functional.linear(x, layer.weight, layer.bias)), depth=9)


@pytest.mark.parametrize(
    ("kwargs", "shape"),
    [
        ({"kernel_size": 3}, (2, 4, 7, 6)),
        ({"kernel_size": (3, 2), "stride": 2, "padding": 1, "groups": 2, "bias": False}, (1, 4, 6, 7)),
        ({"kernel_size": 3, "padding": "same", "dilation": 2}, (1, 4, 7, 7)),
        ({"kernel_size": 2, "padding": "valid"}, (4, 5, 5)),  # unbatched
    ],
)
def test_conv2d_matches_torch(kwargs, shape):
    torch.manual_seed(0)
    _check_module(
        knn.Conv2d(4, 6, device=DEV, dtype=F64, **kwargs),
        nn.Conv2d(4, 6, device=DEV, dtype=F64, **kwargs),
        torch.randn(shape, device=DEV, dtype=F64),
        depth=math.prod(shape),  # every reduction (C k k, OC k k, N OH OW) is shorter than the input
    )


@pytest.mark.parametrize(
    ("kwargs", "shape"),
    [
        ({"kernel_size": 2}, (2, 3, 6, 6)),
        ({"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}, (1, 2, 7, 5)),
        ({"kernel_size": 2, "stride": 1}, (3, 5, 4)),  # unbatched
    ],
)
def test_max_pool2d_matches_torch(kwargs, shape):
    x = torch.randperm(int(torch.tensor(shape).prod()), device=DEV).to(F64).reshape(shape)  # distinct: no ties
    _check_module(knn.MaxPool2d(**kwargs), nn.MaxPool2d(**kwargs), x)


def test_max_pool2d_return_indices():
    x = torch.randperm(2 * 3 * 4 * 4, device=DEV).to(F64).reshape(2, 3, 4, 4)
    out, idx = knn.MaxPool2d(2, return_indices=True)(x)
    want, want_idx = nn.MaxPool2d(2, return_indices=True)(x)
    _close(out, want)
    assert torch.equal(idx, want_idx)
    out, idx = knn.MaxPool2d(2, return_indices=True)(x[0])
    assert out.shape == (3, 2, 2) and torch.equal(idx, want_idx[0])


def test_relu_and_flatten_match_torch():
    x = torch.randn(2, 3, 4, 5, device=DEV, dtype=F64)
    _check_module(knn.ReLU(), nn.ReLU(), x)
    for start, end in [(1, -1), (0, 1), (2, 3), (-2, -1)]:
        assert torch.equal(knn.Flatten(start, end)(x), nn.Flatten(start, end)(x))


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"reduction": "sum"}, {"reduction": "none"}, {"label_smoothing": 0.1}, {"ignore_index": 2}],
)
def test_cross_entropy_matches_torch(kwargs):
    torch.manual_seed(0)
    logits = torch.randn(6, 5, device=DEV, dtype=F64)
    target = torch.tensor([0, 2, 4, 1, 2, 3], device=DEV)
    _check_module(knn.CrossEntropyLoss(**kwargs), nn.CrossEntropyLoss(**kwargs), logits, target, depth=5 + 6)


def test_cross_entropy_class_weights_match_torch():
    torch.manual_seed(0)
    w = torch.rand(5, device=DEV, dtype=F64) + 0.5
    logits = torch.randn(6, 5, device=DEV, dtype=F64)
    target = torch.tensor([0, 2, 4, 1, 2, 3], device=DEV)
    _check_module(knn.CrossEntropyLoss(weight=w), nn.CrossEntropyLoss(weight=w), logits, target, depth=5 + 6)


@pytest.mark.parametrize("fused", [True, False])
def test_blitznet_matches_torch_forward_and_backward(fused):
    torch.manual_seed(0)
    x = torch.randn(3, 3, 32, 32, device=DEV, dtype=F64)
    # the five layers' reductions, forward and backward, add up to less than the input's 9216 elements
    # (conv1's weight gradient alone sums 3 * 28 * 28 = 2352)
    ours, theirs = BlitzNet(fused=fused, device=DEV, dtype=F64), blitznet_torch(device=DEV, dtype=F64)
    _check_module(ours, theirs, x, depth=x.numel())


def test_blitznet_logits_shape_and_float32():
    torch.manual_seed(0)
    ours = BlitzNet(num_classes=7, device=DEV)
    theirs = blitznet_torch(7, device=DEV)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 3, 32, 32, device=DEV)
    out = ours(x)
    assert out.shape == (2, 7) and out.dtype == torch.float32
    _close(out, theirs(x), depth=x.numel())


def test_reprs_read_like_torch():
    assert repr(knn.Linear(3, 2)) == repr(nn.Linear(3, 2))
    assert repr(knn.Conv2d(3, 6, 5)) == repr(nn.Conv2d(3, 6, 5))
    assert repr(knn.Conv2d(3, 6, 5, padding=2, bias=False)) == repr(nn.Conv2d(3, 6, 5, padding=2, bias=False))
    assert repr(knn.MaxPool2d(2, 2)) == repr(nn.MaxPool2d(2, 2))
    assert "conv1" in repr(BlitzNet()) and "fc3" in repr(BlitzNet())


# ---------------------------------------------------------------------------------------------
# Bad input: clear errors, before any kernel runs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: knn.Linear(0, 3), ValueError, "in_features must be positive"),
        (lambda: knn.Linear(2.5, 3), TypeError, "in_features must be an int"),
        (lambda: knn.Conv2d(3, 6, 0), ValueError, "kernel_size must be positive"),
        (lambda: knn.Conv2d(3, 6, (3, 3, 3)), TypeError, "pair of ints"),
        (lambda: knn.Conv2d(3, 6, 3, groups=2), ValueError, "divisible by groups"),
        (lambda: knn.Conv2d(3, 6, 3, padding=-1), ValueError, "padding must be non-negative"),
        (lambda: knn.Conv2d(3, 6, 3, padding="full"), ValueError, "'valid', 'same'"),
        (lambda: knn.Conv2d(3, 6, 2, padding="same"), NotImplementedError, "asymmetric"),
        (lambda: knn.Conv2d(3, 6, 3, padding_mode="reflect"), NotImplementedError, "only 'zeros'"),
        (lambda: knn.Conv2d(3, 6, 3, padding_mode="mirror"), ValueError, "padding_mode must be"),
        (lambda: knn.MaxPool2d(2, padding=2), ValueError, "at most half"),
        (lambda: knn.MaxPool2d(2, stride=0), ValueError, "stride must be positive"),
        (lambda: knn.ReLU(inplace=True), NotImplementedError, "inplace"),
        (lambda: knn.CrossEntropyLoss(reduction="avg"), ValueError, "reduction must be one of"),
        (lambda: knn.CrossEntropyLoss(label_smoothing=1.5), ValueError, "label_smoothing"),
        (lambda: BlitzNet(num_classes=0), ValueError, "num_classes must be positive"),
    ],
)
def test_constructors_reject_bad_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_legacy_loss_arguments_map_like_torch():
    assert knn.CrossEntropyLoss(reduce=False).reduction == "none"
    assert knn.CrossEntropyLoss(size_average=False).reduction == "sum"
    assert knn.CrossEntropyLoss(size_average=True, reduce=True).reduction == "mean"


@pytest.mark.parametrize(
    ("module", "x", "error", "match"),
    [
        (knn.Linear(4, 3), torch.randn(2, 5), ValueError, "in_features=4"),
        (knn.Linear(4, 3), torch.randn(2, 4, dtype=F64), TypeError, "parameters are float32"),
        (knn.Linear(4, 3), torch.ones(2, 4, dtype=torch.int64), TypeError, "dtype int64"),
        (knn.Linear(4, 3), [[1.0, 2.0, 3.0, 4.0]], TypeError, "must be a torch.Tensor"),
        (knn.Linear(4, 3), torch.tensor(1.0), ValueError, "shape"),
        (knn.Conv2d(3, 6, 3), torch.randn(1, 4, 8, 8), ValueError, "in_channels=3"),
        (knn.Conv2d(3, 6, 3), torch.randn(8, 8), ValueError, r"\(N, C, H, W\)"),
        (knn.Conv2d(3, 6, 5), torch.randn(1, 3, 4, 8), ValueError, "smaller than the kernel"),
        (knn.Conv2d(3, 6, 3), torch.randn(1, 3, 8, 8, dtype=F64), TypeError, "cast one of them"),
        (knn.MaxPool2d(2), torch.randn(2, 3, 4, 4, 4), ValueError, r"\(N, C, H, W\)"),
        (knn.ReLU(), "x", TypeError, "must be a torch.Tensor"),
        (knn.Flatten(3, 1), torch.randn(2, 3, 4, 5), ValueError, "comes after"),
        (knn.Flatten(5), torch.randn(2, 3), IndexError, "out of range"),
        (BlitzNet(), torch.randn(2, 3, 28, 28), ValueError, r"\(N, 3, 32, 32\)"),
        (BlitzNet(), torch.randn(3, 32, 32), ValueError, r"\(N, 3, 32, 32\)"),
    ],
)
def test_forward_rejects_bad_input(module, x, error, match):
    x = x.to(DEV) if isinstance(x, torch.Tensor) else x
    module = module.to(DEV)
    with pytest.raises(error, match=match):
        module(x)


@pytest.mark.parametrize(
    ("logits", "target", "match"),
    [
        (torch.randn(4, 3), torch.tensor([0, 1, 2]), "does not fit"),
        (torch.randn(4, 3), torch.rand(4, 2), "must match"),
        (torch.tensor(1.0), torch.tensor(0), "0-d"),
    ],
)
def test_loss_rejects_bad_shapes(logits, target, match):
    with pytest.raises(ValueError, match=match):
        knn.CrossEntropyLoss()(logits.to(DEV), target.to(DEV))


def test_loss_rejects_wrong_weight_length():
    with pytest.raises(ValueError, match="weight has 4 entries for 3 classes"):
        knn.CrossEntropyLoss(weight=torch.ones(4, device=DEV))(torch.randn(2, 3, device=DEV), torch.tensor([0, 1]))


def test_wrong_device_is_named():
    if not rt.INTERPRET:
        pytest.skip("under CUDA a CPU input is the wrong device; covered by the kernels' own tests")
    if not torch.cuda.is_available():
        layer = knn.Linear(3, 2, device="meta")
        with pytest.raises(ValueError, match="meta"):
            layer(torch.randn(2, 3, device="meta"))
