"""relu forward and forward+backward: ours against torch eager, at 2^28 elements and the blitz shape."""

import pytest
import torch

from benchmarks import harness as hb

CASES = [
    hb.Case("2e28", "2^28", gpu=(2**28,), cpu=(4096,), goal=hb.COPY_BOUND),
    hb.Case("2e28-bf16", "2^28", gpu=(2**28,), cpu=(4096,), dtype=torch.bfloat16, goal=hb.COPY_BOUND),
    hb.Case("blitz-conv1-n4096", "4096x6x28x28", gpu=(4096, 6, 28, 28), cpu=(2, 6, 28, 28)),
]


@pytest.mark.parametrize("impl", hb.IMPLS)
@pytest.mark.parametrize("pass_", hb.PASSES)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_relu(bench, case, pass_, impl):
    fn = bench.pick(impl, lambda: hb.load("kernels.relu", "relu"), torch.relu)
    x = bench.tensor(bench.size(case), case.dtype, grad=pass_ == "fwd+bwd")
    nbytes = x.numel() * x.element_size()
    # fwd: read x, write y; bwd: read y and g, write dx
    bench.run(
        lambda: fn(x),
        op="relu",
        case=case,
        pass_=pass_,
        impl=impl,
        inputs=[x],
        bytes={"fwd": 2, "fwd+bwd": 5}[pass_] * nbytes,
        shape=str(tuple(x.shape)),
    )
