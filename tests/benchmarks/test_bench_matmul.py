"""matmul, linear and linear+relu (kernels.matmul), ours against cuBLAS through torch eager.

Square matmuls at 4096 and 8192 in bf16, fp16, and fp32 as TF32 and as IEEE (both sides run
under the same precision); linear in bf16 at a size that fills the card and in fp32 at the blitz
classifier's fully connected layers (batch 4096). The ceiling of a matmul is cuBLAS at that very
dtype, precision and size, measured in the same run.
"""

import pytest
import torch
import torch.nn.functional as F

from benchmarks import harness as hb

DTYPES = [
    ("bf16", torch.bfloat16, None, hb.CUBLAS_90),
    ("fp16", torch.float16, None, hb.CUBLAS_90),
    ("tf32", torch.float32, "tf32", hb.CUBLAS_TF32),
    ("fp32", torch.float32, "ieee", hb.CUBLAS_90),
]
MATMUL_CASES = [
    hb.Case(f"{size}-{tag}", f"{size}^3", gpu=size, cpu=64, dtype=dtype, precision=prec, goal=goal, smoke=size == 4096)
    for size in (4096, 8192)
    for tag, dtype, prec, goal in DTYPES
]


@pytest.mark.parametrize("impl", hb.IMPLS)
@pytest.mark.parametrize("pass_", hb.PASSES)
@pytest.mark.parametrize("case", MATMUL_CASES, ids=str)
def test_matmul(bench, case, pass_, impl):
    fn = bench.pick(impl, lambda: hb.load("kernels.matmul", "matmul"), torch.matmul)
    n = bench.size(case)
    a = bench.tensor((n, n), case.dtype, grad=pass_ == "fwd+bwd")
    b = bench.tensor((n, n), case.dtype, grad=pass_ == "fwd+bwd")
    # forward 2n^3; backward dA = g B^T and dB = A^T g, 2n^3 each
    bench.run(
        lambda: fn(a, b),
        op="matmul",
        case=case,
        pass_=pass_,
        impl=impl,
        inputs=[a, b],
        flops={"fwd": 2, "fwd+bwd": 6}[pass_] * n**3,
        bytes=3 * n * n * a.element_size(),
        matmul_shape=(n, n, n),
        shape=f"({n},{n}) @ ({n},{n})",
    )


# (batch, in_features, out_features)
LINEAR_CASES = [
    hb.Case(
        "8192x4096x4096-bf16",
        "8192x4096 -> 4096",
        gpu=(8192, 4096, 4096),
        cpu=(64, 64, 32),
        dtype=torch.bfloat16,
        goal=hb.CUBLAS_90,
    ),
    hb.Case("blitz-fc1-n4096", "fc1 4096x400 -> 120", gpu=(4096, 400, 120), cpu=(8, 400, 120), precision="ieee"),
    hb.Case(
        "blitz-fc2-n4096", "fc2 4096x120 -> 84", gpu=(4096, 120, 84), cpu=(8, 120, 84), precision="ieee", smoke=False
    ),
    hb.Case("blitz-fc3-n4096", "fc3 4096x84 -> 10", gpu=(4096, 84, 10), cpu=(8, 84, 10), precision="ieee", smoke=False),
]


def _torch_linear_relu(x, w, b):
    return F.relu(F.linear(x, w, b))


@pytest.mark.parametrize(
    "case,name,pass_,impl",
    # fc3 has no relu in the blitz network
    hb.combos(
        LINEAR_CASES,
        ["linear", "linear_relu"],
        hb.PASSES,
        hb.IMPLS,
        keep=lambda case, name, p, i: not (name == "linear_relu" and case.id == "blitz-fc3-n4096"),
    ),
)
def test_linear(bench, case, name, pass_, impl):
    fused = name == "linear_relu"
    fn = bench.pick(impl, lambda: hb.load("kernels.matmul", name), _torch_linear_relu if fused else F.linear)
    m, k, n = bench.size(case)
    grad = pass_ == "fwd+bwd"
    x = bench.tensor((m, k), case.dtype, grad=grad)
    w = bench.tensor((n, k), case.dtype, grad=grad)
    b = bench.tensor((n,), case.dtype, grad=grad)
    e = x.element_size()
    bench.run(
        lambda: fn(x, w, b),
        op=name,
        case=case,
        pass_=pass_,
        impl=impl,
        inputs=[x, w, b],
        flops={"fwd": 2, "fwd+bwd": 6}[pass_] * m * n * k,
        # fwd: read x, W, write y; bwd: read g, x, W, write dx, dW
        bytes=(m * k + n * k + m * n) * e + ((2 * m * k + 2 * n * k + m * n) * e if grad else 0),
        matmul_shape=(m, n, k),
        shape=f"x{(m, k)} W{(n, k)}",
    )
