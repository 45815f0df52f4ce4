"""gelu (exact and tanh), silu and the gated swiglu and geglu (LLM MLPs), forward and backward in
Triton, for inputs of any layout.

The forms avoid the cancellation of the textbook formulas where the hardware allows: the tanh gelu
as x * sigmoid(2u) (0.5 (1 + tanh u) = sigmoid(2u)), sigmoid through e = exp(-|z|) (no overflow,
and s (1 - s) = e / (1 + e)^2 without cancellation), and compiled, the exact gelu as
x * erfc(-x / sqrt 2) / 2 (torch's 1 + erf(x / sqrt 2) cancels for x < 0). The interpreter has no
libdevice: there the exact gelu uses ``tl.erf`` (math.erf) in torch's form.
"""

from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from kernels import _runtime as rt
from kernels import elementwise
from kernels._library import custom_op, unary_op_pair
from kernels._strided import collapse, flat_strides, int64_indexing, strided_offsets
from kernels.elementwise import _exp
from kernels.reduction import div_rn

__all__ = ["geglu", "gelu", "silu", "swiglu"]

# Activation codes (the ACT constexpr).
_GELU, _GELU_TANH, _SILU = 0, 1, 2

#: The interpreter has no libdevice (compiled kernels call it for exp and erfc); the block configs
#: and autotuning key are the elementwise ops' (a streaming kernel of one or two inputs, the same).
_PRECISE = elementwise.PRECISE
_CONFIGS, _KEY = elementwise.CONFIGS, elementwise.KEY

#: The constants, passed as a tensor of the compute dtype: a float literal or scalar argument
#: reaches a kernel as fp32, which would cost fp64 its precision.
_CONSTANTS = (
    math.sqrt(0.5),  # 1 / sqrt 2
    1.0 / math.sqrt(2.0 * math.pi),  # the normal density's factor
    math.sqrt(2.0 / math.pi),  # the tanh form's scale
    0.044715,  # the tanh form's cubic coefficient
)


# ---------------------------------------------------------------------------------------------
# Triton helpers: the activation and its derivative on upcast values (fp32, or fp64)
# ---------------------------------------------------------------------------------------------


@triton.jit
def _sigmoid_pair(z, PRECISE: tl.constexpr):
    """(sigmoid(z), sigmoid(-z)) from e = exp(-|z|) <= 1: no overflow, no cancellation."""
    e = _exp(-tl.abs(z), PRECISE)
    d = 1.0 + e
    pos = z >= 0
    return div_rn(tl.where(pos, 1.0, e), d), div_rn(tl.where(pos, e, 1.0), d)


@triton.jit
def _normal_cdf(x, c_ptr, PRECISE: tl.constexpr):
    """Phi(x) = erfc(-x / sqrt 2) / 2 compiled; 0.5 (1 + erf(x / sqrt 2)) under the interpreter."""
    r = x * tl.load(c_ptr + 0)
    if PRECISE:
        p = 0.5 * libdevice.erfc(-r)
    else:
        p = 0.5 * (1.0 + tl.erf(r))
    return p


@triton.jit
def _tanh_form(x, c_ptr, PRECISE: tl.constexpr):
    """(s, 1 - s, du/dx) for u = k (x + c x^3), s = sigmoid(2u)."""
    k = tl.load(c_ptr + 2)
    c = tl.load(c_ptr + 3)
    x2 = x * x
    s, s_neg = _sigmoid_pair(2.0 * k * (x + c * x2 * x), PRECISE)
    return s, s_neg, k * (1.0 + 3.0 * c * x2)


@triton.jit
def _act(x, c_ptr, ACT: tl.constexpr, PRECISE: tl.constexpr):
    """The activation: gelu (ACT 0), tanh gelu (1), silu (2)."""
    if ACT == 0:
        y = x * _normal_cdf(x, c_ptr, PRECISE)
    elif ACT == 1:
        s, _s_neg, _du = _tanh_form(x, c_ptr, PRECISE)
        y = x * s
    else:
        s, _s_neg = _sigmoid_pair(x, PRECISE)
        y = x * s
    return y


