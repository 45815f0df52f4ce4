"""Catalog entries for the elementwise ops: add, sub, mul, div (broadcasting), neg, exp, log, sqrt,
sigmoid, tanh and pow."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import strategies as st

import reference.elementwise
from gradcheck import strategies as gs
from gradcheck.ops import OpSpec
from gradcheck.specs._common import MAX_NUMEL, VALUES

__all__ = ["SPECS"]


# ---------------------------------------------------------------------------------------------
# binary ops with broadcasting
# ---------------------------------------------------------------------------------------------


@st.composite
def _pair(draw, dtype: torch.dtype, *, divisor: bool = False):
    """Two broadcastable tensors (dims dropped on the left or set to 1 on either side); for div the
    divisor is kept away from 0 (|b| in [0.1, 10], either sign)."""
    a_shape, b_shape = draw(gs.broadcastable_shapes(max_dims=4, max_side=8, max_numel=MAX_NUMEL))
    a = draw(gs.tensors(a_shape, elements=VALUES))
    if not divisor:
        return a, draw(gs.tensors(b_shape, elements=VALUES))
    b = draw(gs.tensors(b_shape, elements="positive"))
    return a, (b if draw(st.booleans()) else -b)


def _div_pair(dtype: torch.dtype):
    return _pair(dtype, divisor=True)


def _broadcast_depth(a, b) -> int:
    """The backward sums grad_output over the dims an operand was broadcast along: the largest
    such sum (numel of the result over numel of the operand)."""
    n = math.prod(np.broadcast_shapes(a.shape, b.shape))
    return max(n // max(a.size, 1), n // max(b.size, 1), 1)


# ---------------------------------------------------------------------------------------------
# unary ops
# ---------------------------------------------------------------------------------------------


def _unary(elements, scale=1.0):
    def inputs(dtype: torch.dtype):
        shape = gs.shapes(min_dims=0, max_dims=4, max_numel=MAX_NUMEL)
        return gs.tensors(shape, elements=elements, scale=scale).map(lambda x: (x,))

    return inputs


def _exp_inputs(dtype: torch.dtype):
    """Normal values of scale 1 or 3; for fp16 within [-8, 8]: exp(8) * |g| stays below fp16's
    65504, so the gradient is finite (past that both torch and we give inf, and a directional
    finite difference cannot compare an inf)."""
    limit = 8.0 if dtype == torch.float16 else None
    shape = gs.shapes(min_dims=0, max_dims=4, max_numel=MAX_NUMEL)
    x = gs.tensors(shape, elements="normal", scale=st.sampled_from((1.0, 3.0)),
                   min_value=-limit if limit else None, max_value=limit)
    return x.map(lambda x: (x,))


#: Exponents: torch's special cases (0, 1, 2, 3, 0.5, -1) and general ones, integer and not.
_EXPONENTS = (2.0, 2.0, 3.0, 0.5, -1.0, 0.0, 1.0, 4.0, 5.0, -2.0, 1.5, -0.5, 2.5, 1.0 / 3.0)


@st.composite
def _pow_inputs(draw, dtype: torch.dtype):
    """A tensor and an exponent; the base is positive (in [0.1, 10]) unless the exponent is a
    non-negative integer (no NaN from a negative base, no pole at 0)."""
    p = draw(st.sampled_from(_EXPONENTS))
    shape = draw(gs.shapes(min_dims=0, max_dims=4, max_numel=MAX_NUMEL))
    whole = p >= 0 and float(p).is_integer()
    x = draw(gs.tensors(shape, elements=st.sampled_from(("normal", "uniform")) if whole else "positive"))
    return x, p


# ---------------------------------------------------------------------------------------------
# the catalog
# ---------------------------------------------------------------------------------------------


def _rounded_products(vjp):
    """``vjp_terms`` for a VJP whose terms are products (mul's g*b, div's g/b): the VJP on absolute
    values, declared as terms stored at the dtype. Composed eager code (torch's own autograd: g*b
    at the tensor's dtype, then ``sum_to_size``) rounds each product before the broadcast sum, an
    error of up to u_out * sum|terms| that the fp32-accumulation row alone does not cover
    (measured: torch.mul's bf16 gradient of a broadcast operand, 4x over it at a cancelling sum)."""

    def terms(*arrays):
        return vjp(*(np.abs(a) if isinstance(a, np.ndarray) else a for a in arrays))

    return terms


def _binary_spec(name: str, doc: str, inputs=_pair, *, products: bool = False) -> OpSpec:
    vjp = getattr(reference.elementwise, f"{name}_vjp")
    return OpSpec(
        name=name,
        reference=getattr(reference.elementwise, name),
        reference_vjp=vjp,
        inputs=inputs,
        depth=_broadcast_depth,
        # the op on |a|, |b| (and the VJP on |g| too) bounds the sum of |terms| of each result:
        # exactly for add, sub, mul; for div, |a| / |b| and sum |g a / b^2| are the same bound
        multilinear=True,
        vjp_terms=_rounded_products(vjp) if products else None,
        torch_fn=getattr(torch, name),
        doc=doc,
    )


def _unary_spec(name: str, inputs, ulps: float, doc: str) -> OpSpec:
    return OpSpec(
        name=name,
        reference=getattr(reference.elementwise, name),
        reference_vjp=getattr(reference.elementwise, f"{name}_vjp"),
        inputs=inputs,
        ulps=ulps,
        torch_fn=getattr(torch, name),
        doc=doc,
    )


SPECS = [
    _binary_spec("add", "a + b with broadcasting; each grad is g summed over the dims its input was broadcast along"),
    _binary_spec("sub", "a - b with broadcasting; grads g and -g, summed over broadcast dims"),
    _binary_spec(
        "mul", "a * b with broadcasting; grads g*b and g*a in one pass, summed over broadcast dims", products=True
    ),
    _binary_spec(
        "div",
        "a / b (correctly rounded) with broadcasting; grads g/b and -g*(a/b)/b",
        inputs=_div_pair,
        products=True,
    ),
    _unary_spec("neg", _unary(VALUES), 0.0, "-x; grad -g"),
    # libdevice's expf/logf are within 2 ulps (CUDA math docs); the backward recomputes exp(x)
    _unary_spec("exp", _exp_inputs, 2.0, "exp(x); grad g*exp(x)"),
    _unary_spec("log", _unary("positive", st.sampled_from((1.0, 100.0))), 2.0, "log(x), log(0) = -inf; grad g/x"),
    _unary_spec("sqrt", _unary("positive", st.sampled_from((1.0, 100.0))), 1.0, "rounded sqrt(x); grad g/(2 sqrt x)"),
    # exp(-|x|) (2 ulps), then a correctly rounded division (1): forward and backward
    _unary_spec("sigmoid", _unary("normal", st.sampled_from((1.0, 5.0))), 4.0, "1/(1+exp(-x)); grad g*e/(1+e)^2"),
    # libdevice tanhf 2 ulps; under the interpreter Kahan's expm1 (a few ulps); grad 4e/(1+e)^2
    _unary_spec("tanh", _unary("normal", st.sampled_from((1.0, 5.0))), 6.0, "tanh(x); grad g*4e/(1+e)^2, e=exp(-2|x|)"),
    # powf is within 4 ulps (CUDA math docs); under the interpreter exp(p log|x|) in fp64 loses about
    # |p log x| ulps of fp64 (below 8 for the drawn bases and exponents)
    OpSpec(
        name="pow",
        reference=reference.elementwise.pow,
        reference_vjp=reference.elementwise.pow_vjp,
        inputs=_pow_inputs,
        ulps=8.0,
        torch_fn=torch.pow,
        doc="x ** p for a scalar p (x*x for 2, sqrt for 0.5, ... as torch); grad g*p*x^(p-1), 0 at p = 0",
    ),
]
