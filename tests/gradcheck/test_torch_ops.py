"""No false positives: torch's own op (each catalog entry's ``torch_fn``) passes the catalog's
battery, op by op and dtype by dtype, against the NumPy float64 references in ``reference/``.

torch computes sigmoid, tanh and softmax gradients from its rounded forward output (y(1 - y),
1 - y^2, g - sum(g y)), where terms cancel: those pass because the engine runs the catalog's
``torch_fn`` under simulated rounding to scale the bound (``gradcheck.oracle.SimulatedRounding``).

Where torch fails, the case is an expected failure with its reason: a bug of torch's own (shown by
a minimal case below), or an engine tolerance that does not yet cover torch's rounding (to be fixed
in the engine, never by dropping the op). Expected failures skip Hypothesis's shrink phase: the
verdict is settled by the first failing example, and shrinking a known failure costs minutes.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import hypothesis
import pytest
import torch
import torch.nn.functional as F
from hypothesis import strategies as st

import gradcheck as gc
from gradcheck import profiles
from gradcheck.ops import ALL_FLOATS

ROOT = Path(__file__).resolve().parents[2]


def _id(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


_ROUNDED_PRODUCTS = (
    "torch rounds each product to the low-precision dtype before it sums or adds them; the dtype's row "
    "assumes exact products accumulated in fp32"
)

#: (op, dtype) -> why torch fails the battery there (torch 2.13 on the CPU, measured with the ci profile).
KNOWN_FAILURES: dict[tuple[str, str], str] = {
    ("cross_entropy", "float16"): "torch bug (test_torch_cross_entropy_fp16_mean_overflows): its CPU fp16 "
    "cross_entropy sums the row losses in fp16, so a mean of 1400 over 2049 rows is inf",
    ("mul", "float16"): _ROUNDED_PRODUCTS + " (the gradient of a broadcast operand)",
    ("mul", "bfloat16"): _ROUNDED_PRODUCTS + " (the gradient of a broadcast operand)",
    ("linear", "bfloat16"): _ROUNDED_PRODUCTS + " (x @ W^T is rounded to bf16 before the bias is added)",
    ("conv2d", "float16"): _ROUNDED_PRODUCTS + " (its CPU fp16 convolution backward accumulates in fp16)",
    ("conv2d", "bfloat16"): "torch's CPU bf16 convolution backward is off by 40x the bound on some layouts "
    "(a stride-0 weight), and by 1.4x on canonical copies (the weight gradient over a batch of 17): "
    "the bf16 row's fp32-accumulation bound does not hold for it",
    ("max_pool2d", "float32"): "torch bug (test_torch_max_pool2d_window_in_padding): the backward writes past "
    "grad_input and corrupts the heap, so this case runs in a child process",
}
for _dtype in ("float16", "bfloat16"):
    KNOWN_FAILURES[("embedding", _dtype)] = (
        "torch's CPU embedding backward sums the gradient rows of a repeated index in the low-precision "
        "dtype, one rounded addition at a time (test_torch_embedding_backward_accumulates_in_low_precision); "
        "the dtype's row assumes fp32 accumulation, as torch's CUDA kernel does"
    )
KNOWN_FAILURES.update(
    {("max_pool2d", d): KNOWN_FAILURES[("max_pool2d", "float32")] for d in ("float16", "bfloat16", "float64")}
)
KNOWN_FAILURES[("layer_norm", "bfloat16")] = (
    "torch bug (tests/kernels/test_norms.py::test_torch_layer_norm_bf16_bias_grad_accumulates_in_bf16): its CPU "
    "bf16 backward accumulates dweight and dbias in bf16 (4097 rows of grad 1 give a dbias of 512)"
)
KNOWN_FAILURES.update(
    {
        ("group_norm", d): "torch bug (tests/kernels/test_norms.py::"
        "test_torch_group_norm_channels_last_variance_cancels): its CPU channels_last group_norm takes the "
        "variance as E[x^2] - E[x]^2, off by O(1) at a mean offset of 300"
        for d in ("float32", "float16", "bfloat16", "float64")
    }
)
#: Known failures whose failing input the short ci profile (10 examples) does not always reach:
#: not strict there (mul f16: the broadcast operand's rounded products need a wide broadcast;
#: group_norm f16/bf16: a channels_last input with a mean offset; cross_entropy f16: 2049 rows).
RARE = {("mul", "float16"), ("cross_entropy", "float16"), ("group_norm", "float16"), ("group_norm", "bfloat16")}
#: Ops whose torch implementation can kill the process on a drawn input: run in a child process.
ISOLATED = {"max_pool2d"}


CASES = [
    pytest.param(
        name,
        dtype,
        id=f"{name}-{_id(dtype)}",
        marks=[
            pytest.mark.xfail(
                reason=KNOWN_FAILURES[(name, _id(dtype))],
                # derandomized (ci, gpu): the same examples fail every run, so a fix shows as XPASS
                strict=hypothesis.settings().derandomize and name not in ISOLATED and (name, _id(dtype)) not in RARE,
            )
        ]
        if (name, _id(dtype)) in KNOWN_FAILURES
        else [],
    )
    for name, spec in sorted(gc.catalog().items())
    for dtype in ALL_FLOATS
    if dtype in spec.dtypes
]


@pytest.mark.parametrize(("name", "dtype"), CASES)
def test_torch_op_passes_the_catalog_battery(name: str, dtype: torch.dtype) -> None:
    if name in ISOLATED:
        _verify_in_a_child(name, dtype)
        return
    spec = gc.catalog()[name]
    expected_to_fail = (name, _id(dtype)) in KNOWN_FAILURES
    with profiles.without_shrinking() if expected_to_fail else contextlib.nullcontext():
        report = gc.verify_op(name, impl=spec.torch_fn, dtypes=[dtype])
    assert report.failures == []
    assert report.stat(_id(dtype), "forward").examples > 0


def _verify_in_a_child(name: str, dtype: torch.dtype) -> None:
    """``verify_op(name, impl=torch_fn)`` in a child process under the active profile: a crash
    (SIGSEGV, heap corruption) fails this test instead of killing the test run."""
    code = (
        "import sys, hypothesis, torch, gradcheck as gc; from gradcheck import profiles;"
        f"profiles.load({getattr(hypothesis.settings, 'get_current_profile_name', lambda: 'default')()!r});"
        f"gc.verify_op({name!r}, impl=gc.catalog()[{name!r}].torch_fn, dtypes=[torch.{_id(dtype)}])"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"


def test_torch_max_pool2d_window_in_padding():
    """torch 2.13's max_pool2d returns index H*W (one past the plane) for a window lying entirely in
    padding, and its backward scatters the gradient there: past the end of grad_input. Minimal case
    (found by the catalog's pool strategy): (2, 17, 12, 1), kernel (1, 2), padding (0, 1), dilation 2,
    ceil_mode. Only the forward runs here; the backward would corrupt this process's heap. When this
    test fails, torch is fixed: drop max_pool2d from KNOWN_FAILURES."""
    x = torch.randn(2, 17, 12, 1, dtype=torch.float64)
    kwargs = {"kernel_size": (1, 2), "padding": (0, 1), "dilation": 2, "ceil_mode": True, "return_indices": True}
    _, indices = F.max_pool2d(x, **kwargs)
    assert int(indices.max()) >= 12 * 1, "torch no longer points past the plane: its bug is fixed"


def test_the_max_pool2d_crash_is_a_verdict_with_its_input():
    """The same torch bug through the engine, isolated (``isolate=True``: a forked child that records
    each example first): whether the write past grad_input kills the child (check 'crash', with the
    recorded input) or lands in the next plane (a wrong gradient), the verdict names the input, and
    this process survives to assert it."""
    x = torch.randn(2, 17, 12, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    drawn = (x.contiguous(memory_format=torch.channels_last), (1, 2), None, (0, 1), 2, True, False)
    with pytest.raises(gc.VerificationError) as caught:
        gc.verify_op(
            "max_pool2d",
            impl=F.max_pool2d,
            dtypes=[torch.float64],
            inputs=st.just(drawn),
            isolate=True,
            max_examples=1,
            max_findings=1,
        )
    error = caught.value
    assert error.check in ("crash", "backward", "backward_fd", "jacobian"), str(error)
    assert "(2, 17, 12, 1)" in str(error), "the report names the input"
    assert error.found_at is not None and error.found_at >= 1


def test_torch_cross_entropy_fp16_mean_overflows():
    """torch 2.13's CPU cross_entropy at fp16 sums the row losses in fp16: 2049 rows of loss 1400
    (mean 1400, well inside fp16's range) give inf. When this fails, torch is fixed: drop the
    ("cross_entropy", "float16") known failure."""
    x = torch.zeros(2049, 10)
    x[:, 1] = 1400.0
    target = torch.zeros(2049, dtype=torch.long)
    assert float(F.cross_entropy(x, target)) == 1400.0
    assert torch.isinf(F.cross_entropy(x.half(), target)), "torch's fp16 mean no longer overflows: fixed"


def _conv2d_canonical(x, weight, bias, stride, padding, dilation, groups):
    """F.conv2d on canonical contiguous copies of the input and the weight: torch's arithmetic
    without its layout dispatch."""
    canonical = torch.contiguous_format
    return F.conv2d(
        x.clone(memory_format=canonical), weight.clone(memory_format=canonical), bias, stride, padding, dilation, groups
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=_id)
def test_torch_conv2d_on_canonical_layouts(dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch's convolution arithmetic is right at these dtypes; what fails above is its CPU layout
    dispatch (torch 2.13 returned wrong values for some weight and input layouts, e.g. a (2, 1, 1, 3)
    float32 weight with strides (3, 1, 3, 1) on a (17, 1, 2, 5) input at stride (1, 3) off by 7)."""
    # cuDNN runs fp32 convolutions on TF32 by default (measured: errors 400x the fp32 row on an H200)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    report = gc.verify_op("conv2d", impl=_conv2d_canonical, dtypes=[dtype])
    assert report.stat(_id(dtype), "backward").examples > 0


@pytest.mark.parametrize(
    ("dtype", "big"), [(torch.float16, 2048.0), (torch.bfloat16, 256.0)], ids=["float16", "bfloat16"]
)
def test_torch_embedding_backward_accumulates_in_low_precision(dtype, big):
    """big + 1 + 1 is exact in the dtype (2050 in fp16, 258 in bf16: the spacing there is 2), but
    torch 2.13's CPU embedding backward returns big: each partial sum is rounded to the dtype
    (big + 1 is a tie that rounds back to big). When this test fails, torch accumulates in fp32:
    drop embedding from KNOWN_FAILURES."""
    weight = torch.zeros(2, 1, dtype=dtype, requires_grad=True)
    g = torch.tensor([[big], [1.0], [1.0]], dtype=dtype)
    (dw,) = torch.autograd.grad(F.embedding(torch.tensor([1, 1, 1]), weight), weight, g)
    assert dw[1].item() == big  # the exact sum, big + 2, is representable