@triton.jit
def _act_grad(x, c_ptr, ACT: tl.constexpr, PRECISE: tl.constexpr):
    """d act / dx: Phi + x phi; s + 2 x s (1 - s) du/dx (0.5 (1 - tanh^2 u) = 2 s (1 - s));
    s (1 + x (1 - s))."""
    if ACT == 0:
        dy = _normal_cdf(x, c_ptr, PRECISE) + x * (_exp(-0.5 * x * x, PRECISE) * tl.load(c_ptr + 1))
    elif ACT == 1:
        s, s_neg, du = _tanh_form(x, c_ptr, PRECISE)
        dy = s + 2.0 * x * (s * s_neg) * du
    else:
        s, s_neg = _sigmoid_pair(x, PRECISE)
        dy = s * (1.0 + x * s_neg)
    return dy


# ---------------------------------------------------------------------------------------------
# Triton kernels
# ---------------------------------------------------------------------------------------------


@rt.autotune(configs=_CONFIGS, key=_KEY)
@triton.jit(do_not_specialize=["size_class"])
def _act_fwd_kernel(
    x_ptr,  # input, any layout
    y_ptr,  # result, contiguous
    c_ptr,  # _CONSTANTS in the compute dtype
    n,  # number of elements
    size_class,  # autotune key only: bit length of n
    S1,
    S2,
    S3,  # collapsed sizes (S0 is implied by n)
    x_s0,
    x_s1,
    x_s2,
    x_s3,  # input strides
    ACT: tl.constexpr,  # 0 gelu, 1 tanh gelu, 2 silu
    PRECISE: tl.constexpr,  # libdevice (compiled kernels)
    RANK: tl.constexpr,  # collapsed dims in use (0: contiguous, no index arithmetic)
    INT64: tl.constexpr,  # indices and offsets need 64 bits
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64) if INT64 else tl.program_id(0)
    ids = pid * BLOCK + tl.arange(0, BLOCK)
    mask = ids < n
    acc_t = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    x_offs = ids if RANK == 0 else strided_offsets(ids, S1, S2, S3, x_s0, x_s1, x_s2, x_s3, RANK)
    x = tl.load(x_ptr + x_offs, mask=mask).to(acc_t)
    y = _act(x, c_ptr, ACT, PRECISE)
    tl.store(y_ptr + ids, y.to(y_ptr.dtype.element_ty), mask=mask)


