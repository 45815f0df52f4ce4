"""layer_norm and rms_norm (kernels.norms) over the rows of a 7B-class model layer (hidden 4096,
16384 rows), ours against torch eager, forward and forward+backward (dx, dweight and dbias)."""

import pytest
import torch
import torch.nn.functional as F

from benchmarks import harness as hb

CASES = [
    hb.Case(
        "16384x4096-bf16", "16384x4096", gpu=(16384, 4096), cpu=(33, 100), dtype=torch.bfloat16, goal=hb.COPY_BOUND
    ),
    hb.Case("16384x4096", "16384x4096", gpu=(16384, 4096), cpu=(33, 100), goal=hb.COPY_BOUND, smoke=False),
]


def _torch_fn(name):
    if name == "layer_norm":
        return lambda x, w, b: F.layer_norm(x, x.shape[-1:], w, b, 1e-5)
    return lambda x, w, b: F.rms_norm(x, x.shape[-1:], w, 1e-6)


def _ours(name):
    def load():
        fn = hb.load("kernels.norms", name)
        if name == "layer_norm":
            return lambda x, w, b: fn(x, x.shape[-1:], w, b, 1e-5)
        return lambda x, w, b: fn(x, x.shape[-1:], w, 1e-6)

    return load


@pytest.mark.parametrize("case,name,pass_,impl", hb.combos(CASES, ["layer_norm", "rms_norm"], hb.PASSES, hb.IMPLS))
def test_norms(bench, case, name, pass_, impl):
    fn = bench.pick(impl, _ours(name), _torch_fn(name))
    rows, hidden = bench.size(case)
    grad = pass_ == "fwd+bwd"
    x = bench.tensor((rows, hidden), case.dtype, grad=grad)
    w = bench.tensor((hidden,), case.dtype, grad=grad)
    b = bench.tensor((hidden,), case.dtype, grad=grad and name == "layer_norm")
    unit = x.numel() * x.element_size()
    # fwd: read x, write y; fwd+bwd: that, then read x and g, write dx (weights and partials are small)
    bench.run(
        lambda: fn(x, w, b),
        op=name,
        case=case,
        pass_=pass_,
        impl=impl,
        inputs=[x, w, b] if name == "layer_norm" else [x, w],
        bytes={"fwd": 2, "fwd+bwd": 5}[pass_] * unit,
        shape=str(tuple(x.shape)),
    )
