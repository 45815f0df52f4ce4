"""cross_entropy (kernels.cross_entropy), ours against torch eager and (at 8192x8192) torch.compile.

Compulsory traffic: the forward reads the logits once; forward+backward can compute the gradient
in the loss's pass, so it reads the logits once and writes their gradient once (DESIGN.md's
1514 GB/s for torch counts a third pass).
"""

import pytest
import torch
import torch.nn.functional as F

from benchmarks import harness as hb

CASES = [
    hb.Case("8192x8192", "8192x8192", gpu=(8192, 8192), cpu=(64, 300), compile=True),
    hb.Case("blitz-n4096", "4096x10", gpu=(4096, 10), cpu=(8, 10)),
]
FWD_BWD_GOAL = hb.speedup_goal(3, "torch")


@pytest.mark.parametrize(
    "case,pass_,impl",
    hb.combos(CASES, hb.PASSES, [*hb.IMPLS, "compile"], keep=lambda case, p, impl: impl != "compile" or case.compile),
)
def test_cross_entropy(bench, case, pass_, impl):
    fn = bench.pick(impl, lambda: hb.load("kernels.cross_entropy", "cross_entropy"), F.cross_entropy)
    rows, classes = bench.size(case)
    logits = bench.tensor((rows, classes), case.dtype, grad=pass_ == "fwd+bwd")
    target = torch.randint(0, classes, (rows,), device=bench.device)
    unit = logits.numel() * logits.element_size()
    goal = FWD_BWD_GOAL if (pass_ == "fwd+bwd" and case.compile) else None
    bench.run(
        lambda: fn(logits, target),
        op="cross_entropy",
        case=case,
        pass_=pass_,
        impl=impl,
        inputs=[logits],
        bytes={"fwd": 1, "fwd+bwd": 2}[pass_] * unit + target.numel() * target.element_size(),
        shape=f"logits {tuple(logits.shape)}",
        goal=goal,
    )
