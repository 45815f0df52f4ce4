"""add, sub, mul, div with broadcasting and neg, exp, log, sqrt, sigmoid, tanh, pow in Triton."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from kernels import _runtime as rt
from kernels._library import custom_op, unary_op_pair
from kernels._strided import flat_strides, int64_indexing, strided_offsets
from kernels.reduction import (
    PROLOGUE_DIV,
    PROLOGUE_DIV_OTHER,
    PROLOGUE_MUL,
    PROLOGUE_NEG,
    PROLOGUE_NONE,
    div_rn,
    reduce_sum,
)

__all__ = [
    "add",
    "broadcast_shape",
    "div",
    "exp",
    "log",
    "mul",
    "neg",
    "pow",
    "sigmoid",
    "sqrt",
    "sub",
    "tanh",
]

# Binary op codes (the OP constexpr of the binary kernels).
_ADD, _SUB, _MUL, _DIV = 0, 1, 2, 3
# Unary op codes (the OP constexpr of the unary kernels).
_NEG, _EXP, _LOG, _SQRT, _SIGMOID, _TANH, _POW = 0, 1, 2, 3, 4, 5, 6
# How pow evaluates x ** p (the POW constexpr): the exponents torch special-cases, then the rest.
_POW_ONE, _POW_IDENTITY, _POW_SQUARE, _POW_CUBE, _POW_SQRT, _POW_RECIPROCAL, _POW_GENERAL = 0, 1, 2, 3, 4, 5, 6

#: Compiled kernels call libdevice for exp, log, tanh and pow: Triton lowers fp32 ``tl.exp`` and
#: ``tl.log`` to the approximate ``ex2``/``lg2`` instructions (tens of ulps off torch for large
#: |x|, and no relative accuracy for log near 1). The interpreter has no libdevice; NumPy's
#: functions behind ``tl.exp``/``tl.log`` are accurate there.
_PRECISE = PRECISE = not rt.INTERPRET

#: Elements per program. The first config is the interpreter's (it runs that one alone): big
#: blocks make few programs. On a GPU 1024-8192 elements cover the range where a streaming kernel
#: reaches copy bandwidth; which one wins depends on size and dtype, so they are timed.
_CONFIGS = [
    triton.Config({"BLOCK": 4096}, num_warps=8),
    triton.Config({"BLOCK": 1024}, num_warps=4),
    triton.Config({"BLOCK": 2048}, num_warps=8),
    triton.Config({"BLOCK": 8192}, num_warps=16),
]
#: Autotuning runs once per (size class, layout rank, dtypes), not once per size.
_KEY = ["size_class", "RANK"]
#: Shared with the other streaming kernels (kernels.activations).
CONFIGS, KEY = _CONFIGS, _KEY


# ---------------------------------------------------------------------------------------------
# Triton helpers
# ---------------------------------------------------------------------------------------------


@triton.jit
def _exp(x, PRECISE: tl.constexpr):
    y = libdevice.exp(x) if PRECISE else tl.exp(x)
    return y


@triton.jit
def _log(x, PRECISE: tl.constexpr):
    y = libdevice.log(x) if PRECISE else tl.log(x)
    return y


@triton.jit
def _sqrt(x):
    """Correctly rounded square root (``tl.sqrt`` on fp32 is approximate on a GPU)."""
    y = tl.sqrt(x) if x.dtype == tl.float64 else tl.sqrt_rn(x)
    return y


@triton.jit
def _expm1(y, PRECISE: tl.constexpr):
    """exp(y) - 1 without cancellation near 0 (Kahan's trick: (u - 1) * y / log(u), u = exp(y),
    exact where u rounds to 1 or to 0)."""
    u = _exp(y, PRECISE)
    um1 = u - 1.0
    safe = tl.where((u == 1.0) | (u == 0.0), 2.0, u)
    return tl.where(u == 1.0, y, tl.where(u == 0.0, -1.0, um1 * y / _log(safe, PRECISE)))


@triton.jit
def _tanh(x, PRECISE: tl.constexpr):
    if PRECISE:
        y = libdevice.tanh(x)
    else:
        # tanh|x| = -expm1(-2|x|) / (2 + expm1(-2|x|)), accurate for small and large |x|
        e = _expm1(-2.0 * tl.abs(x), PRECISE)
        t = -e / (2.0 + e)
        y = tl.where(x < 0, -t, t)
    return y


@triton.jit
def _pow(x, p, MODE: tl.constexpr, P_INT: tl.constexpr, P_ODD: tl.constexpr, PRECISE: tl.constexpr):
    """x ** p. The exponents torch special-cases are computed as torch does (x * x for 2, sqrt for
    0.5, ...); others through libdevice, or under the interpreter as exp(p log|x|) in fp64 with the
    sign of an odd integer power and NaN for a finite negative base and a non-integer power."""
    if MODE == 0:
        y = tl.full(x.shape, 1.0, x.dtype)
    elif MODE == 1:
        y = x
    elif MODE == 2:
        y = x * x
    elif MODE == 3:
        y = x * x * x
    elif MODE == 4:
        y = _sqrt(x)
    elif MODE == 5:
        y = div_rn(tl.full(x.shape, 1.0, x.dtype), x)
    elif PRECISE:
        y = libdevice.pow(x, tl.full(x.shape, 0.0, x.dtype) + p.to(x.dtype))
    else:
        xd = x.to(tl.float64)
        mag = tl.exp(p.to(tl.float64) * tl.log(tl.abs(xd)))
        if P_ODD:
            neg = -mag
        elif P_INT:
            neg = mag
        else:  # C's pow: a finite negative base has no real non-integer power; (-inf) ** p is |.|
            neg = tl.where(xd == float("-inf"), mag, float("nan"))
        y = tl.where(xd < 0, neg, mag).to(x.dtype)
    return y


@triton.jit
def _unary(x, p, OP: tl.constexpr, POW: tl.constexpr, P_INT: tl.constexpr, P_ODD: tl.constexpr, PRECISE: tl.constexpr):
    """The unary op on upcast values (fp32, or fp64)."""
    if OP == 0:
        y = -x
    elif OP == 1:
        y = _exp(x, PRECISE)
    elif OP == 2:
        y = _log(x, PRECISE)
    elif OP == 3:
        y = _sqrt(x)
    elif OP == 4:
        # e = exp(-|x|) never overflows: 1 / (1 + e) for x >= 0, e / (1 + e) below
        e = _exp(-tl.abs(x), PRECISE)
        y = div_rn(tl.where(x >= 0, 1.0, e), 1.0 + e)
    elif OP == 5:
        y = _tanh(x, PRECISE)
    else:
        y = _pow(x, p, POW, P_INT, P_ODD, PRECISE)
    return y


@triton.jit
def _unary_grad(
    x, g, p, OP: tl.constexpr, POW: tl.constexpr, P_INT: tl.constexpr, P_ODD: tl.constexpr, PRECISE: tl.constexpr
):
    """d op(x) / dx * g from the input (recomputed in fp32/fp64: more accurate than the stored
    output, at the same memory traffic). For pow, ``POW``/``P_INT``/``P_ODD`` describe p - 1."""
    if OP == 1:
        dx = g * _exp(x, PRECISE)
    elif OP == 2:
        dx = div_rn(g, x)
    elif OP == 3:
        dx = div_rn(g, 2.0 * _sqrt(x))
    elif OP == 4:
        # sigmoid(x) * sigmoid(-x) = e / (1 + e)^2 with e = exp(-|x|): no cancellation
        e = _exp(-tl.abs(x), PRECISE)
        dx = g * div_rn(e, (1.0 + e) * (1.0 + e))
    elif OP == 5:
        # 1 - tanh(x)^2 = 4 e / (1 + e)^2 with e = exp(-2|x|): no cancellation near saturation
        e = _exp(-2.0 * tl.abs(x), PRECISE)
        dx = g * div_rn(4.0 * e, (1.0 + e) * (1.0 + e))
    else:
        # torch: g * p * x^(p - 1), and 0 when p == 0
        pf = p.to(x.dtype)
        dx = tl.where(pf == 0.0, 0.0, g * (pf * _pow(x, p - 1.0, POW, P_INT, P_ODD, PRECISE)))
    return dx


# ---------------------------------------------------------------------------------------------
# Triton kernels
# ---------------------------------------------------------------------------------------------


@rt.autotune(configs=_CONFIGS, key=_KEY)
@triton.jit(do_not_specialize=["size_class"])
def _binary_kernel(
    a_ptr,  # input, any layout (stride 0 where broadcast)
    b_ptr,  # other, any layout (stride 0 where broadcast)
    out_ptr,  # result, contiguous in the broadcast shape
    n,  # number of elements of the result
    size_class,  # autotune key only: bit length of n
    S1, S2, S3,  # collapsed sizes of the broadcast shape (S0 is implied by n)
    a_s0, a_s1, a_s2, a_s3,  # input strides over the collapsed dims
    b_s0, b_s1, b_s2, b_s3,  # other strides
    OP: tl.constexpr,  # 0 add, 1 sub, 2 mul, 3 div
    RANK: tl.constexpr,  # collapsed dims in use (0: every operand contiguous, no index arithmetic)
    INT64: tl.constexpr,  # indices and offsets need 64 bits
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64) if INT64 else tl.program_id(0)
    ids = pid * BLOCK + tl.arange(0, BLOCK)
    mask = ids < n
    acc_t = tl.float64 if a_ptr.dtype.element_ty == tl.float64 else tl.float32
    a_offs = ids if RANK == 0 else strided_offsets(ids, S1, S2, S3, a_s0, a_s1, a_s2, a_s3, RANK)
    a = tl.load(a_ptr + a_offs, mask=mask).to(acc_t)
    b_offs = ids if RANK == 0 else strided_offsets(ids, S1, S2, S3, b_s0, b_s1, b_s2, b_s3, RANK)
    b = tl.load(b_ptr + b_offs, mask=mask).to(acc_t)
    if OP == 0:
        out = a + b
    elif OP == 1:
        out = a - b
    elif OP == 2:
        out = a * b
    else:
        out = div_rn(a, b)
    tl.store(out_ptr + ids, out.to(out_ptr.dtype.element_ty), mask=mask)


@rt.autotune(configs=_CONFIGS, key=_KEY)
@triton.jit(do_not_specialize=["size_class"])
def _binary_bwd_kernel(
    g_ptr,  # grad_output, any layout
    a_ptr,  # input, any layout (stride 0 where broadcast)
    b_ptr,  # other, any layout
    da_ptr,  # grad of input, contiguous in the broadcast shape (written if NEED_A)
    db_ptr,  # grad of other, contiguous in the broadcast shape (written if NEED_B)
    n,  # number of elements of the broadcast shape
    size_class,  # autotune key only: bit length of n
    S1, S2, S3,  # collapsed sizes (S0 is implied by n)
    g_s0, g_s1, g_s2, g_s3,  # grad_output strides
    a_s0, a_s1, a_s2, a_s3,  # input strides
    b_s0, b_s1, b_s2, b_s3,  # other strides
    OP: tl.constexpr,  # 2 mul, 3 div (add and sub need no kernel: their grads are +-g)
    NEED_A: tl.constexpr,
    NEED_B: tl.constexpr,
    RANK: tl.constexpr,
    INT64: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64) if INT64 else tl.program_id(0)
    ids = pid * BLOCK + tl.arange(0, BLOCK)
    mask = ids < n
    acc_t = tl.float64 if g_ptr.dtype.element_ty == tl.float64 else tl.float32
    g_offs = ids if RANK == 0 else strided_offsets(ids, S1, S2, S3, g_s0, g_s1, g_s2, g_s3, RANK)
    g = tl.load(g_ptr + g_offs, mask=mask).to(acc_t)
    b_offs = ids if RANK == 0 else strided_offsets(ids, S1, S2, S3, b_s0, b_s1, b_s2, b_s3, RANK)
    b = tl.load(b_ptr + b_offs, mask=mask).to(acc_t)
    if NEED_A:
        da = g * b if OP == 2 else div_rn(g, b)
        tl.store(da_ptr + ids, da.to(da_ptr.dtype.element_ty), mask=mask)
    if NEED_B:
        a_offs = ids if RANK == 0 else strided_offsets(ids, S1, S2, S3, a_s0, a_s1, a_s2, a_s3, RANK)
        a = tl.load(a_ptr + a_offs, mask=mask).to(acc_t)
        if OP == 2:
            db = g * a
        else:
            db = -g * div_rn(div_rn(a, b), b)  # torch's order: -g * ((a / b) / b)
        tl.store(db_ptr + ids, db.to(db_ptr.dtype.element_ty), mask=mask)


@rt.autotune(configs=_CONFIGS, key=_KEY)
@triton.jit(do_not_specialize=["size_class"])
def _unary_kernel(
    x_ptr,  # input, any layout
    y_ptr,  # result, contiguous
    p_ptr,  # pow: the exponent, one element of the compute dtype (fp64 keeps it exact); else unused
    n,  # number of elements
    size_class,  # autotune key only: bit length of n
    S1, S2, S3,  # collapsed sizes (S0 is implied by n)
    x_s0, x_s1, x_s2, x_s3,  # input strides
    OP: tl.constexpr,  # 0 neg, 1 exp, 2 log, 3 sqrt, 4 sigmoid, 5 tanh, 6 pow
    POW: tl.constexpr,  # pow: how x ** p is evaluated (see _pow)
    P_INT: tl.constexpr,  # pow: p is an integer
    P_ODD: tl.constexpr,  # pow: p is an odd integer
    PRECISE: tl.constexpr,  # use libdevice (compiled kernels)
    RANK: tl.constexpr,
    INT64: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64) if INT64 else tl.program_id(0)
    ids = pid * BLOCK + tl.arange(0, BLOCK)
    mask = ids < n
    acc_t = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    x_offs = ids if RANK == 0 else strided_offsets(ids, S1, S2, S3, x_s0, x_s1, x_s2, x_s3, RANK)
    x = tl.load(x_ptr + x_offs, mask=mask).to(acc_t)
    p = 0.0
    if OP == 6:
        p = tl.load(p_ptr)
    y = _unary(x, p, OP, POW, P_INT, P_ODD, PRECISE)
    tl.store(y_ptr + ids, y.to(y_ptr.dtype.element_ty), mask=mask)


@rt.autotune(configs=_CONFIGS, key=_KEY)
@triton.jit(do_not_specialize=["size_class"])
def _unary_bwd_kernel(
    x_ptr,  # saved input, any layout
    g_ptr,  # grad_output, any layout
    dx_ptr,  # grad_input, contiguous
    p_ptr,  # pow: the exponent (see _unary_kernel); else unused
    n,  # number of elements
    size_class,  # autotune key only: bit length of n
    S1, S2, S3,  # collapsed sizes (S0 is implied by n)
    x_s0, x_s1, x_s2, x_s3,  # input strides
    g_s0, g_s1, g_s2, g_s3,  # grad_output strides
    OP: tl.constexpr,  # 1 exp, 2 log, 3 sqrt, 4 sigmoid, 5 tanh, 6 pow (neg's grad is neg(g))
    POW: tl.constexpr,  # pow: how x ** (p - 1) is evaluated
    P_INT: tl.constexpr,  # pow: p - 1 is an integer
    P_ODD: tl.constexpr,  # pow: p - 1 is an odd integer
    PRECISE: tl.constexpr,
    RANK: tl.constexpr,
    INT64: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64) if INT64 else tl.program_id(0)
    ids = pid * BLOCK + tl.arange(0, BLOCK)
    mask = ids < n
    acc_t = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    x_offs = ids if RANK == 0 else strided_offsets(ids, S1, S2, S3, x_s0, x_s1, x_s2, x_s3, RANK)
    x = tl.load(x_ptr + x_offs, mask=mask).to(acc_t)
    g_offs = ids if RANK == 0 else strided_offsets(ids, S1, S2, S3, g_s0, g_s1, g_s2, g_s3, RANK)
    g = tl.load(g_ptr + g_offs, mask=mask).to(acc_t)
    p = 0.0
    if OP == 6:
        p = tl.load(p_ptr)
    dx = _unary_grad(x, g, p, OP, POW, P_INT, P_ODD, PRECISE)
    tl.store(dx_ptr + ids, dx.to(dx_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------


def broadcast_shape(a: torch.Size, b: torch.Size) -> list[int]:
    """torch's broadcast of two shapes; ``ValueError`` naming both when they do not broadcast."""
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        if x != y and 1 not in (x, y):
            raise ValueError(
                f"shapes {tuple(a)} and {tuple(b)} do not broadcast: size {x} vs {y} at dim -{i}"
            )
        out.append(y if x == 1 else x)
    return out[::-1]


