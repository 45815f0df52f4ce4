"""conv2d (kernels.conv) against cuDNN through torch eager: the blitz classifier's two convolutions
at batch 4096 (fp32, IEEE on both sides) and a ResNet-style 3x3 64->64 fp16 convolution.

conv1's input is the data, so its backward computes the weight and bias gradients only, as in
training; the others compute dx as well.
"""

import pytest
import torch
import torch.nn.functional as F

from benchmarks import harness as hb

# (N, C_in, H, W, C_out, kernel, padding, bias, input needs grad)
CASES = [
    hb.Case(
        "blitz-conv1-n4096",
        "conv1 N4096 3->6 5x5",
        gpu=(4096, 3, 32, 32, 6, 5, 0, True, False),
        cpu=(2, 3, 32, 32, 6, 5, 0, True, False),
        precision="ieee",
        goal=hb.speedup_goal(1.5, "cuDNN"),
    ),
    hb.Case(
        "blitz-conv2-n4096",
        "conv2 N4096 6->16 5x5",
        gpu=(4096, 6, 14, 14, 16, 5, 0, True, True),
        cpu=(2, 6, 14, 14, 16, 5, 0, True, True),
        precision="ieee",
        goal=hb.speedup_goal(1.5, "cuDNN"),
    ),
    hb.Case(
        "resnet-3x3-fp16",
        "N128 64->64 3x3 56^2",
        gpu=(128, 64, 56, 56, 64, 3, 1, False, True),
        cpu=(1, 16, 8, 8, 16, 3, 1, False, True),
        dtype=torch.float16,
        goal=hb.speedup_goal(0.7, "cuDNN"),
    ),
]


@pytest.mark.parametrize("impl", hb.IMPLS)
@pytest.mark.parametrize("pass_", hb.PASSES)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_conv2d(bench, case, pass_, impl):
    fn = bench.pick(impl, lambda: hb.load("kernels.conv", "conv2d"), F.conv2d)
    n, cin, h, w, cout, k, pad, has_bias, x_grad = bench.size(case)
    grad = pass_ == "fwd+bwd"
    x = bench.tensor((n, cin, h, w), case.dtype, grad=grad and x_grad)
    weight = bench.tensor((cout, cin, k, k), case.dtype, grad=grad)
    bias = bench.tensor((cout,), case.dtype, grad=grad) if has_bias else None
    ho, wo = h + 2 * pad - k + 1, w + 2 * pad - k + 1
    fwd_flops = 2 * n * cout * ho * wo * cin * k * k
    e = x.element_size()
    xb, wb, yb = x.numel() * e, weight.numel() * e, n * cout * ho * wo * e
    # fwd: read x and W, write y; bwd: read g, x and W, write dW (and dx)
    bwd_bytes = yb + xb + wb + wb + (xb if x_grad else 0)
    bench.run(
        lambda: fn(x, weight, bias, 1, pad),
        op="conv2d",
        case=case,
        pass_=pass_,
        impl=impl,
        inputs=[t for t in (x, weight, bias) if t is not None],
        flops=fwd_flops * ((3 if x_grad else 2) if grad else 1),
        bytes=xb + wb + yb + (bwd_bytes if grad else 0),
        shape=f"x{tuple(x.shape)} W{tuple(weight.shape)} pad={pad}",
    )
