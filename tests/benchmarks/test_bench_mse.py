"""mse_loss (kernels.mse), ours against torch eager at 2^28 elements.

Compulsory traffic: the forward reads input and target; forward+backward reads them and writes
the input's gradient.
"""

import pytest
import torch.nn.functional as F

from benchmarks import harness as hb

CASE = hb.Case("2e28", "2^28", gpu=(2**28,), cpu=(4096,))


@pytest.mark.parametrize("impl", hb.IMPLS)
@pytest.mark.parametrize("pass_", hb.PASSES)
def test_mse_loss(bench, pass_, impl):
    fn = bench.pick(impl, lambda: hb.load("kernels.mse", "mse_loss"), F.mse_loss)
    x = bench.tensor(bench.size(CASE), grad=pass_ == "fwd+bwd")
    y = bench.tensor(bench.size(CASE))
    unit = x.numel() * x.element_size()
    bench.run(
        lambda: fn(x, y),
        op="mse_loss",
        case=CASE,
        pass_=pass_,
        impl=impl,
        inputs=[x],
        bytes={"fwd": 2, "fwd+bwd": 3}[pass_] * unit,
        shape=str(tuple(x.shape)),
    )