def _layout(shape, *tensors: torch.Tensor) -> tuple[list[int], list[list[int]], int, list[torch.Tensor]]:
    """(collapsed sizes, strides per tensor, RANK, tensors) for the elementwise kernels: RANK 0
    when every tensor is contiguous in ``shape``."""
    sizes, strides, contiguous, ts = flat_strides(*tensors, shape=shape)
    rank = 0
    if not contiguous:
        rank = 4
        while rank > 1 and sizes[4 - rank] == 1:
            rank -= 1
    return sizes, strides, rank, ts


def _grid(n: int):
    return lambda meta: (rt.cdiv(n, meta["BLOCK"]),)


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> list[int]:
    rt.check_float(a, "input")
    rt.check_float(b, "other")
    rt.check_same_dtype(input=a, other=b)
    rt.check_device(a, b)
    return broadcast_shape(a.shape, b.shape)


def _binary_forward(a: torch.Tensor, b: torch.Tensor, op: int) -> torch.Tensor:
    shape = broadcast_shape(a.shape, b.shape)
    out = rt.empty(shape, dtype=a.dtype, device=a.device)
    n = out.numel()
    if n == 0:
        return out
    sizes, (a_s, b_s), rank, (a, b) = _layout(shape, a, b)
    _binary_kernel[_grid(n)](
        a, b, out, n, n.bit_length(), *sizes[1:], *a_s, *b_s,
        OP=op, RANK=rank, INT64=int64_indexing(a, b, n=n),
    )  # fmt: skip
    return out