@rt.autotune(configs=_CONFIGS, key=_KEY)
@triton.jit(do_not_specialize=["size_class"])
def _act_bwd_kernel(
    x_ptr,  # saved input, any layout
    g_ptr,  # grad_output, any layout
    dx_ptr,  # grad_input, contiguous
    c_ptr,  # _CONSTANTS in the compute dtype
    n,  # number of elements
    size_class,  # autotune key only
    S1,
    S2,
    S3,  # collapsed sizes
    x_s0,
    x_s1,
    x_s2,
    x_s3,  # input strides
    g_s0,
    g_s1,
    g_s2,
    g_s3,  # grad_output strides (0 where expanded)
    ACT: tl.constexpr,
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
    g_offs = ids if RANK == 0 else strided_offsets(ids, S1, S2, S3, g_s0, g_s1, g_s2, g_s3, RANK)
    x = tl.load(x_ptr + x_offs, mask=mask).to(acc_t)
    g = tl.load(g_ptr + g_offs, mask=mask).to(acc_t)
    dx = g * _act_grad(x, c_ptr, ACT, PRECISE)
    tl.store(dx_ptr + ids, dx.to(dx_ptr.dtype.element_ty), mask=mask)


@rt.autotune(configs=_CONFIGS, key=_KEY)
@triton.jit(do_not_specialize=["size_class", "b_shift"])
def _gated_fwd_kernel(
    x_ptr,  # input (..., 2H), any layout
    y_ptr,  # result (..., H), contiguous
    c_ptr,  # _CONSTANTS in the compute dtype
    n,  # elements of the result
    size_class,  # autotune key only
    b_shift,  # H * input's last-dim stride: from an element of a to its partner in b
    S1,
    S2,
    S3,  # collapsed sizes of the result's shape
    x_s0,
    x_s1,
    x_s2,
    x_s3,  # strides of input[..., :H] over those dims
    ACT: tl.constexpr,  # the activation of a: 1 tanh gelu (geglu), 2 silu (swiglu)
    PRECISE: tl.constexpr,
    RANK: tl.constexpr,
    INT64: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64) if INT64 else tl.program_id(0)
    ids = pid * BLOCK + tl.arange(0, BLOCK)
    mask = ids < n
    acc_t = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    a_offs = ids if RANK == 0 else strided_offsets(ids, S1, S2, S3, x_s0, x_s1, x_s2, x_s3, RANK)
    a = tl.load(x_ptr + a_offs, mask=mask).to(acc_t)
    b = tl.load(x_ptr + a_offs + b_shift, mask=mask).to(acc_t)
    y = _act(a, c_ptr, ACT, PRECISE) * b
    tl.store(y_ptr + ids, y.to(y_ptr.dtype.element_ty), mask=mask)


@rt.autotune(configs=_CONFIGS, key=_KEY)
@triton.jit(do_not_specialize=["size_class", "b_shift", "H"])
def _gated_bwd_kernel(
    x_ptr,  # saved input (..., 2H), any layout
    g_ptr,  # grad_output (..., H), any layout
    dx_ptr,  # grad_input (..., 2H), contiguous
    c_ptr,  # _CONSTANTS in the compute dtype
    n,  # elements of grad_output
    size_class,  # autotune key only
    b_shift,  # H * input's last-dim stride
    H,  # half the last dim
    S1,
    S2,
    S3,  # collapsed sizes of grad_output's shape
    x_s0,
    x_s1,
    x_s2,
    x_s3,  # strides of input[..., :H]
    g_s0,
    g_s1,
    g_s2,
    g_s3,  # grad_output strides
    ACT: tl.constexpr,
    PRECISE: tl.constexpr,
    RANK: tl.constexpr,
    INT64: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64) if INT64 else tl.program_id(0)
    ids = pid * BLOCK + tl.arange(0, BLOCK)
    mask = ids < n
    acc_t = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    a_offs = ids if RANK == 0 else strided_offsets(ids, S1, S2, S3, x_s0, x_s1, x_s2, x_s3, RANK)
    g_offs = ids if RANK == 0 else strided_offsets(ids, S1, S2, S3, g_s0, g_s1, g_s2, g_s3, RANK)
    a = tl.load(x_ptr + a_offs, mask=mask).to(acc_t)
    b = tl.load(x_ptr + a_offs + b_shift, mask=mask).to(acc_t)
    g = tl.load(g_ptr + g_offs, mask=mask).to(acc_t)
    da = g * b * _act_grad(a, c_ptr, ACT, PRECISE)
    db = g * _act(a, c_ptr, ACT, PRECISE)
    # row r, column j of grad_output -> columns j and H + j of row r of the contiguous grad_input
    da_offs = ids + (ids // H) * H
    tl.store(dx_ptr + da_offs, da.to(dx_ptr.dtype.element_ty), mask=mask)
    tl.store(dx_ptr + da_offs + H, db.to(dx_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------


def _layout(shape, *tensors: torch.Tensor) -> tuple[list[int], list[list[int]], int, list[torch.Tensor]]:
    """(collapsed sizes, strides per tensor, RANK, tensors) for the kernels: RANK 0 when every
    tensor is contiguous in ``shape``; a tensor whose layout does not collapse to four dims comes
    back as a contiguous copy."""
    sizes, strides, contiguous, ts = flat_strides(*tensors, shape=shape)
    rank = 0
    if not contiguous:
        rank = 4
        while rank > 1 and sizes[4 - rank] == 1:
            rank -= 1
    return sizes, strides, rank, ts


def _constants(x: torch.Tensor) -> torch.Tensor:
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    return torch.tensor(_CONSTANTS, dtype=dtype, device=x.device)


def _grid(n: int):
    return lambda meta: (rt.cdiv(n, meta["BLOCK"]),)


def _gated_layout(x: torch.Tensor, *others: torch.Tensor):
    """(x, others, H, b_shift, sizes, strides, RANK) for a gated kernel: a = x[..., :H] indexed
    through the strides of that view, b at a fixed shift (H times the last-dim stride). When a's
    view and ``others`` (of a's shape) do not collapse to four dims together, x and the others
    are copied to contiguous ones first (rare: five or more dims that cannot merge)."""
    h = x.shape[-1] // 2
    shape = [*x.shape[:-1], h]
    try:
        collapse(shape, [x[..., :h].stride(), *(t.expand(shape).stride() for t in others)])
    except ValueError:
        x, others = x.contiguous(), tuple(t.contiguous() for t in others)
    sizes, strides, rank, _ = _layout(shape, x[..., :h], *others)
    return x, others, h, h * x.stride(-1), sizes, strides, rank


def _act_forward(x: torch.Tensor, act: int) -> torch.Tensor:
    y = rt.empty_like(x)
    n = x.numel()
    if n == 0:
        return y
    sizes, (x_s,), rank, (x,) = _layout(x.shape, x)
    _act_fwd_kernel[_grid(n)](
        x, y, _constants(x), n, n.bit_length(), *sizes[1:], *x_s,
        ACT=act, PRECISE=_PRECISE, RANK=rank, INT64=int64_indexing(x, n=n),
    )  # fmt: skip
    return y


def _act_backward(x: torch.Tensor, g: torch.Tensor, act: int) -> torch.Tensor:
    dx = rt.empty_like(x)
    n = x.numel()
    if n == 0:
        return dx
    sizes, (x_s, g_s), rank, (x, g) = _layout(x.shape, x, g)
    _act_bwd_kernel[_grid(n)](
        x, g, dx, _constants(x), n, n.bit_length(), *sizes[1:], *x_s, *g_s,
        ACT=act, PRECISE=_PRECISE, RANK=rank, INT64=int64_indexing(x, g, n=n),
    )  # fmt: skip
    return dx


def _gated_forward(x: torch.Tensor, act: int) -> torch.Tensor:
    h = x.shape[-1] // 2
    y = rt.empty((*x.shape[:-1], h), dtype=x.dtype, device=x.device)
    n = y.numel()
    if n == 0:
        return y
    x, _, h, b_shift, sizes, (a_s,), rank = _gated_layout(x)
    _gated_fwd_kernel[_grid(n)](
        x, y, _constants(x), n, n.bit_length(), b_shift, *sizes[1:], *a_s,
        ACT=act, PRECISE=_PRECISE, RANK=rank, INT64=int64_indexing(x, n=2 * n),
    )  # fmt: skip
    return y


def _gated_backward(x: torch.Tensor, g: torch.Tensor, act: int) -> torch.Tensor:
    dx = rt.empty_like(x)
    n = g.numel()
    if n == 0:
        return dx
    x, (g,), h, b_shift, sizes, (a_s, g_s), rank = _gated_layout(x, g)
    _gated_bwd_kernel[_grid(n)](
        x, g, dx, _constants(x), n, n.bit_length(), b_shift, h, *sizes[1:], *a_s, *g_s,
        ACT=act, PRECISE=_PRECISE, RANK=rank, INT64=int64_indexing(x, g, n=2 * n),
    )  # fmt: skip
    return dx


# ---------------------------------------------------------------------------------------------
# Custom ops (torch.ops.blitz.<name>, <name>_backward) and the public API
# ---------------------------------------------------------------------------------------------

_APPROXIMATE = {"none": _GELU, "tanh": _GELU_TANH}


@custom_op("gelu")
def gelu_op(input: torch.Tensor, approximate: str) -> torch.Tensor:
    """gelu of a floating tensor (``approximate`` 'none' or 'tanh', checked by ``gelu``)."""
    return _act_forward(input, _APPROXIMATE[approximate])


@gelu_op.register_fake
def _(input, approximate):
    return input.new_empty(input.shape)


@custom_op("gelu_backward")
def gelu_backward_op(input: torch.Tensor, grad_output: torch.Tensor, approximate: str) -> torch.Tensor:
    """grad_input of gelu from its saved input and grad_output."""
    return _act_backward(input, grad_output, _APPROXIMATE[approximate])


@gelu_backward_op.register_fake
def _(input, grad_output, approximate):
    return input.new_empty(input.shape)


def _gelu_setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(inputs[0])
    ctx.approximate = inputs[1]


def _gelu_backward(ctx, g: torch.Tensor):
    (x,) = ctx.saved_tensors
    return gelu_backward_op(x, g, ctx.approximate), None


gelu_op.register_autograd(_gelu_backward, setup_context=_gelu_setup_context)


def _half_last(shape):
    return (*shape[:-1], shape[-1] // 2)


silu_op, silu_backward_op = unary_op_pair(
    "silu", functools.partial(_act_forward, act=_SILU), functools.partial(_act_backward, act=_SILU),
    doc="x * sigmoid(x).",
)  # fmt: skip
swiglu_op, swiglu_backward_op = unary_op_pair(
    "swiglu", functools.partial(_gated_forward, act=_SILU), functools.partial(_gated_backward, act=_SILU),
    doc="silu(a) * b, input = [a, b] along the last dim.", out_shape=_half_last,
)  # fmt: skip
geglu_op, geglu_backward_op = unary_op_pair(
    "geglu", functools.partial(_gated_forward, act=_GELU_TANH), functools.partial(_gated_backward, act=_GELU_TANH),
    doc="gelu_tanh(a) * b, input = [a, b] along the last dim.", out_shape=_half_last,
)  # fmt: skip


def gelu(input: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """``torch.nn.functional.gelu``: x * Phi(x), or with ``approximate='tanh'``
    0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    if approximate not in _APPROXIMATE:
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    rt.check_float(input, "input")
    return gelu_op(input, approximate)


def silu(input: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """``torch.nn.functional.silu``: x * sigmoid(x) (``inplace`` is not supported)."""
    if inplace:
        raise NotImplementedError("silu(inplace=True) is not supported; use the out-of-place form")
    rt.check_float(input, "input")
    return silu_op(input)


def _check_gated(input: torch.Tensor, name: str) -> None:
    rt.check_float(input, "input")
    if input.dim() == 0 or input.shape[-1] % 2:
        raise ValueError(
            f"{name} splits the last dim of its input in halves [a, b]; it needs an even size, got shape "
            f"{tuple(input.shape)}"
        )


def swiglu(input: torch.Tensor) -> torch.Tensor:
    """SwiGLU as Llama's MLP uses it: silu(a) * b for input = [a, b], the halves of the last dim
    (a = input[..., :H], b = input[..., H:]); the result has last dim H."""
    _check_gated(input, "swiglu")
    return swiglu_op(input)


def geglu(input: torch.Tensor) -> torch.Tensor:
    """GeGLU with the tanh approximation (as Gemma's MLP and Liger): gelu(a, approximate='tanh') * b
    for input = [a, b], the halves of the last dim; the result has last dim H."""
    _check_gated(input, "geglu")
    return geglu_op(input)
