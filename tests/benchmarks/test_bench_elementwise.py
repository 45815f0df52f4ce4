"""Elementwise ops (kernels.elementwise), forward and forward+backward, ours against torch eager at
2^28 fp32 elements (1 GiB per tensor), plus a broadcast bias add."""

import pytest
import torch

from benchmarks import harness as hb

N = 2**28
# name -> (torch function, arity, positive inputs (log/sqrt/div), bytes moved in units of one
# tensor: forward, backward). Backward reads g and whatever the rule needs, writes one grad per input.
OPS = {
    "add": (torch.add, 2, False, 3, 3),  # bwd: read g, write da, db
    "sub": (torch.sub, 2, False, 3, 3),
    "mul": (torch.mul, 2, False, 3, 5),  # bwd: read g, a, b, write da, db
    "div": (torch.div, 2, True, 3, 5),
    "neg": (torch.neg, 1, False, 2, 2),  # bwd: read g, write dx
    "exp": (torch.exp, 1, False, 2, 3),  # bwd: read g and y (or x), write dx
    "log": (torch.log, 1, True, 2, 3),
    "sqrt": (torch.sqrt, 1, True, 2, 3),
    "sigmoid": (torch.sigmoid, 1, False, 2, 3),
    "tanh": (torch.tanh, 1, False, 2, 3),
    "pow": (lambda x: torch.pow(x, 2.0), 1, True, 2, 3),
}

CASE = hb.Case("2e28", "2^28", gpu=(N,), cpu=(4096,), goal=hb.COPY_BOUND)


def _ours(name):
    if name == "pow":
        pow_ = hb.load("kernels.elementwise", "pow")
        return lambda x: pow_(x, 2.0)
    return hb.load("kernels.elementwise", name)


@pytest.mark.parametrize("impl", hb.IMPLS)
@pytest.mark.parametrize("pass_", hb.PASSES)
@pytest.mark.parametrize("name", list(OPS))
def test_elementwise(bench, name, pass_, impl):
    torch_fn, arity, positive, fwd_units, bwd_units = OPS[name]
    fn = bench.pick(impl, lambda: _ours(name), torch_fn)
    args = [bench.tensor(bench.size(CASE), grad=pass_ == "fwd+bwd", positive=positive) for _ in range(arity)]
    unit = args[0].numel() * args[0].element_size()
    units = fwd_units + (bwd_units if pass_ == "fwd+bwd" else 0)
    bench.run(
        lambda: fn(*args),
        op=name,
        case=CASE,
        pass_=pass_,
        impl=impl,
        inputs=args,
        bytes=units * unit,
        shape=str(tuple(args[0].shape)),
    )


BIAS = hb.Case("8192x32768+row", "8192x32768 + row", gpu=(8192, 32768), cpu=(64, 256))


@pytest.mark.parametrize("impl", hb.IMPLS)
@pytest.mark.parametrize("pass_", hb.PASSES)
def test_add_broadcast(bench, pass_, impl):
    """x + bias over rows: the backward of the bias is a column sum (a reduction over the broadcast dim)."""
    fn = bench.pick(impl, lambda: hb.load("kernels.elementwise", "add"), torch.add)
    rows, cols = bench.size(BIAS)
    x = bench.tensor((rows, cols), grad=pass_ == "fwd+bwd")
    b = bench.tensor((cols,), grad=pass_ == "fwd+bwd")
    unit = x.numel() * x.element_size()
    # fwd: read x, write y; bwd: read g, write dx (db is a reduction of g: no extra full pass)
    bench.run(
        lambda: fn(x, b),
        op="add (broadcast)",
        case=BIAS,
        pass_=pass_,
        impl=impl,
        inputs=[x, b],
        bytes={"fwd": 2, "fwd+bwd": 4}[pass_] * unit,
        shape=f"{tuple(x.shape)} + {tuple(b.shape)}",
        goal=hb.COPY_BOUND,
    )