def _reduced_dims(shape: list[int], x_shape: torch.Size) -> list[int]:
    """Dims of the broadcast ``shape`` that an input of ``x_shape`` was broadcast along (size-1
    dims of ``shape`` sum nothing and are left out)."""
    lead = len(shape) - len(x_shape)
    return [d for d in range(len(shape)) if shape[d] != 1 and (d < lead or x_shape[d - lead] == 1)]


def _binary_backward(
    g: torch.Tensor,
    a: torch.Tensor | None,
    b: torch.Tensor | None,
    shapes: tuple[Sequence[int], Sequence[int]],
    op: int,
    need: tuple[bool, bool],
) -> list[torch.Tensor | None]:
    """Gradients of input and other (shapes ``shapes``, None where not in ``need``), each a new
    tensor: broadcast inputs get the per-element term summed over their broadcast dims in one
    pass; mul and div fuse the others in one elementwise pass; add and sub copy (or negate) g."""
    shape = list(g.shape)
    dims = [_reduced_dims(shape, s) for s in shapes]
    grads: list[torch.Tensor | None] = [None, None]
    direct = [need[i] and not dims[i] for i in range(2)]
    if op in (_MUL, _DIV) and any(direct):
        n = g.numel()
        da = rt.empty(shapes[0], dtype=g.dtype, device=g.device) if direct[0] else None
        db = rt.empty(shapes[1], dtype=g.dtype, device=g.device) if direct[1] else None
        if n:
            sizes, (g_s, a_s, b_s), rank, (gg, aa, bb) = _layout(shape, g, a, b)
            _binary_bwd_kernel[_grid(n)](
                gg, aa, bb, da if da is not None else db, db if db is not None else da,
                n, n.bit_length(), *sizes[1:], *g_s, *a_s, *b_s,
                OP=op, NEED_A=direct[0], NEED_B=direct[1], RANK=rank, INT64=int64_indexing(gg, aa, bb, n=n),
            )  # fmt: skip
        grads = [da, db]
    # grads of broadcast inputs (and add/sub's copies of +-g): the per-element term summed over
    # the broadcast dims (none for a copy), in one pass
    for i in range(2):
        if need[i] and grads[i] is None:
            prologue, operands = _grad_terms(op, i, g, a, b)
            grads[i] = reduce_sum(operands, shape, dims[i], shapes[i], prologue=prologue)
    return grads


