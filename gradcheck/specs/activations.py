"""Catalog entries for the activations: gelu (exact and tanh), silu, and the gated swiglu and geglu."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import strategies as st

import reference.activations
from gradcheck import strategies as gs
from gradcheck.ops import OpSpec
from gradcheck.specs._common import MAX_NUMEL

__all__ = ["SPECS", "geglu", "gelu", "swiglu"]

#: Activation scales: unit pre-activations mostly; 4 reaches both saturated tails; 30 the outliers of
#: LLM activations (|x| near 100, where x^3 in the tanh form overflows fp16 if computed there).
_SCALES = st.sampled_from((1.0, 1.0, 4.0, 30.0))
_APPROXIMATE = st.sampled_from(("none", "tanh"))


def _values(shape):
    return gs.tensors(shape, elements=st.sampled_from(("normal", "normal", "uniform")), scale=_SCALES)


@st.composite
def _gelu_inputs(draw, dtype: torch.dtype):
    """Any shape (0-d to 4-d, a dim now and then past 2048) and either approximation."""
    x = draw(_values(gs.shapes(min_dims=0, max_dims=4, max_numel=MAX_NUMEL)))
    return x, draw(_APPROXIMATE)


def _silu_inputs(dtype: torch.dtype):
    return _values(gs.shapes(min_dims=0, max_dims=4, max_numel=MAX_NUMEL)).map(lambda x: (x,))


@st.composite
def _gated_inputs(draw, dtype: torch.dtype):
    """x of shape (*lead, 2H): H usually small, sometimes not a power of 2 (17, 127, 1000) or past
    2048; 0 to 2 leading dims whose row count crosses block multiples (17, 33, 65, 129, 257)."""
    h = draw(gs.sides(min_side=1, max_side=24, awkward=True, large=True))
    rows_cap = max(1, MAX_NUMEL // (2 * h))
    tails = [r for r in (17, 33, 65, 129, 257) if r <= rows_cap]
    rows = draw(st.one_of(st.integers(1, min(rows_cap, 8)), *([st.sampled_from(tails)] if tails else [])))
    if rows == 1:
        lead: tuple[int, ...] = draw(st.sampled_from([(), (1,)]))
    elif draw(st.booleans()):
        lead = (rows,)
    else:
        first = draw(st.sampled_from([f for f in (1, 2, 3) if rows % f == 0]))
        lead = (first, rows // first)
    return (draw(_values((*lead, 2 * h))),)


def gelu(input: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """``F.gelu`` with ``approximate`` positional (torch's is keyword-only)."""
    return F.gelu(input, approximate=approximate)


def swiglu(input: torch.Tensor) -> torch.Tensor:
    """silu(a) * b for input = [a, b] split in halves along the last dim, in torch ops."""
    h = input.shape[-1] // 2
    return F.silu(input[..., :h]) * input[..., h:]


def geglu(input: torch.Tensor) -> torch.Tensor:
    """gelu(a, approximate='tanh') * b for input = [a, b] split in halves along the last dim."""
    h = input.shape[-1] // 2
    return F.gelu(input[..., :h], approximate="tanh") * input[..., h:]


SPECS = [
    OpSpec(
        name="gelu",
        reference=reference.activations.gelu,
        reference_vjp=reference.activations.gelu_vjp,
        inputs=_gelu_inputs,
        ulps=4,  # erf (libdevice erff: 2 ulps) or exp and a division, then products
        torch_fn=gelu,
        doc="x * Phi(x) (approximate='none') or 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) ('tanh'); "
        "grad Phi + x phi, or its tanh-form derivative",
        tags=("activation",),
    ),
    OpSpec(
        name="silu",
        reference=reference.activations.silu,
        reference_vjp=reference.activations.silu_vjp,
        inputs=_silu_inputs,
        ulps=4,  # exp and a division
        torch_fn=F.silu,
        doc="x * sigmoid(x); grad s (1 + x (1 - s))",
        tags=("activation",),
    ),
    OpSpec(
        name="swiglu",
        reference=reference.activations.swiglu,
        reference_vjp=reference.activations.swiglu_vjp,
        inputs=_gated_inputs,
        ulps=4,  # exp and a division, then two products
        torch_fn=swiglu,
        doc="silu(a) * b for x = (a, b), the halves of the last dim (2H -> H, Llama's MLP); "
        "grads g b silu'(a) and g silu(a)",
        tags=("activation", "gated"),
    ),
    OpSpec(
        name="geglu",
        reference=reference.activations.geglu,
        reference_vjp=reference.activations.geglu_vjp,
        inputs=_gated_inputs,
        ulps=4,  # exp and a division (the tanh form), then products
        torch_fn=geglu,
        doc="gelu_tanh(a) * b for x = (a, b), the halves of the last dim (2H -> H; the tanh approximation, as "
        "Gemma and Liger); grads g b gelu_tanh'(a) and g gelu_tanh(a)",
        tags=("activation", "gated"),
    ),
]
