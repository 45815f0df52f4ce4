"""softmax and log_softmax (kernels.softmax) over rows of 8192x8192, ours against torch eager and
(softmax in fp32) torch.compile."""

import pytest
import torch
import torch.nn.functional as F

from benchmarks import harness as hb

CASES = [
    hb.Case("8192x8192", "8192x8192", gpu=(8192, 8192), cpu=(64, 300), goal=hb.COPY_BOUND, compile=True),
    hb.Case(
        "8192x8192-bf16",
        "8192x8192",
        gpu=(8192, 8192),
        cpu=(64, 300),
        dtype=torch.bfloat16,
        goal=hb.COPY_BOUND,
        smoke=False,
    ),
]


@pytest.mark.parametrize(
    "case,name,pass_,impl",
    # torch.compile: softmax at fp32 only (each costs a compile)
    hb.combos(
        CASES,
        ["softmax", "log_softmax"],
        hb.PASSES,
        [*hb.IMPLS, "compile"],
        keep=lambda case, name, pass_, impl: impl != "compile" or (case.compile and name == "softmax"),
    ),
)
def test_softmax(bench, case, name, pass_, impl):
    torch_fn = getattr(F, name)
    fn = bench.pick(impl, lambda: hb.load("kernels.softmax", name), torch_fn)
    x = bench.tensor(bench.size(case), case.dtype, grad=pass_ == "fwd+bwd")
    unit = x.numel() * x.element_size()
    # fwd: read x, write y; bwd: read y and g, write dx
    bench.run(
        lambda: fn(x, -1),
        op=name,
        case=case,
        pass_=pass_,
        impl=impl,
        inputs=[x],
        bytes={"fwd": 2, "fwd+bwd": 5}[pass_] * unit,
        shape=str(tuple(x.shape)),
    )