def _grad_terms(op: int, i: int, g: torch.Tensor, a: torch.Tensor | None, b: torch.Tensor | None):
    """(prologue, operands) of the sum kernel for the gradient of input ``i`` (0: input, 1: other)."""
    if op == _ADD:
        return PROLOGUE_NONE, [g]
    if op == _SUB:
        return (PROLOGUE_NONE if i == 0 else PROLOGUE_NEG), [g]
    if op == _MUL:
        return PROLOGUE_MUL, [g, b if i == 0 else a]
    return (PROLOGUE_DIV, [g, b]) if i == 0 else (PROLOGUE_DIV_OTHER, [g, a, b])


def _pow_mode(p: float) -> tuple[int, bool, bool]:
    """(POW, P_INT, P_ODD) for exponent ``p``."""
    special = {
        0.0: _POW_ONE, 1.0: _POW_IDENTITY, 2.0: _POW_SQUARE, 3.0: _POW_CUBE, 0.5: _POW_SQRT, -1.0: _POW_RECIPROCAL,
    }  # fmt: skip
    is_int = math.isfinite(p) and float(p).is_integer()
    return special.get(p, _POW_GENERAL), is_int, is_int and int(p) % 2 == 1


def _exponent(p: float, x: torch.Tensor) -> torch.Tensor:
    """The exponent as one element of the compute dtype: a Python float argument would reach the
    kernel as fp32 and lose fp64's precision."""
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    return torch.full((1,), p, dtype=dtype, device=x.device)


