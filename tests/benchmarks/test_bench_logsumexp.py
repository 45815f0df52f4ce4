"""logsumexp (kernels.logsumexp) over the rows of an LLM head's logits, 16384 x 32000 in bf16 (a
7B-class vocabulary), ours against torch eager.

Compulsory traffic: the forward reads x and writes one value per row; the backward reads x, the
row results and their gradients and writes x's gradient (g * exp(x - lse)): 3 passes over x in all.
"""

import pytest
import torch

from benchmarks import harness as hb

CASE = hb.Case(
    "16384x32000-bf16", "16384x32000", gpu=(16384, 32000), cpu=(16, 300), dtype=torch.bfloat16, goal=hb.COPY_BOUND
)


@pytest.mark.parametrize("impl", hb.IMPLS)
@pytest.mark.parametrize("pass_", hb.PASSES)
def test_logsumexp(bench, pass_, impl):
    fn = bench.pick(impl, lambda: hb.load("kernels.logsumexp", "logsumexp"), torch.logsumexp)
    x = bench.tensor(bench.size(CASE), CASE.dtype, grad=pass_ == "fwd+bwd")
    unit = x.numel() * x.element_size()
    bench.run(
        lambda: fn(x, -1),
        op="logsumexp",
        case=CASE,
        pass_=pass_,
        impl=impl,
        inputs=[x],
        bytes={"fwd": 1, "fwd+bwd": 3}[pass_] * unit,
        shape=str(tuple(x.shape)),
    )
