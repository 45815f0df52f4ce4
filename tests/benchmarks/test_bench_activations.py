"""gelu (exact and tanh), silu, swiglu and geglu (kernels.activations), ours against torch eager,
on the rows of a 7B-class MLP: 16384 x 4096 (the gated ops read 16384 x 8192 and write 16384 x 4096).

Compulsory traffic: forward reads the input and writes the output; forward+backward also reads
the input and grad_output again and writes grad_input (the backward recomputes the activation).
"""

import pytest
import torch
import torch.nn.functional as F

from benchmarks import harness as hb
from gradcheck.specs.activations import geglu as torch_geglu
from gradcheck.specs.activations import swiglu as torch_swiglu

CASES = [
    hb.Case("16384x4096", "16384x4096", gpu=(16384, 4096), cpu=(16, 96), goal=hb.COPY_BOUND),
    hb.Case(
        "16384x4096-bf16", "16384x4096", gpu=(16384, 4096), cpu=(16, 96), dtype=torch.bfloat16,
        goal=hb.COPY_BOUND, smoke=False,
    ),
]  # fmt: skip


def _ours_gelu_tanh():
    gelu = hb.load("kernels.activations", "gelu")
    return lambda x: gelu(x, "tanh")


#: name -> (loader of ours, torch's, input columns per output column)
OPS = {
    "gelu": (lambda: hb.load("kernels.activations", "gelu"), F.gelu, 1),
    "gelu_tanh": (_ours_gelu_tanh, lambda x: F.gelu(x, approximate="tanh"), 1),
    "silu": (lambda: hb.load("kernels.activations", "silu"), F.silu, 1),
    "swiglu": (lambda: hb.load("kernels.activations", "swiglu"), torch_swiglu, 2),
    "geglu": (lambda: hb.load("kernels.activations", "geglu"), torch_geglu, 2),
}


@pytest.mark.parametrize("case,name,pass_,impl", hb.combos(CASES, list(OPS), hb.PASSES, hb.IMPLS))
def test_activations(bench, case, name, pass_, impl):
    ours, theirs, widen = OPS[name]
    fn = bench.pick(impl, ours, theirs)
    rows, cols = bench.size(case)
    x = bench.tensor((rows, cols * widen), case.dtype, grad=pass_ == "fwd+bwd")
    unit = rows * cols * x.element_size()  # one output-sized tensor
    # fwd: read x (widen units), write y (1); bwd: read x again (widen) and g (1), write dx (widen)
    traffic = {"fwd": widen + 1, "fwd+bwd": (widen + 1) + (2 * widen + 1)}[pass_]
    bench.run(
        lambda: fn(x),
        op=name,
        case=case,
        pass_=pass_,
        impl=impl,
        inputs=[x],
        bytes=traffic * unit,
        shape=str(tuple(x.shape)),
    )