def _unary_forward(x: torch.Tensor, op: int, p: float = 0.0) -> torch.Tensor:
    y = rt.empty_like(x)
    n = x.numel()
    if n == 0:
        return y
    sizes, (x_s,), rank, (x,) = _layout(x.shape, x)
    mode, p_int, p_odd = _pow_mode(p)
    _unary_kernel[_grid(n)](
        x, y, _exponent(p, x) if op == _POW else x, n, n.bit_length(), *sizes[1:], *x_s,
        OP=op, POW=mode, P_INT=p_int, P_ODD=p_odd, PRECISE=_PRECISE, RANK=rank, INT64=int64_indexing(x, n=n),
    )  # fmt: skip
    return y


def _unary_backward(x: torch.Tensor, g: torch.Tensor, op: int, p: float = 0.0) -> torch.Tensor:
    dx = rt.empty_like(x)
    n = x.numel()
    if n == 0:
        return dx
    sizes, (x_s, g_s), rank, (x, g) = _layout(x.shape, x, g)
    mode, p_int, p_odd = _pow_mode(p - 1.0)
    _unary_bwd_kernel[_grid(n)](
        x, g, dx, _exponent(p, x) if op == _POW else x, n, n.bit_length(), *sizes[1:], *x_s, *g_s,
        OP=op, POW=mode, P_INT=p_int, P_ODD=p_odd, PRECISE=_PRECISE, RANK=rank, INT64=int64_indexing(x, g, n=n),
    )  # fmt: skip
    return dx


