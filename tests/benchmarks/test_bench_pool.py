"""max_pool2d 2x2 stride 2 (kernels.pool), ours against torch eager: a 1 GiB NCHW tensor and the
blitz classifier's two pools at batch 4096."""

import pytest
import torch.nn.functional as F

from benchmarks import harness as hb

CASES = [
    hb.Case("256x64x128x128", "256x64x128x128", gpu=(256, 64, 128, 128), cpu=(2, 4, 16, 16), goal=hb.COPY_BOUND),
    hb.Case("blitz-pool1-n4096", "pool1 4096x6x28x28", gpu=(4096, 6, 28, 28), cpu=(2, 6, 28, 28), smoke=False),
    hb.Case("blitz-pool2-n4096", "pool2 4096x16x10x10", gpu=(4096, 16, 10, 10), cpu=(2, 16, 10, 10)),
]


@pytest.mark.parametrize("impl", hb.IMPLS)
@pytest.mark.parametrize("pass_", hb.PASSES)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_max_pool2d(bench, case, pass_, impl):
    fn = bench.pick(impl, lambda: hb.load("kernels.pool", "max_pool2d"), F.max_pool2d)
    x = bench.tensor(bench.size(case), case.dtype, grad=pass_ == "fwd+bwd")
    full = x.numel() * x.element_size()
    # fwd: read x, write y (a quarter); bwd: read g (a quarter) and where each max was, write dx
    bench.run(
        lambda: fn(x, 2, 2),
        op="max_pool2d",
        case=case,
        pass_=pass_,
        impl=impl,
        inputs=[x],
        bytes=int({"fwd": 1.25, "fwd+bwd": 2.5}[pass_] * full),
        shape=str(tuple(x.shape)),
    )
