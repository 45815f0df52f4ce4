"""embedding (kernels.embedding), ours against torch eager: 16384 lookups of rows of 4096 in a
Llama-sized table of 32000 rows (GPU), with repeated indices (uniform draws over the table).

Compulsory traffic: the forward reads the looked-up rows and writes the output (plus the indices);
the backward reads grad_output and writes the whole weight gradient (V x D), zeros included.
"""

import pytest
import torch
import torch.nn.functional as F

from benchmarks import harness as hb

CASES = [
    hb.Case("16384x4096-v32000", "16384x4096 V=32000", gpu=(16384, 4096, 32000), cpu=(64, 48, 100)),
    hb.Case(
        "16384x4096-v32000-bf16", "16384x4096 V=32000", gpu=(16384, 4096, 32000), cpu=(64, 48, 100),
        dtype=torch.bfloat16, smoke=False,
    ),
]  # fmt: skip


@pytest.mark.parametrize("case,pass_,impl", hb.combos(CASES, hb.PASSES, hb.IMPLS))
def test_embedding(bench, case, pass_, impl):
    fn = bench.pick(impl, lambda: hb.load("kernels.embedding", "embedding"), F.embedding)
    n, d, vocab = bench.size(case)
    weight = bench.tensor((vocab, d), case.dtype, grad=pass_ == "fwd+bwd")
    indices = torch.randint(0, vocab, (n,), device=bench.device)
    row = d * weight.element_size()
    fwd = 2 * n * row + indices.numel() * indices.element_size()
    bench.run(
        lambda: fn(indices, weight),
        op="embedding",
        case=case,
        pass_=pass_,
        impl=impl,
        inputs=[weight],
        bytes={"fwd": fwd, "fwd+bwd": fwd + n * row + vocab * row}[pass_],
        shape=f"indices ({n},), weight {tuple(weight.shape)}",
    )