# ---------------------------------------------------------------------------------------------
# Custom ops (torch.ops.blitz.<name>, <name>_backward) and the public API
# ---------------------------------------------------------------------------------------------

_BINARY_OPS = {"add": _ADD, "sub": _SUB, "mul": _MUL, "div": _DIV}
_UNARY_OPS = {"neg": _NEG, "exp": _EXP, "log": _LOG, "sqrt": _SQRT, "sigmoid": _SIGMOID, "tanh": _TANH}


@custom_op("binary_backward")
def binary_backward_op(
    grad_output: torch.Tensor,
    input: torch.Tensor | None,
    other: torch.Tensor | None,
    input_shape: Sequence[int],
    other_shape: Sequence[int],
    op: str,
    need_input: bool,
    need_other: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of ``op`` (add, sub, mul, div) with respect to input and other (of their shapes,
    reduced over broadcast dims); an unneeded one is an empty (0,) tensor. input and other are
    only read by mul and div."""
    code = _BINARY_OPS[op]
    da, db = _binary_backward(grad_output, input, other, (input_shape, other_shape), code, (need_input, need_other))
    if da is None:
        da = rt.empty((0,), dtype=grad_output.dtype, device=grad_output.device)
    if db is None:
        db = rt.empty((0,), dtype=grad_output.dtype, device=grad_output.device)
    return da, db


@binary_backward_op.register_fake
def _(grad_output, input, other, input_shape, other_shape, op, need_input, need_other):
    return (
        grad_output.new_empty(input_shape if need_input else (0,)),
        grad_output.new_empty(other_shape if need_other else (0,)),
    )


def _make_binary(name: str, doc: str):
    code = _BINARY_OPS[name]

    def forward(input: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        return _binary_forward(input, other, code)

    forward.__name__ = forward.__qualname__ = f"{name}_op"
    forward.__doc__ = doc
    op = custom_op(name)(forward)

    @op.register_fake
    def _(input, other):
        shape = torch.broadcast_shapes(input.shape, other.shape)
        return input.new_empty(shape)

    def setup_context(ctx, inputs, output) -> None:
        a, b = inputs
        ctx.shapes = (a.shape, b.shape)
        if code in (_MUL, _DIV):  # add and sub need only the shapes
            ctx.save_for_backward(a, b)

    def backward(ctx, g: torch.Tensor):
        need = ctx.needs_input_grad[:2]
        shapes = ctx.shapes
        a, b = ctx.saved_tensors if code in (_MUL, _DIV) else (None, None)
        out_shape = list(g.shape)
        dims = [_reduced_dims(out_shape, s) for s in shapes]
        grads: list[torch.Tensor | None] = [None, None]
        if code in (_ADD, _SUB):
            # as torch: the gradient of a + b is grad_output itself (a view when size-1 dims differ)
            if need[0] and not dims[0]:
                grads[0] = g.reshape(shapes[0])
            if need[1] and not dims[1]:
                grads[1] = (g if code == _ADD else neg_op(g)).reshape(shapes[1])
        rest = [need[i] and grads[i] is None for i in range(2)]
        if any(rest):
            da, db = binary_backward_op(g, a, b, list(shapes[0]), list(shapes[1]), name, rest[0], rest[1])
            grads = [da if rest[0] else grads[0], db if rest[1] else grads[1]]
        return grads[0], grads[1]

    op.register_autograd(backward, setup_context=setup_context)
    return op


add_op = _make_binary("add", "input + other with broadcasting (same dtype and device, checked by ``add``).")
sub_op = _make_binary("sub", "input - other with broadcasting.")
mul_op = _make_binary("mul", "input * other with broadcasting.")
div_op = _make_binary("div", "input / other (true division, correctly rounded) with broadcasting.")


def _unary_setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(inputs[0])
    ctx.exponent = inputs[1] if len(inputs) > 1 else 0.0


@custom_op("neg")
def neg_op(input: torch.Tensor) -> torch.Tensor:
    """-input in a new tensor."""
    return _unary_forward(input, _NEG)


@neg_op.register_fake
def _(input):
    return input.new_empty(input.shape)


def _neg_backward(ctx, g: torch.Tensor) -> torch.Tensor:
    return neg_op(g)


neg_op.register_autograd(_neg_backward)


def _make_unary(name: str, doc: str):
    code = _UNARY_OPS[name]
    return unary_op_pair(
        name,
        functools.partial(_unary_forward, op=code),
        functools.partial(_unary_backward, op=code),
        doc=doc,
    )


exp_op, exp_backward_op = _make_unary("exp", "exp(input).")
log_op, log_backward_op = _make_unary("log", "log(input): log(0) = -inf, log of a negative number NaN.")
sqrt_op, sqrt_backward_op = _make_unary("sqrt", "sqrt(input), correctly rounded; NaN below 0.")
sigmoid_op, sigmoid_backward_op = _make_unary("sigmoid", "1 / (1 + exp(-input)).")
tanh_op, tanh_backward_op = _make_unary("tanh", "tanh(input).")


@custom_op("pow")
def pow_op(input: torch.Tensor, exponent: float) -> torch.Tensor:
    """input ** exponent for a scalar exponent (NaN for a negative base and a non-integer exponent)."""
    return _unary_forward(input, _POW, exponent)


@pow_op.register_fake
def _(input, exponent):
    return input.new_empty(input.shape)


@custom_op("pow_backward")
def pow_backward_op(input: torch.Tensor, grad_output: torch.Tensor, exponent: float) -> torch.Tensor:
    """grad_input of pow: grad_output * exponent * input ** (exponent - 1), 0 for exponent 0."""
    return _unary_backward(input, grad_output, _POW, exponent)


@pow_backward_op.register_fake
def _(input, grad_output, exponent):
    return input.new_empty(input.shape)


def _pow_backward(ctx, g: torch.Tensor):
    (x,) = ctx.saved_tensors
    return pow_backward_op(x, g, ctx.exponent), None


pow_op.register_autograd(_pow_backward, setup_context=_unary_setup_context)


def add(input: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``torch.add(input, other)`` with broadcasting."""
    _check_pair(input, other)
    return add_op(input, other)


def sub(input: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``torch.sub(input, other)`` with broadcasting."""
    _check_pair(input, other)
    return sub_op(input, other)


def mul(input: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``torch.mul(input, other)`` with broadcasting."""
    _check_pair(input, other)
    return mul_op(input, other)


def div(input: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``torch.div(input, other)`` (true division, correctly rounded) with broadcasting."""
    _check_pair(input, other)
    return div_op(input, other)


def neg(input: torch.Tensor) -> torch.Tensor:
    """``torch.neg``."""
    rt.check_float(input, "input")
    return neg_op(input)


def exp(input: torch.Tensor) -> torch.Tensor:
    """``torch.exp``."""
    rt.check_float(input, "input")
    return exp_op(input)


def log(input: torch.Tensor) -> torch.Tensor:
    """``torch.log``: log(0) = -inf, log of a negative number NaN."""
    rt.check_float(input, "input")
    return log_op(input)


def sqrt(input: torch.Tensor) -> torch.Tensor:
    """``torch.sqrt`` (correctly rounded): sqrt of a negative number is NaN."""
    rt.check_float(input, "input")
    return sqrt_op(input)


def sigmoid(input: torch.Tensor) -> torch.Tensor:
    """``torch.sigmoid``."""
    rt.check_float(input, "input")
    return sigmoid_op(input)


def tanh(input: torch.Tensor) -> torch.Tensor:
    """``torch.tanh``."""
    rt.check_float(input, "input")
    return tanh_op(input)


def pow(input: torch.Tensor, exponent: float) -> torch.Tensor:
    """``torch.pow(input, exponent)`` for a scalar exponent (a negative base with a non-integer
    exponent gives NaN; the gradient at exponent 0 is 0, as torch's)."""
    if isinstance(exponent, bool) or not isinstance(exponent, int | float):
        raise TypeError(f"exponent must be a Python number, got {type(exponent).__name__}")
    rt.check_float(input, "input")
    return pow_op(input, float(exponent))
