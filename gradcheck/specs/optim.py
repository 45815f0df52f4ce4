"""Catalog entry for the SGD step (forward only: an optimizer update is not differentiated)."""

from __future__ import annotations

import torch
from hypothesis import strategies as st

import reference.optim
from gradcheck import strategies as gs
from gradcheck.ops import OpSpec

__all__ = ["SPECS"]


def _reference(param, grad, buf, lr, momentum, dampening, weight_decay, nesterov, maximize, first_step):
    new_p, new_b = reference.optim.sgd_step(
        param, grad, buf, lr, momentum, dampening, weight_decay, nesterov, maximize, first_step
    )
    return new_p if new_b is None else (new_p, new_b)


def _torch_sgd(param, grad, buf, lr, momentum, dampening, weight_decay, nesterov, maximize, first_step):
    """The same step through torch.optim.SGD (for benchmarks): a fresh optimizer on a copy."""
    p = param.detach().clone().requires_grad_(True)
    p.grad = grad.detach().clone()
    opt = torch.optim.SGD([p], lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                          nesterov=nesterov, maximize=maximize)
    if momentum != 0 and not first_step:
        opt.state[p]["momentum_buffer"] = buf.detach().clone()
    opt.step()
    new_p = p.detach()
    return new_p if momentum == 0 else (new_p, opt.state[p]["momentum_buffer"])


@st.composite
def _inputs(draw, dtype: torch.dtype):
    shape = draw(gs.shapes(max_numel=1 << 13))
    param = draw(gs.tensors(shape))
    grad = draw(gs.tensors(shape))
    buf = draw(gs.tensors(shape))
    momentum = draw(st.sampled_from((0.0, 0.5, 0.9)))
    nesterov = momentum != 0 and draw(st.booleans())
    dampening = 0.0 if nesterov else draw(st.sampled_from((0.0, 0.1)))
    return (
        param,
        grad,
        buf,
        draw(st.sampled_from((0.001, 0.01, 0.1))),
        momentum,
        dampening,
        draw(st.sampled_from((0.0, 1e-4, 0.05))),
        nesterov,
        draw(st.booleans()),
        draw(st.booleans()),
    )


SPECS = [
    OpSpec(
        name="sgd",
        reference=_reference,
        reference_vjp=None,
        inputs=_inputs,
        differentiable=False,
        torch_fn=_torch_sgd,
        doc="one torch.optim.SGD step (lr, momentum, dampening, weight_decay, nesterov, maximize) for one parameter",
    )
]
