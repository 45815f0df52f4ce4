"""BlitzNet under torch.compile and torch.export: our kernels are ``torch.library`` custom ops
(``torch.ops.blitz.*``), so dynamo traces the whole net into one graph (no graph break) and export
captures it.

Backend: inductor, chosen by measurement (torch 2.13, triton 3.9 under the interpreter, float64,
batch 4, 2 cores shared with other jobs): it works, and the first compiled step (dynamo, AOTAutograd,
inductor's lowering and a C++ build, plus the step itself) took 47 s against 36 s with aot_eager;
later steps took the same time under both (14 s, all of it in our Triton kernels: the net has no
torch arithmetic for inductor to fuse, so it calls our ops as opaque kernels, in eager's order), and
both reproduced eager's losses exactly. So inductor, the backend users get by default, is
affordable here. The 20-step comparison is marked slow (40 training steps under the interpreter);
the default run compares 3 steps.
"""

from __future__ import annotations

import pytest
import torch

from kernels import _runtime as rt
from kernels.blitz.net import BlitzNet
from kernels.functional import cross_entropy
from kernels.optim import SGD

#: See the module docstring for why inductor.
BACKEND = "inductor"
STEPS = 20
BATCH = 4
DTYPE = torch.float64


def _batches(n: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` small deterministic batches of (BATCH, 3, 32, 32) images and their labels."""
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        x = torch.randn(BATCH, 3, 32, 32, generator=gen, dtype=DTYPE).to(rt.device())
        y = torch.randint(0, 10, (BATCH,), generator=gen).to(rt.device())
        out.append((x, y))
    return out


def _net() -> BlitzNet:
    torch.manual_seed(0)
    return BlitzNet(device=rt.device(), dtype=DTYPE)


def _train(model: torch.nn.Module, forward, steps: int = STEPS) -> list[float]:
    """Per-step losses of ``steps`` SGD steps (our fused SGD) of ``forward`` (model or its compiled form)."""
    opt = SGD(model.parameters(), lr=0.05, momentum=0.9)
    batches = _batches()
    losses = []
    for step in range(steps):
        x, y = batches[step % len(batches)]
        opt.zero_grad()
        loss = cross_entropy(forward(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _assert_losses_match(compiled: list[float], eager: list[float]) -> None:
    for step, (c, e) in enumerate(zip(compiled, eager, strict=True)):
        assert abs(c - e) <= 1e-12 * abs(e), f"step {step}: compiled loss {c!r}, eager {e!r}"


class _RecordingBackend:
    """BACKEND, keeping every graph dynamo hands it (a graph break would make two)."""

    def __init__(self) -> None:
        self.graphs: list[torch.fx.GraphModule] = []

    def __call__(self, gm: torch.fx.GraphModule, example_inputs):
        self.graphs.append(gm)
        return torch._dynamo.lookup_backend(BACKEND)(gm, example_inputs)

    def targets(self) -> set[str]:
        return {str(n.target) for gm in self.graphs for n in gm.graph.nodes if n.op == "call_function"}


def _check_compiled_training(steps: int) -> None:
    """torch.compile(fullgraph=True) (a graph break raises) trains ``steps`` float64 steps with our
    SGD in one graph made of our ops, compiled once; every step's loss equals eager's to 1e-12
    relative."""
    torch._dynamo.reset()
    model, eager_model = _net(), _net()
    backend = _RecordingBackend()
    compiled = torch.compile(model, backend=backend, fullgraph=True)
    ours = _train(model, compiled, steps)
    assert len(backend.graphs) == 1, f"{len(backend.graphs)} graphs (a break or a recompilation)"
    expected = {"blitz.conv2d.default", "blitz.max_pool2d.default", "blitz.linear_relu.default", "blitz.linear.default"}
    assert expected <= backend.targets(), backend.targets()
    _assert_losses_match(ours, _train(eager_model, eager_model, steps))
    assert ours[-1] < ours[0]  # and it learns


@pytest.mark.long(seconds=28)  # measured under load on 2 cores
def test_compiled_blitznet_trains_like_eager():
    """A few steps (the default run); test_compiled_blitznet_trains_20_steps_like_eager runs 20."""
    _check_compiled_training(3)


@pytest.mark.slow
def test_compiled_blitznet_trains_20_steps_like_eager():
    """20 steps, compiled and eager: 40 training steps under the interpreter (4-15 s each here)."""
    _check_compiled_training(STEPS)


def test_export_inference_matches_eager():
    """torch.export of the net in eval mode; the exported program's output equals eager's."""
    model = _net().eval()
    x, _ = _batches(1)[0]
    with torch.no_grad():
        expected = model(x)
    program = torch.export.export(model, (x,))
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert "blitz.conv2d.default" in targets, targets
    with torch.no_grad():
        got = program.module()(x)
    assert torch.equal(got, expected)


def test_export_with_dynamic_batch():
    """The fakes work on symbolic sizes: one export serves every batch size."""
    model = _net().eval()
    x, _ = _batches(1)[0]
    batch = torch.export.Dim("batch", min=2, max=64)
    program = torch.export.export(model, (x,), dynamic_shapes={"x": {0: batch}})
    x3 = x[:3].clone()
    with torch.no_grad():
        assert torch.equal(program.module()(x3), model(x3))

