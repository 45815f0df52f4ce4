"""linear_cross_entropy (kernels.linear_cross_entropy), ours against torch's unfused path
``F.cross_entropy(F.linear(hidden, weight), target)``, at an LLM head's size: N = 16384 tokens,
H = 4096, a Llama-3 vocabulary of V = 128256, bf16.

Besides the time, each benchmark records the device memory one call holds at its peak beyond its
inputs (``peak_bytes``): the unfused path holds (N, V) logits, their log-softmax and, backward,
their gradients (4.2 GB each in bf16 here); ours never allocates them. The goal is on memory: at
most a quarter of torch's peak (``peak_ratio``, ``memory_goal_met``, measured in the same test).

Arithmetic: forward 2 N V H, forward+backward 6 N V H (dhidden and dweight are two more products
of that size); ours recomputes the logits in the backward (2 N V H per pass) on top of that.
"""

import pytest
import torch
import torch.nn.functional as F

from benchmarks import harness as hb

CASES = [
    hb.Case(
        "16384x4096x128256-bf16",
        "N16384 H4096 V128256",
        gpu=(16384, 4096, 128256),
        cpu=(32, 16, 300),
        dtype=torch.bfloat16,
    ),
]
#: Our peak memory over torch's unfused path's, at most.
MEMORY_GOAL = 0.25


def _unfused(hidden, weight, target):
    return F.cross_entropy(F.linear(hidden, weight), target)


def _step(fn, inputs, backward: bool):
    """One call as the benchmark times it: the loss, and with ``backward`` its gradients."""
    if not backward:
        return fn
    return lambda: torch.autograd.grad(fn(), inputs)


@pytest.mark.parametrize("case,pass_,impl", hb.combos(CASES, hb.PASSES, hb.IMPLS))
def test_linear_cross_entropy(bench, case, pass_, impl):
    fn = bench.pick(impl, lambda: hb.load("kernels.linear_cross_entropy", "linear_cross_entropy"), _unfused)
    n, h, v = bench.size(case)
    backward = pass_ == "fwd+bwd"
    hidden = bench.tensor((n, h), case.dtype, grad=backward)
    weight = bench.tensor((v, h), case.dtype, grad=backward)
    with torch.no_grad():
        weight.mul_(h**-0.5)  # logits of order 1
    target = torch.randint(0, v, (n,), device=bench.device)
    inputs = [hidden, weight]

    def call():
        return fn(hidden, weight, target)

    info = bench.benchmark.extra_info
    peak = hb.peak_memory(_step(call, inputs, backward))
    if peak is not None:
        info["peak_bytes"] = peak
        if impl == "ours":
            torch_peak = hb.peak_memory(_step(lambda: _unfused(hidden, weight, target), inputs, backward))
            info.update(
                torch_peak_bytes=torch_peak,
                peak_ratio=peak / torch_peak,
                memory_goal=f"<= {MEMORY_GOAL:g}x torch's peak",
                memory_goal_met=peak <= MEMORY_GOAL * torch_peak,
            )
    bench.run(
        call,
        op="linear_cross_entropy",
        case=case,
        pass_=pass_,
        impl=impl,
        inputs=inputs,
        flops={"fwd": 2, "fwd+bwd": 6}[pass_] * n * v * h,
        bytes=(n * h + v * h) * hidden.element_size() * (2 if backward else 1),
        matmul_shape=(n, v, h),
        shape=f"hidden ({n},{h}), weight ({v},{h})",
    )
