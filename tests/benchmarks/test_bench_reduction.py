"""Reductions (kernels.reduction): sum, mean and amax, ours against torch eager at 2^28 fp32 elements."""

import pytest
import torch

from benchmarks import harness as hb

SQUARE = (16384, 16384)  # 2^28 elements, 1 GiB of fp32
# id -> (our function name, torch function, dim, table label)
CASES = {
    "sum-all": ("sum", torch.sum, None, "2^28 -> scalar"),
    "sum-rows": ("sum", torch.sum, 1, "16384^2 dim=1"),
    "sum-cols": ("sum", torch.sum, 0, "16384^2 dim=0"),
    "mean-rows": ("mean", torch.mean, 1, "16384^2 dim=1"),
    "amax-rows": ("amax", torch.amax, 1, "16384^2 dim=1"),
}


@pytest.mark.parametrize("impl", hb.IMPLS)
@pytest.mark.parametrize("pass_", hb.PASSES)
@pytest.mark.parametrize("cid", list(CASES))
def test_reduction(bench, cid, pass_, impl):
    name, torch_fn, dim, label = CASES[cid]
    case = hb.Case(cid, label, gpu=SQUARE, cpu=(8, 64), goal=hb.COPY_BOUND)  # amax is slow interpreted
    fn = bench.pick(impl, lambda: hb.load("kernels.reduction", name), torch_fn)
    shape = bench.size(case)
    if dim is None:
        shape = (shape[0] * shape[1],)
    x = bench.tensor(shape, grad=pass_ == "fwd+bwd")
    full = x.numel() * x.element_size()
    out = full // shape[dim] if dim is not None else x.element_size()
    # fwd: read x, write the result; bwd: read g (the result's size) and write dx (full);
    # amax's backward also reads x to find the winners
    bwd = out + full + (full if name == "amax" else 0)
    call = (lambda: fn(x)) if dim is None else (lambda: fn(x, dim))
    bench.run(
        call,
        op=name,
        case=case,
        pass_=pass_,
        impl=impl,
        inputs=[x],
        bytes=full + out + (bwd if pass_ == "fwd+bwd" else 0),
        shape=str(tuple(x.shape)),
    )
