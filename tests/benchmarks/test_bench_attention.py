"""scaled_dot_product_attention (kernels.attention, flash attention) against torch's SDPA (its
flash backend on a GPU) on a 7B-class attention layer: B=8, H=32, T=4096, D=128, bf16, causal and
not, forward and forward+backward.

Arithmetic: the forward is two matmuls over the (T, T) scores, 4 B H T^2 D flops; the backward
five (recomputing S = q k^T, then dv, dP, dq and dk), 2.5x the forward; causal halves both.
Compulsory traffic: the forward reads q, k, v and writes the output (plus the per-row logsumexp,
fp32); the backward reads q, k, v, the output, grad_output and the logsumexp and writes dq, dk, dv.
The roofline takes the larger of flops over cuBLAS's bf16 rate and bytes over the copy bandwidth.
"""

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from benchmarks import harness as hb

CASE = hb.Case("b8h32t4096d128", "8x32x4096x128", gpu=(8, 32, 4096, 128), cpu=(1, 2, 33, 16), dtype=torch.bfloat16)


def _torch_sdpa(q, k, v, is_causal):
    """torch's SDPA, held to its flash backend on a GPU (the smoke run on a CPU takes its default)."""
    if not hb.on_gpu():
        return F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        return F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)


def _ours():
    sdpa = hb.load("kernels.attention", "scaled_dot_product_attention")
    return lambda q, k, v, is_causal: sdpa(q, k, v, is_causal=is_causal)


@pytest.mark.parametrize("impl", hb.IMPLS)
@pytest.mark.parametrize("pass_", hb.PASSES)
@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
def test_scaled_dot_product_attention(bench, is_causal, pass_, impl):
    fn = bench.pick(impl, _ours, _torch_sdpa)
    b, h, t, d = bench.size(CASE)
    grad = pass_ == "fwd+bwd"
    q, k, v = (bench.tensor((b, h, t, d), CASE.dtype, grad=grad) for _ in range(3))
    fwd_flops = 4 * b * h * t * t * d // (2 if is_causal else 1)
    unit = q.numel() * q.element_size()  # one (B, H, T, D) tensor
    lse = b * h * t * 4
    bench.run(
        lambda: fn(q, k, v, is_causal),
        op="scaled_dot_product_attention" + ("_causal" if is_causal else ""),
        case=CASE,
        pass_=pass_,
        impl=impl,
        inputs=[q, k, v],
        flops={"fwd": fwd_flops, "fwd+bwd": fwd_flops * 7 // 2}[pass_],
        # fwd: read q, k, v, write out and lse; bwd: read q, k, v, out, g and lse, write dq, dk, dv
        bytes={"fwd": 4 * unit + lse, "fwd+bwd": (4 * unit + lse) + (8 * unit + lse)}[pass_],
        shape=str((b, h, t, d)),
    )
