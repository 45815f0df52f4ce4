"""cat (kernels.cat) of two 8192x8192 fp32 tensors along either dim, ours against torch eager."""

import pytest
import torch

from benchmarks import harness as hb

CASES = [
    hb.Case("dim0", "2x8192^2 dim=0", gpu=(8192, 8192, 0), cpu=(64, 128, 0)),
    hb.Case("dim1", "2x8192^2 dim=1", gpu=(8192, 8192, 1), cpu=(64, 128, 1)),
]


@pytest.mark.parametrize("impl", hb.IMPLS)
@pytest.mark.parametrize("pass_", hb.PASSES)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_cat(bench, case, pass_, impl):
    fn = bench.pick(impl, lambda: hb.load("kernels.cat", "cat"), torch.cat)
    rows, cols, dim = bench.size(case)
    parts = [bench.tensor((rows, cols), grad=pass_ == "fwd+bwd") for _ in range(2)]
    half = parts[0].numel() * parts[0].element_size()
    # fwd: read both parts, write the result; the backward's slices can be views (torch's are),
    # so the compulsory traffic of fwd+bwd is the forward's
    bench.run(
        lambda: fn(parts, dim),
        op="cat",
        case=case,
        pass_=pass_,
        impl=impl,
        inputs=parts,
        bytes=4 * half,
        shape=f"2x{tuple(parts[0].shape)} dim={dim}",
    )
