"""Catalog entries for the elementwise ops (add ... pow), the reductions (sum ... min) and cat."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import strategies as st

import kernels.cat
import kernels.elementwise
import kernels.reduction
import reference.cat
import reference.elementwise
import reference.reduction
from gradcheck import strategies as gs
from gradcheck.catalog import OpSpec

__all__ = ["SPECS"]

#: Elements per drawn input: sizes reach 2049 and 4097 along a dim (past a block multiple) while an
#: interpreted example stays in the milliseconds.
_MAX_NUMEL = 1 << 13
#: Values for sums and products: small integers now and then make every sum exact, so a wrong
#: element cannot hide in rounding.
_VALUES = st.sampled_from(("normal", "normal", "uniform", "integers"))


# ---------------------------------------------------------------------------------------------
# binary ops with broadcasting
# ---------------------------------------------------------------------------------------------


@st.composite
def _pair(draw, dtype: torch.dtype, *, divisor: bool = False):
    """Two broadcastable tensors (dims dropped on the left or set to 1 on either side); for div the
    divisor is kept away from 0 (|b| in [0.1, 10], either sign)."""
    a_shape, b_shape = draw(gs.broadcastable_shapes(max_dims=4, max_side=8, max_numel=_MAX_NUMEL))
    a = draw(gs.tensors(a_shape, elements=_VALUES))
    if not divisor:
        return a, draw(gs.tensors(b_shape, elements=_VALUES))
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
        shape = gs.shapes(min_dims=0, max_dims=4, max_numel=_MAX_NUMEL)
        return gs.tensors(shape, elements=elements, scale=scale).map(lambda x: (x,))

    return inputs


def _exp_inputs(dtype: torch.dtype):
    """Normal values of scale 1 or 3; for fp16 within [-8, 8]: exp(8) * |g| stays below fp16's
    65504, so the gradient is finite (past that both torch and we give inf, and a directional
    finite difference cannot compare an inf)."""
    limit = 8.0 if dtype == torch.float16 else None
    shape = gs.shapes(min_dims=0, max_dims=4, max_numel=_MAX_NUMEL)
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
    shape = draw(gs.shapes(min_dims=0, max_dims=4, max_numel=_MAX_NUMEL))
    whole = p >= 0 and float(p).is_integer()
    x = draw(gs.tensors(shape, elements=st.sampled_from(("normal", "uniform")) if whole else "positive"))
    return x, p


# ---------------------------------------------------------------------------------------------
# reductions
# ---------------------------------------------------------------------------------------------


@st.composite
def _dims(draw, ndim: int, *, none: bool = True):
    """torch's dim argument: an int (sometimes negative), a tuple of distinct dims, () or None."""
    if ndim == 0:
        return draw(st.sampled_from((0, -1, (), None) if none else (0, -1, ())))
    kinds = ["int", "int", "tuple", "all"] + (["none"] if none else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "none":
        return None
    if kind == "all":
        return ()
    if kind == "int":
        return draw(st.integers(-ndim, ndim - 1))
    chosen = draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
    return tuple(d - ndim if draw(st.booleans()) else d for d in chosen)


@st.composite
def _sum_inputs(draw, dtype: torch.dtype):
    shape = draw(gs.shapes(min_dims=0, max_dims=4, max_numel=_MAX_NUMEL))
    x = draw(gs.tensors(shape, elements=_VALUES))
    return x, draw(_dims(len(shape))), draw(st.booleans())


def _reduction_length(x, dim, keepdim) -> int:
    """K: the number of elements summed into each output (the forward's accumulation)."""
    return max(math.prod(x.shape[d] for d in reference.reduction.axes(dim, x.ndim)), 1)


@st.composite
def _extreme_inputs(draw, dtype: torch.dtype):
    """No empty reduction (torch raises there); values mostly distinct ("separated"), sometimes
    small integers with ties (the gradient is split among them: the reference checks it, finite
    differences are skipped at a tie)."""
    shape = draw(gs.shapes(min_dims=0, max_dims=4, min_side=1, max_numel=_MAX_NUMEL))
    x = draw(gs.tensors(shape, elements=st.sampled_from(("separated", "separated", "separated", "integers"))))
    return x, draw(_dims(len(shape), none=False)), draw(st.booleans())


@st.composite
def _arg_extreme_inputs(draw, dtype: torch.dtype):
    shape = draw(gs.shapes(min_dims=0, max_dims=4, min_side=1, max_numel=_MAX_NUMEL))
    x = draw(gs.tensors(shape, elements=st.sampled_from(("separated", "separated", "separated", "integers"))))
    ndim = len(shape)
    dim = draw(st.integers(-max(ndim, 1), max(ndim - 1, 0)))
    return x, dim, draw(st.booleans())


def _gap(x: np.ndarray, ax: tuple[int, ...]) -> float:
    """Half the smallest gap between a slice's largest element and the next (distinct or tied)
    one: how far the inputs may move before the maximum changes hands."""
    if x.size == 0:
        return math.inf
    moved = np.moveaxis(x, ax, tuple(range(x.ndim - len(ax), x.ndim))) if ax else x[..., None]
    rows = moved.reshape(-1, max(math.prod(x.shape[d] for d in ax), 1)) if ax else moved.reshape(-1, 1)
    if rows.shape[1] < 2:
        return math.inf
    top = -np.partition(-rows, 1, axis=1)[:, :2]
    return float(np.min(top[:, 0] - top[:, 1])) / 2


def _extreme_kinks(x, dim, keepdim) -> float:
    """amax/amin change hands (or split among ties) where two top elements meet."""
    ax = reference.reduction.axes(dim, x.ndim)
    return min(_gap(x, ax), _gap(-x, ax))


def _arg_extreme_kinks(x, dim, keepdim) -> float:
    ax = (dim % x.ndim,) if x.ndim else ()
    return min(_gap(x, ax), _gap(-x, ax))


# ---------------------------------------------------------------------------------------------
# cat: every tensor is a positional argument, the dim comes last
# ---------------------------------------------------------------------------------------------


def _cat_impl(*args):
    """``kernels.cat.cat`` with the tensors as positional arguments and the dim last."""
    *tensors, dim = args
    return kernels.cat.cat(tensors, dim)


def _cat_reference(*args):
    *arrays, dim = args
    return reference.cat.cat(arrays, dim)


def _cat_vjp(*args):
    *arrays, dim, g = args
    return (*reference.cat.cat_vjp(arrays, dim, g), None)


def _torch_cat(*args):
    *tensors, dim = args
    return torch.cat(tensors, dim)


@st.composite
def _cat_inputs(draw, dtype: torch.dtype):
    """1 to 4 tensors of one shape except along dim (sizes there from 0 up, 2049 now and then);
    sometimes a legacy (0,)-shaped tensor, which torch skips."""
    base = list(draw(gs.shapes(min_dims=1, max_dims=4, max_numel=_MAX_NUMEL // 4)))
    ndim = len(base)
    dim = draw(st.integers(-ndim, ndim - 1))
    count = draw(st.integers(1, 4))
    tensors = []
    for _ in range(count):
        shape = list(base)
        shape[dim] = draw(st.one_of(st.integers(0, 8), st.sampled_from((17, 2049))))
        if math.prod(shape) > _MAX_NUMEL:
            shape[dim] = 1
        tensors.append(draw(gs.tensors(tuple(shape), elements=_VALUES)))
    if ndim > 1 and draw(st.integers(0, 7)) == 0:
        tensors.insert(draw(st.integers(0, len(tensors))), torch.zeros(0, dtype=torch.float64, device="cpu"))
    return (*tensors, dim)


# ---------------------------------------------------------------------------------------------
# the catalog
# ---------------------------------------------------------------------------------------------


def _binary_spec(name: str, doc: str, inputs=_pair) -> OpSpec:
    return OpSpec(
        name=name,
        impl=getattr(kernels.elementwise, name),
        reference=getattr(reference.elementwise, name),
        reference_vjp=getattr(reference.elementwise, f"{name}_vjp"),
        inputs=inputs,
        depth=_broadcast_depth,
        # the op on |a|, |b| (and the VJP on |g| too) bounds the sum of |terms| of each result:
        # exactly for add, sub, mul; for div, |a| / |b| and sum |g a / b^2| are the same bound
        multilinear=True,
        torch_fn=getattr(torch, name),
        doc=doc,
    )


def _unary_spec(name: str, inputs, ulps: float, doc: str) -> OpSpec:
    return OpSpec(
        name=name,
        impl=getattr(kernels.elementwise, name),
        reference=getattr(reference.elementwise, name),
        reference_vjp=getattr(reference.elementwise, f"{name}_vjp"),
        inputs=inputs,
        ulps=ulps,
        torch_fn=getattr(torch, name),
        doc=doc,
    )


def _reduction_spec(name: str, inputs, doc: str, **extra) -> OpSpec:
    return OpSpec(
        name=name,
        impl=getattr(kernels.reduction, name),
        reference=getattr(reference.reduction, name),
        reference_vjp=getattr(reference.reduction, f"{name}_vjp"),
        inputs=inputs,
        torch_fn=getattr(torch, name),
        doc=doc,
        **extra,
    )


SPECS = [
    _binary_spec("add", "a + b with broadcasting; each grad is g summed over the dims its input was broadcast along"),
    _binary_spec("sub", "a - b with broadcasting; grads g and -g, summed over broadcast dims"),
    _binary_spec("mul", "a * b with broadcasting; grads g*b and g*a in one pass, summed over broadcast dims"),
    _binary_spec("div", "a / b (correctly rounded) with broadcasting; grads g/b and -g*(a/b)/b", inputs=_div_pair),
    _unary_spec("neg", _unary(_VALUES), 0.0, "-x; grad -g"),
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
        impl=kernels.elementwise.pow,
        reference=reference.elementwise.pow,
        reference_vjp=reference.elementwise.pow_vjp,
        inputs=_pow_inputs,
        ulps=8.0,
        torch_fn=torch.pow,
        doc="x ** p for a scalar p (x*x for 2, sqrt for 0.5, ... as torch); grad g*p*x^(p-1), 0 at p = 0",
    ),
    _reduction_spec("sum", _sum_inputs, "sum over dim (int, tuple, None or ()), keepdim; fp32 accumulation; "
                    "grad: g broadcast back (a stride-0 view)", depth=_reduction_length, multilinear=True),
    _reduction_spec("mean", _sum_inputs, "mean over dim, keepdim; fp32 accumulation, NaN for no elements; "
                    "grad: g/K broadcast back", depth=_reduction_length, multilinear=True),
    _reduction_spec("amax", _extreme_inputs, "largest element over dim (() = all), NaN-propagating; "
                    "grad split evenly among ties, as torch", kinks=_extreme_kinks),
    _reduction_spec("amin", _extreme_inputs, "smallest element over dim; grad split evenly among ties",
                    kinks=_extreme_kinks),
    _reduction_spec("max", _arg_extreme_inputs, "(values, indices) along dim: the first maximum, or the first "
                    "NaN; grad to the indexed element", kinks=_arg_extreme_kinks),
    _reduction_spec("min", _arg_extreme_inputs, "(values, indices) along dim: the first minimum, or the first "
                    "NaN; grad to the indexed element", kinks=_arg_extreme_kinks),
    OpSpec(
        name="cat",
        impl=_cat_impl,
        reference=_cat_reference,
        reference_vjp=_cat_vjp,
        inputs=_cat_inputs,
        torch_fn=_torch_cat,
        doc="cat(tensors, dim) as cat(*tensors, dim): one strided copy per input; grads are slices of g",
    ),
]
