"""The SGD step with momentum (kernels.optim.SGD) against torch.optim.SGD (foreach, its CUDA
default): 64 Mi parameters in 16 tensors, and the blitz classifier's 62k parameters (launch-bound)."""

import pytest
import torch

from benchmarks import harness as hb

BLITZ_SHAPES = [(6, 3, 5, 5), (6,), (16, 6, 5, 5), (16,), (120, 400), (120,), (84, 120), (84,), (10, 84), (10,)]
CASES = [
    hb.Case("16x2e22", "16x2^22 params", gpu=[(2**22,)] * 16, cpu=[(1024,)] * 4),
    hb.Case("blitz", "blitz 62k params", gpu=BLITZ_SHAPES, cpu=BLITZ_SHAPES),
]


@pytest.mark.parametrize("impl", hb.IMPLS)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_sgd_step(bench, case, impl):
    cls = bench.pick(impl, lambda: hb.load("kernels.optim", "SGD"), torch.optim.SGD)
    params = [bench.tensor(shape).requires_grad_() for shape in bench.size(case)]
    for p in params:
        p.grad = torch.randn_like(p)
    opt = cls(params, lr=1e-3, momentum=0.9)
    total = sum(p.numel() for p in params)
    # read param, grad and momentum buffer, write param and buffer
    bench.run(
        lambda: opt.step(),
        op="sgd",
        case=case,
        pass_="step (momentum)",
        impl=impl,
        bytes=5 * total * params[0].element_size(),
        shape=f"{len(params)} tensors, {total} params",
    )
