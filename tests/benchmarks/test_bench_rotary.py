"""rotary_embedding (kernels.rotary), ours against torch eager (the catalog's torch reading of the op:
x * cos + rotate_half(x) * sin) on a 7B-class attention layer's q: B=8, H=32, T=4096, D=128, bf16.

Compulsory traffic: the forward reads x and both (T, D) tables and writes the output; forward+backward
adds reading grad_output and the tables and writing x's gradient. The tables are constants (a model's
buffers), so they get no gradient here, as in training.
"""

import numpy as np
import pytest
import torch

from benchmarks import harness as hb
from gradcheck.specs.rotary import rotary_embedding as torch_rotary
from gradcheck.strategies import rotary_tables

CASE = hb.Case(
    "b8h32t4096d128",
    "8x32x4096x128",
    gpu=(8, 32, 4096, 128),
    cpu=(1, 2, 17, 6),
    dtype=torch.bfloat16,
    goal=hb.COPY_BOUND,
)


@pytest.mark.parametrize("impl", hb.IMPLS)
@pytest.mark.parametrize("pass_", hb.PASSES)
def test_rotary_embedding(bench, pass_, impl):
    fn = bench.pick(impl, lambda: hb.load("kernels.rotary", "rotary_embedding"), torch_rotary)
    b, h, t, d = bench.size(CASE)
    x = bench.tensor((b, h, t, d), CASE.dtype, grad=pass_ == "fwd+bwd")
    cos, sin = (torch.from_numpy(a).to(x.device, CASE.dtype) for a in rotary_tables(np.arange(t), d))
    unit, table = x.numel() * x.element_size(), cos.numel() * cos.element_size()
    bench.run(
        lambda: fn(x, cos, sin),
        op="rotary_embedding",
        case=CASE,
        pass_=pass_,
        impl=impl,
        inputs=[x],
        bytes={"fwd": 2 * unit + 2 * table, "fwd+bwd": 4 * unit + 4 * table}[pass_],
        shape=str(tuple(x.shape)),
    )
