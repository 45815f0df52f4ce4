"""The blitz classifier (kernels.blitz.net.BlitzNet) against the same network in torch.nn eager and
torch.compile: inference forward, and a full training step (forward, cross-entropy, backward,
SGD with momentum) at batch 4, 256 and 4096, fp32."""

import pytest
import torch
import torch.nn.functional as F

from benchmarks import harness as hb

TRAIN_GOAL = hb.speedup_goal(2, "torch")
CASES = [
    hb.Case("b4", "batch 4", gpu=4, cpu=2),
    hb.Case("b256", "batch 256", gpu=256, cpu=2, smoke=False, compile=True, goal=TRAIN_GOAL),
    hb.Case("b4096", "batch 4096", gpu=4096, cpu=2, smoke=False, compile=True, goal=TRAIN_GOAL),
]


def _models(bench, impl):
    """(model, loss function, optimizer class) for ``impl``, sharing initial weights."""
    torch_net = hb.load("kernels.blitz.net", "TorchBlitzNet")
    torch.manual_seed(0)
    reference = torch_net().to(bench.device)
    if impl == "ours":
        net = hb.load("kernels.blitz.net", "BlitzNet")().to(bench.device)
        net.load_state_dict(reference.state_dict())
        return net, hb.load("kernels.cross_entropy", "cross_entropy"), hb.load("kernels.optim", "SGD")
    model = bench.compiled(reference) if impl == "compile" else reference
    return model, F.cross_entropy, torch.optim.SGD


@pytest.mark.parametrize(
    "case,pass_,impl",
    # torch.compile: the training step at batch 256 and 4096
    hb.combos(
        CASES,
        ["fwd", "step"],
        [*hb.IMPLS, "compile"],
        keep=lambda case, pass_, impl: impl != "compile" or (case.compile and pass_ == "step"),
    ),
)
def test_blitznet(bench, case, pass_, impl):
    batch = bench.size(case)
    model, loss_fn, opt_cls = _models(bench, impl)
    x = bench.tensor((batch, 3, 32, 32))
    y = torch.randint(0, 10, (batch,), device=bench.device)
    if pass_ == "fwd":

        def call():
            with torch.no_grad():
                return model(x)

    else:
        opt = opt_cls(model.parameters(), lr=1e-3, momentum=0.9)

        def call():
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()

    bench.run(
        call,
        op="BlitzNet",
        case=case,
        pass_="train step" if pass_ == "step" else "fwd",
        impl=impl,
        items=batch,
        shape=f"x({batch},3,32,32)",
        goal=case.goal if pass_ == "step" else None,
    )
