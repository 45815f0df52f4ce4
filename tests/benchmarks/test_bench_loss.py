"""cross_entropy and mse_loss (kernels.loss), ours against torch eager and (cross-entropy at
8192x8192) torch.compile.

Compulsory traffic: cross-entropy's forward reads the logits once; forward+backward can compute
the gradient in the loss's pass, so it reads the logits once and writes their gradient once
(DESIGN.md's 1514 GB/s for torch counts a third pass). mse_loss likewise: read input and target,
write the input's gradient.
"""

import pytest
import torch
import torch.nn.functional as F

from gradcheck import bench as gb

CE_CASES = [
    gb.Case("8192x8192", "8192x8192", gpu=(8192, 8192), cpu=(64, 300), compile=True),
    gb.Case("blitz-n4096", "4096x10", gpu=(4096, 10), cpu=(8, 10)),
]
CE_FWD_BWD_GOAL = gb.speedup_goal(3, "torch")


@pytest.mark.parametrize(
    "case,pass_,impl",
    gb.combos(
        CE_CASES, gb.PASSES, [*gb.IMPLS, "compile"], keep=lambda case, p, impl: impl != "compile" or case.compile
    ),
)
def test_cross_entropy(bench, case, pass_, impl):
    fn = bench.pick(impl, lambda: gb.load("kernels.loss", "cross_entropy"), F.cross_entropy)
    rows, classes = bench.size(case)
    logits = bench.tensor((rows, classes), case.dtype, grad=pass_ == "fwd+bwd")
    target = torch.randint(0, classes, (rows,), device=bench.device)
    unit = logits.numel() * logits.element_size()
    goal = CE_FWD_BWD_GOAL if (pass_ == "fwd+bwd" and case.compile) else None
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


MSE_CASE = gb.Case("2e28", "2^28", gpu=(2**28,), cpu=(4096,))


@pytest.mark.parametrize("impl", gb.IMPLS)
@pytest.mark.parametrize("pass_", gb.PASSES)
def test_mse_loss(bench, pass_, impl):
    fn = bench.pick(impl, lambda: gb.load("kernels.loss", "mse_loss"), F.mse_loss)
    x = bench.tensor(bench.size(MSE_CASE), grad=pass_ == "fwd+bwd")
    y = bench.tensor(bench.size(MSE_CASE))
    unit = x.numel() * x.element_size()
    bench.run(
        lambda: fn(x, y),
        op="mse_loss",
        case=MSE_CASE,
        pass_=pass_,
        impl=impl,
        inputs=[x],
        bytes={"fwd": 2, "fwd+bwd": 3}[pass_] * unit,
        shape=str(tuple(x.shape)),
    )
