"""The engine's self-test zoo: deliberately wrong autograd Functions, each with its correct twin.

Every mutant emulates, with plain torch ops, a bug class seen in real Triton kernels. It is built
by a factory ``make_*(bug: bool)``: ``bug=True`` is the mutant, ``bug=False`` the same code path
with the bug switched off (the twin, which must be genuinely correct). A :class:`Case` bundles both
with the inputs strategy, an independent NumPy float64 reference and VJP, the tolerance metadata
and the checks expected to catch the mutant. ``tests/gradcheck/test_zoo.py`` runs them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from hypothesis import strategies as st
from torch.autograd import Function

from gradcheck import strategies as gs

__all__ = ["CASES", "CASES_BY_NAME", "Case"]


@dataclass(frozen=True)
class Case:
    """One mutant, its twin, and everything ``gc.verify`` needs to judge both."""

    name: str
    mutant: Callable[..., Any]
    twin: Callable[..., Any]
    inputs: st.SearchStrategy
    reference: Callable[..., Any]
    reference_vjp: Callable[..., Any]
    expected: tuple[str, ...]  # the engine checks allowed to catch the mutant
    doc: str  # the real-world bug class
    dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.float64)
    depth: Callable[..., int] | int = 1
    multilinear: bool = False
    ulps: float = 0.0
    kinks: Callable[..., float] | None = None
    vjp_terms: Callable[..., Any] | None = None  # sum of |terms| of a backward that cancels

    def verify_options(self) -> dict[str, Any]:
        """Keyword arguments of ``gc.verify`` shared by the mutant and the twin."""
        options = {
            "reference": self.reference,
            "reference_vjp": self.reference_vjp,
            "dtypes": self.dtypes,
            "depth": self.depth,
            "multilinear": self.multilinear,
            "ulps": self.ulps,
            "kinks": self.kinks,
        }
        if self.vjp_terms is not None:
            options["vjp_terms"] = self.vjp_terms
        return options


def _case(factory: Callable[[bool], Callable], **fields: Any) -> Case:
    """A case from a ``make_*`` factory: its name and docstring, the mutant and the twin."""
    name = factory.__name__.removeprefix("make_")
    doc = " ".join((factory.__doc__ or "").split())
    return Case(name=name, mutant=factory(True), twin=factory(False), doc=doc, **fields)


# ---------------------------------------------------------------------------------------------
# small helpers (torch side)
# ---------------------------------------------------------------------------------------------


def _dense_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Row-major strides of a contiguous tensor of ``shape``."""
    strides, running = [], 1
    for size in reversed(shape):
        strides.append(running)
        running *= max(size, 1)
    return tuple(reversed(strides))


def _read_as_dense(t: torch.Tensor) -> torch.Tensor:
    """``t``'s storage read from its offset with row-major strides: a pointer walked as if contiguous."""
    return t.as_strided(t.shape, _dense_strides(tuple(t.shape)), t.storage_offset())


def _tanh_slope(x: torch.Tensor) -> torch.Tensor:
    """tanh'(x) = 1 / cosh(x)^2, accurate to a few ulps everywhere (1 - tanh(x)^2 cancels for large |x|)."""
    return torch.cosh(x).square().reciprocal()


def _named(function: type[Function], name: str) -> Callable:
    """``function.apply``, with the op's name on the class (it shows in autograd's error messages)."""
    function.__name__ = function.__qualname__ = name
    return function.apply


# ---------------------------------------------------------------------------------------------
# NumPy float64 references (independent of torch)
# ---------------------------------------------------------------------------------------------


def _np_sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)), accurate in relative terms for both signs and without overflow."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def silu_ref(x):
    return x * _np_sigmoid(x)


def silu_vjp(x, g):
    return (g * _np_sigmoid(x) * (1.0 + x * _np_sigmoid(-x)),)


def tanh_ref(x):
    return np.tanh(x)


def tanh_vjp(x, g):
    return (g / np.cosh(x) ** 2,)  # 1 - tanh(x)^2 would lose digits where tanh(x) is near +-1


def sigmoid_ref(x):
    return _np_sigmoid(x)


def sigmoid_vjp(x, g):
    return (g * _np_sigmoid(x) * _np_sigmoid(-x),)


def exp_ref(x):
    return np.exp(x)


def exp_vjp(x, g):
    return (g * np.exp(x),)


def sin_ref(x):
    return np.sin(x)


def sin_vjp(x, g):
    return (g * np.cos(x),)


def square_ref(x):
    return x * x


def square_vjp(x, g):
    return (2.0 * x * g,)


def softplus_ref(x):
    return np.logaddexp(0.0, x)


def softplus_vjp(x, g):
    return (g * _np_sigmoid(x),)


def relu_ref(x):
    return np.maximum(x, 0.0)


def relu_vjp(x, g):
    return (np.where(x > 0, g, 0.0),)


def relu_kinks(x) -> float:
    """relu bends at 0: the smallest |x| is how far a perturbation may go."""
    return float(np.min(np.abs(x))) if x.size else math.inf


def matmul_ref(a, b):
    return a @ b


def matmul_vjp(a, b, g):
    return g @ b.swapaxes(-1, -2), a.swapaxes(-1, -2) @ g


def matmul_depth(a, b) -> int:
    """Longest dot product in the forward (K) or the backward (N for dA, M for dB)."""
    return max(a.shape[-2], a.shape[-1], b.shape[-1])


def mul_ref(a, b):
    return a * b


def mul_vjp(a, b, g):
    return g * b, g * a


def _np_sum_to(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``g`` over the dims that broadcasting added or stretched to reach ``shape``."""
    lead = g.ndim - len(shape)
    out = g.sum(axis=tuple(range(lead))) if lead else g
    stretched = tuple(d for d, s in enumerate(shape) if s == 1 and out.shape[d] != 1)
    return out.sum(axis=stretched, keepdims=True) if stretched else out


def add_ref(a, b):
    return a + b


def add_vjp(a, b, g):
    return _np_sum_to(g, a.shape), _np_sum_to(g, b.shape)


def add_depth(a, b) -> int:
    """The longest sum in the backward: output elements per element of the smaller operand."""
    out = math.prod(np.broadcast_shapes(a.shape, b.shape))
    return max(1, out // max(a.size, 1), out // max(b.size, 1))


def softmax_ref(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def softmax_vjp(x, g):
    y = softmax_ref(x)
    return (y * (g - (g * y).sum(axis=-1, keepdims=True)),)


def softmax_vjp_terms(x, g):
    """Sum of |terms| of y * (g - sum(g * y)), each y carrying the rounding of x - max amplified by
    |x - max|: the backward's rounding is relative to these, not to its (possibly cancelled) result."""
    y = softmax_ref(x)
    sized = y * (1.0 + np.abs(x - x.max(axis=-1, keepdims=True)))
    g_abs = np.abs(g)
    row_gy, row_g_sized = (g_abs * y).sum(axis=-1, keepdims=True), (g_abs * sized).sum(axis=-1, keepdims=True)
    return (sized * (g_abs + row_gy) + y * row_g_sized,)


def last_dim_depth(x, *rest) -> int:
    return max(1, x.shape[-1])


def _np_log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _np_cross_entropy_rows(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """log(sum_j exp(x_j - x_t)) as log1p(sum_{j != t} exp(x_j - m) + expm1(x_t - m)) - (x_t - m): both
    parts are non-negative, so a loss near 0 keeps its relative accuracy (lse - x_t would cancel)."""
    rows = np.arange(logits.shape[0])
    shifted = logits - logits.max(axis=1, keepdims=True)
    picked = shifted[rows, targets]
    others = np.exp(shifted)
    others[rows, targets] = 0.0
    return np.log1p(others.sum(axis=1) + np.expm1(picked)) - picked


def cross_entropy_mean_ref(logits, targets):
    return np.asarray(_np_cross_entropy_rows(logits, targets).mean())


def _np_cross_entropy_grad(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """softmax - onehot, the target's entry as minus the sum of the others (p_t - 1 would cancel where p_t ~ 1)."""
    rows = np.arange(logits.shape[0])
    grad = np.exp(_np_log_softmax(logits))
    grad[rows, targets] = 0.0
    grad[rows, targets] = -grad.sum(axis=1)
    return grad


def cross_entropy_mean_vjp(logits, targets, g):
    return _np_cross_entropy_grad(logits, targets) * (g / logits.shape[0]), None


def cross_entropy_rows_ref(logits, targets):
    return _np_cross_entropy_rows(logits, targets)


def cross_entropy_rows_vjp(logits, targets, g):
    return _np_cross_entropy_grad(logits, targets) * g[:, None], None


def cross_entropy_depth(logits, targets) -> int:
    """The softmax normaliser sums C terms, the mean N."""
    return max(logits.shape)


def _np_windows(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N, C, H//2, W//2, 4): the 2x2 windows of a stride-2 pool, row-major inside."""
    n, c, h, w = x.shape
    h2, w2 = h // 2, w // 2
    return x[:, :, : 2 * h2, : 2 * w2].reshape(n, c, h2, 2, w2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h2, w2, 4)


def max_pool_ref(x):
    return _np_windows(x).max(axis=-1)


def max_pool_vjp(x, g):
    n, c, h, w = x.shape
    h2, w2 = h // 2, w // 2
    winner = _np_windows(x).argmax(axis=-1)
    routed = (np.arange(4) == winner[..., None]) * g[..., None]  # (N, C, H2, W2, 4)
    grad = np.zeros(x.shape)
    grad[:, :, : 2 * h2, : 2 * w2] = (
        routed.reshape(n, c, h2, w2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, 2 * h2, 2 * w2)
    )
    return (grad,)


def max_pool_kinks(x) -> float:
    """A max is not differentiable at a tie: half the smallest gap between a window's top two."""
    top = np.sort(_np_windows(x), axis=-1)
    return float((top[..., -1] - top[..., -2]).min()) / 2 if top.size else math.inf


def neighbour_sum_ref(x):
    ahead = np.concatenate([x[1:], np.zeros(1)])
    return x + ahead


def neighbour_sum_vjp(x, g):
    behind = np.concatenate([np.zeros(1), g[:-1]])
    return (g + behind,)


def row_sum_ref(x):
    return x.sum(axis=-1)


def row_sum_vjp(x, g):
    return (np.broadcast_to(g[..., None], x.shape).copy(),)


# ---------------------------------------------------------------------------------------------
# the mutants
# ---------------------------------------------------------------------------------------------


def make_silu_grad_scaled(bug: bool) -> Callable:
    """SiLU whose backward carries a derivative constant off by 1e-3 relative (a hand-rounded coefficient)."""

    class SiluFunction(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * torch.sigmoid(x)

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            # 1 - sigmoid(x) as sigmoid(-x): no cancellation where sigmoid(x) rounds to 1
            slope = torch.sigmoid(x) * (1 + x * torch.sigmoid(-x))
            if bug:
                slope = slope * (1 + 1e-3)
            return g * slope

    return _named(SiluFunction, "silu")


def _make_matmul_wrong_entry(bug: bool, side: int) -> Callable:
    class MatmulFunction(Function):
        @staticmethod
        def forward(ctx, a, b):  # (M, K) @ (K, N)
            ctx.save_for_backward(a, b)
            return a @ b

        @staticmethod
        def backward(ctx, g):  # g: (M, N)
            a, b = ctx.saved_tensors
            grad_a = g @ b.mT  # (M, K)
            grad_b = a.mT @ g  # (K, N)
            if bug:
                # one lane of the dA tile weights one product 1% too much: d out[3, 0] / d a[3, 5] only
                grad_a[3, 5] += 1e-2 * g[3, 0] * b[5, 0]
            return grad_a, grad_b

    return _named(MatmulFunction, f"matmul{side}")


def make_matmul16_wrong_entry(bug: bool) -> Callable:
    """16x16 matmul with one wrong Jacobian entry in dA: torch.autograd.gradcheck's fast mode cannot see it."""
    return _make_matmul_wrong_entry(bug, 16)


def make_matmul64_wrong_entry(bug: bool) -> Callable:
    """64x64 matmul with one wrong Jacobian entry in dA, among 4096 x 4096 correct ones."""
    return _make_matmul_wrong_entry(bug, 64)


def make_matmul_missing_transpose(bug: bool) -> Callable:
    """Square matmul whose dB is A @ g instead of A^T @ g: shapes agree, so only the values show it."""

    class SquareMatmulFunction(Function):
        @staticmethod
        def forward(ctx, a, b):  # (S, S) @ (S, S)
            ctx.save_for_backward(a, b)
            return a @ b

        @staticmethod
        def backward(ctx, g):
            a, b = ctx.saved_tensors
            grad_b = (a if bug else a.mT) @ g
            return g @ b.mT, grad_b

    return _named(SquareMatmulFunction, "square_matmul")


def make_mul_grad_swapped(bug: bool) -> Callable:
    """Elementwise product whose backward unpacks the saved tensors in the wrong order (each gets its own value)."""

    class MulFunction(Function):
        @staticmethod
        def forward(ctx, a, b):
            ctx.save_for_backward(a, b)
            return a * b

        @staticmethod
        def backward(ctx, g):
            a, b = ctx.saved_tensors
            if bug:
                b, a = a, b
            return g * b, g * a

    return _named(MulFunction, "mul")


def _reduce_to(g: torch.Tensor, shape: tuple[int, ...], accumulate: bool) -> torch.Tensor:
    """``g`` brought down to a broadcast operand's ``shape``: summed (``accumulate``), or, like a
    plain store from every program into one slot, the last slice along each broadcast dim."""
    if accumulate:
        return g.sum_to_size(shape)
    out = g
    for _ in range(g.dim() - len(shape)):
        out = out.sum(0) if out.shape[0] == 0 else out[-1]
    for d, size in enumerate(shape):
        if size == 1 and out.shape[d] != 1:
            out = out.sum(d, keepdim=True) if out.shape[d] == 0 else out.narrow(d, out.shape[d] - 1, 1)
    return out


def make_add_broadcast_not_reduced(bug: bool) -> Callable:
    """Broadcasting add whose operand gradient is stored by every program instead of accumulated (last writer wins)."""

    class AddFunction(Function):
        @staticmethod
        def forward(ctx, a, b):
            ctx.shapes = (tuple(a.shape), tuple(b.shape))
            return a + b

        @staticmethod
        def backward(ctx, g):
            shape_a, shape_b = ctx.shapes
            # returning g un-reduced would not be a bug in an autograd.Function: autograd itself sums
            # a gradient of the broadcast shape down to the input's (validate_outputs' sum_to)
            return _reduce_to(g, shape_a, accumulate=not bug), _reduce_to(g, shape_b, accumulate=not bug)

    return _named(AddFunction, "add")


def _make_softmax(bug_axis: bool, bug_term: bool, name: str) -> Callable:
    class SoftmaxFunction(Function):
        @staticmethod
        def forward(ctx, x):  # softmax over the last dim
            y = torch.softmax(x, dim=-1)
            ctx.save_for_backward(y)
            return y

        @staticmethod
        def backward(ctx, g):
            (y,) = ctx.saved_tensors
            if bug_term:
                return y * g
            row_dot = (g * y).sum(dim=0 if bug_axis else -1, keepdim=True)
            return y * (g - row_dot)

    return _named(SoftmaxFunction, name)


def make_softmax_bwd_wrong_axis(bug: bool) -> Callable:
    """Softmax whose backward reduces sum(g * y) over the wrong axis (the result still broadcasts)."""
    return _make_softmax(bug_axis=bug, bug_term=False, name="softmax")


def make_softmax_bwd_missing_term(bug: bool) -> Callable:
    """Softmax whose backward forgets the -(g . y) term and returns y * g."""
    return _make_softmax(bug_axis=False, bug_term=bug, name="softmax")


def _cross_entropy_rows(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-row loss for (R, C) logits and (R,) targets, accurate where it is near 0 (a confident right
    answer): log1p(sum_{j != t} exp(x_j - m) + expm1(x_t - m)) - (x_t - m), two non-negative parts."""
    shifted = logits - logits.amax(dim=1, keepdim=True)
    picked = shifted.gather(1, targets.unsqueeze(1))
    is_target = torch.zeros_like(shifted, dtype=torch.bool).scatter_(1, targets.unsqueeze(1), True)
    others = torch.exp(shifted).masked_fill(is_target, 0).sum(dim=1, keepdim=True)
    return (torch.log1p(others + torch.expm1(picked)) - picked).squeeze(1)


def _cross_entropy_grad(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """d loss_r / d logits[r]: softmax minus the one-hot target, the target's entry summed from the
    other classes (p_t - 1 would cancel where p_t rounds to 1)."""
    probs = torch.softmax(logits, dim=1)
    is_target = torch.zeros_like(probs, dtype=torch.bool).scatter_(1, targets.unsqueeze(1), True)
    others = probs.masked_fill(is_target, 0)
    return torch.where(is_target, -others.sum(dim=1, keepdim=True), others)


def make_cross_entropy_missing_mean(bug: bool) -> Callable:
    """Cross-entropy (mean reduction) whose backward forgets the 1/N of the mean."""

    class CrossEntropyFunction(Function):
        @staticmethod
        def forward(ctx, logits, targets):  # (N, C), (N,)
            ctx.save_for_backward(logits, targets)
            return _cross_entropy_rows(logits, targets).mean()

        @staticmethod
        def backward(ctx, g):
            logits, targets = ctx.saved_tensors
            scale = g if bug else g / logits.shape[0]
            return _cross_entropy_grad(logits, targets) * scale, None

    return _named(CrossEntropyFunction, "cross_entropy")


def _torch_windows(x: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    h2, w2 = h // 2, w // 2
    return x[:, :, : 2 * h2, : 2 * w2].reshape(n, c, h2, 2, w2, 2).permute(0, 1, 2, 4, 3, 5).reshape(n, c, h2, w2, 4)


def make_max_pool_grad_to_neighbour(bug: bool) -> Callable:
    """2x2 max-pool whose backward decodes the argmax's window index column-major: the gradient hits a neighbour."""

    class MaxPoolFunction(Function):
        @staticmethod
        def forward(ctx, x):  # (N, C, H, W) -> (N, C, H//2, W//2)
            windows = _torch_windows(x)
            winner = windows.argmax(dim=-1)
            values = windows.gather(-1, winner.unsqueeze(-1)).squeeze(-1)
            ctx.save_for_backward(winner)
            ctx.input_shape = tuple(x.shape)
            return values

        @staticmethod
        def backward(ctx, g):
            (winner,) = ctx.saved_tensors
            n, c, h, w = ctx.input_shape
            h2, w2 = h // 2, w // 2
            row, col = (winner % 2, winner // 2) if bug else (winner // 2, winner % 2)
            routed = g.new_zeros(n, c, h2, w2, 4)
            routed.scatter_(-1, (row * 2 + col).unsqueeze(-1), g.unsqueeze(-1))
            grad = g.new_zeros(n, c, h, w)
            grad[:, :, : 2 * h2, : 2 * w2] = (
                routed.reshape(n, c, h2, w2, 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(n, c, 2 * h2, 2 * w2)
            )
            return grad

    return _named(MaxPoolFunction, "max_pool2x2")


def make_square_contiguous_only(bug: bool) -> Callable:
    """Square whose forward walks the input pointer as if contiguous (ignores strides and gaps)."""

    class SquareFunction(Function):
        @staticmethod
        def forward(ctx, x):
            source = _read_as_dense(x) if bug else x
            ctx.save_for_backward(x)
            return source * source

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return 2 * x * g

    return _named(SquareFunction, "square")


def make_sin_stride0_grad_output(bug: bool) -> Callable:
    """Sine whose backward takes unit inner stride to mean dense rows, misreading a stride-0 grad_output."""

    class SinFunction(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return torch.sin(x)

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            if bug and g.dim() and g.stride(-1) == 1:
                g = _read_as_dense(g)
            return g * torch.cos(x)

    return _named(SinFunction, "sin")


def make_tanh_grad_without_grad_output(bug: bool) -> Callable:
    """tanh whose backward adds a tiny eps (kept from a division guard): a zero grad_output still gives a gradient."""

    class TanhFunction(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return torch.tanh(x)

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            grad = g * _tanh_slope(x)
            return grad + 1e-30 if bug else grad

    return _named(TanhFunction, "tanh")


BLOCK = 64  # elements per emulated program in the blocked mutants


def make_softplus_tail_block_dropped(bug: bool) -> Callable:
    """Softplus whose backward launches n // BLOCK programs, not cdiv(n, BLOCK): the last partial block is lost."""

    class SoftplusFunction(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return torch.logaddexp(x, torch.zeros((), dtype=x.dtype, device=x.device))

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            slope = torch.sigmoid(x).reshape(-1)
            g_flat = g.reshape(-1)
            grad = torch.empty(slope.shape, dtype=g.dtype, device=g.device)
            programs = slope.numel() // BLOCK if bug else -(-slope.numel() // BLOCK)
            for p in range(programs):
                block = slice(p * BLOCK, (p + 1) * BLOCK)
                grad[block] = g_flat[block] * slope[block]
            return grad.reshape(x.shape)

    return _named(SoftplusFunction, "softplus")


def make_sigmoid_bwd_in_float32(bug: bool) -> Callable:
    """Sigmoid whose backward accumulates in float32 whatever the input dtype (autograd casts the result back)."""

    class SigmoidFunction(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return torch.sigmoid(x)

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            compute = torch.float32 if bug else g.dtype
            g_c, x_c = g.to(compute), x.to(compute)
            # sigmoid' = sigmoid(x) * sigmoid(-x): 1 - sigmoid(x) would cancel where sigmoid(x) rounds to 1
            return (g_c * torch.sigmoid(x_c) * torch.sigmoid(-x_c)).to(g.dtype)

    return _named(SigmoidFunction, "sigmoid")


def make_exp_grad_into_input(bug: bool) -> Callable:
    """exp whose backward writes the gradient into the saved input's storage to save memory (Liger-Kernel #272)."""

    class ExpFunction(Function):
        @staticmethod
        def forward(ctx, x):
            y = torch.exp(x)
            ctx.save_for_backward(x, y)
            return y

        @staticmethod
        def backward(ctx, g):
            x, y = ctx.saved_tensors
            grad = x.detach() if bug else torch.empty_like(x)
            grad.copy_(g * y)
            return grad

    return _named(ExpFunction, "exp")


def make_relu_outputs_unwritten(bug: bool) -> Callable:
    """relu whose forward stores only where x > 0 (a masked store used as a select): other outputs stay unwritten."""

    class ReluFunction(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            positive = x > 0
            out = torch.empty_like(x)
            out[positive] = x[positive]
            if not bug:
                out[~positive] = 0
            return out

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return torch.where(x > 0, g, torch.zeros_like(g))

    return _named(ReluFunction, "relu")


def make_neighbour_sum_reads_past_end(bug: bool) -> Callable:
    """y[i] = x[i] + x[i+1] whose load of x[i+1] is unmasked at the last element, reading one element past the end."""

    class NeighbourSumFunction(Function):
        @staticmethod
        def forward(ctx, x):  # (n,)
            if bug:
                ahead = x.as_strided(x.shape, x.stride(), x.storage_offset() + x.stride(0))
            else:
                ahead = torch.cat([x[1:], x.new_zeros(1)])
            return x + ahead

        @staticmethod
        def backward(ctx, g):
            return g + torch.cat([g.new_zeros(1), g[:-1]])

    return _named(NeighbourSumFunction, "neighbour_sum")


def make_tanh_first_grad_row(bug: bool) -> Callable:
    """Row-wise tanh whose backward never advances the grad_output row pointer: grad_output[0] for every row."""

    class TanhRowsFunction(Function):
        @staticmethod
        def forward(ctx, x):  # (R, C)
            ctx.save_for_backward(x)
            return torch.tanh(x)

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            rows = g[:1].expand_as(g) if bug else g
            return rows * _tanh_slope(x)

    return _named(TanhRowsFunction, "tanh_rows")


def make_row_sum_grad_is_mean(bug: bool) -> Callable:
    """Row sum whose backward was copied from the mean kernel and divides by the row length."""

    class RowSumFunction(Function):
        @staticmethod
        def forward(ctx, x):  # (..., C) -> (...)
            ctx.input_shape = tuple(x.shape)
            return x.sum(dim=-1)

        @staticmethod
        def backward(ctx, g):
            shape = ctx.input_shape
            grad = g.unsqueeze(-1).expand(shape)
            return grad / max(shape[-1], 1) if bug else grad.clone()

    return _named(RowSumFunction, "row_sum")


ROWS_PER_PROGRAM = 64  # rows one emulated program handles per step
MAX_PROGRAMS = 32  # a persistent grid: 32 programs cover 2048 rows per sweep


def make_cross_entropy_rows_past_2048(bug: bool) -> Callable:
    """Per-row cross-entropy on a persistent grid of 32 x 64 rows with no grid-stride loop: rows past 2048 are lost."""

    class CrossEntropyRowsFunction(Function):
        @staticmethod
        def forward(ctx, logits, targets):  # (N, C), (N,) -> (N,)
            ctx.save_for_backward(logits, targets)
            n = logits.shape[0]
            loss = torch.empty(n, dtype=logits.dtype, device=logits.device)
            programs = min(-(-n // ROWS_PER_PROGRAM), MAX_PROGRAMS)
            sweep = programs * ROWS_PER_PROGRAM
            for p in range(programs):
                starts = [p * ROWS_PER_PROGRAM] if bug else range(p * ROWS_PER_PROGRAM, n, sweep)
                for start in starts:
                    rows = slice(start, start + ROWS_PER_PROGRAM)
                    loss[rows] = _cross_entropy_rows(logits[rows], targets[rows])
            return loss

        @staticmethod
        def backward(ctx, g):
            logits, targets = ctx.saved_tensors
            return _cross_entropy_grad(logits, targets) * g.unsqueeze(1), None

    return _named(CrossEntropyRowsFunction, "cross_entropy_rows")


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------


def _single(shape: Any, **options: Any) -> st.SearchStrategy[tuple]:
    """One float tensor, as a 1-tuple of arguments."""
    return gs.tensors(shape, **options).map(lambda x: (x,))


@st.composite
def _same_shape_pair(draw, shape: st.SearchStrategy) -> tuple[torch.Tensor, torch.Tensor]:
    shp = draw(shape)
    return draw(gs.tensors(shp)), draw(gs.tensors(shp))


@st.composite
def _broadcast_pair(draw) -> tuple[torch.Tensor, torch.Tensor]:
    shape_a, shape_b = draw(gs.broadcastable_shapes(max_numel=1 << 12))
    return draw(gs.tensors(shape_a)), draw(gs.tensors(shape_b))


@st.composite
def _square_matmul_pair(draw) -> tuple[torch.Tensor, torch.Tensor]:
    (side,) = draw(gs.shapes(min_dims=1, max_dims=1, min_side=1, max_side=12, large=False, max_numel=129))
    return draw(gs.tensors((side, side))), draw(gs.tensors((side, side)))


@st.composite
def _classification(draw, rows: st.SearchStrategy[int], classes: st.SearchStrategy[int]) -> tuple:
    n, c = draw(rows), draw(classes)
    logits = draw(gs.tensors((n, c), elements="logits"))
    return logits, draw(gs.class_targets((n,), c, ignore_index=None))


def _matrix_pair(side: int) -> st.SearchStrategy[tuple]:
    return st.tuples(gs.tensors((side, side)), gs.tensors((side, side)))


_SMALL = gs.shapes(max_numel=1 << 12)
_MATRICES = gs.shapes(min_dims=2, max_dims=2, min_side=1, max_numel=1 << 12)

# ---------------------------------------------------------------------------------------------
# the cases
# ---------------------------------------------------------------------------------------------

CASES: list[Case] = [
    _case(
        make_silu_grad_scaled,
        inputs=_single(_SMALL),
        reference=silu_ref,
        reference_vjp=silu_vjp,
        dtypes=(torch.float64,),
        ulps=4,
        expected=("backward",),
    ),
    _case(
        make_matmul16_wrong_entry,
        inputs=_matrix_pair(16),
        reference=matmul_ref,
        reference_vjp=matmul_vjp,
        depth=matmul_depth,
        multilinear=True,
        expected=("backward",),
    ),
    _case(
        make_matmul64_wrong_entry,
        inputs=_matrix_pair(64),
        reference=matmul_ref,
        reference_vjp=matmul_vjp,
        depth=matmul_depth,
        multilinear=True,
        expected=("backward",),
    ),
    _case(
        make_matmul_missing_transpose,
        inputs=_square_matmul_pair(),
        reference=matmul_ref,
        reference_vjp=matmul_vjp,
        depth=matmul_depth,
        multilinear=True,
        expected=("backward",),
    ),
    _case(
        make_mul_grad_swapped,
        inputs=_same_shape_pair(_SMALL),
        reference=mul_ref,
        reference_vjp=mul_vjp,
        multilinear=True,
        expected=("backward",),
    ),
    _case(
        make_add_broadcast_not_reduced,
        inputs=_broadcast_pair(),
        reference=add_ref,
        reference_vjp=add_vjp,
        depth=add_depth,
        multilinear=True,
        expected=("backward",),
    ),
    _case(
        make_softmax_bwd_wrong_axis,
        inputs=_single(_MATRICES, elements="logits"),
        reference=softmax_ref,
        reference_vjp=softmax_vjp,
        vjp_terms=softmax_vjp_terms,
        depth=last_dim_depth,
        ulps=4,
        expected=("backward",),
    ),
    _case(
        make_softmax_bwd_missing_term,
        inputs=_single(_MATRICES, elements="logits"),
        reference=softmax_ref,
        reference_vjp=softmax_vjp,
        vjp_terms=softmax_vjp_terms,
        depth=last_dim_depth,
        ulps=4,
        expected=("backward",),
    ),
    _case(
        make_cross_entropy_missing_mean,
        inputs=_classification(st.integers(1, 16), st.integers(1, 10)),
        reference=cross_entropy_mean_ref,
        reference_vjp=cross_entropy_mean_vjp,
        depth=cross_entropy_depth,
        ulps=4,
        expected=("backward",),
    ),
    _case(
        make_max_pool_grad_to_neighbour,
        # at most 2 * 2 * 8 * 8 = 256 elements: "separated" values are then all distinct (no ties)
        inputs=_single(
            st.tuples(st.integers(1, 2), st.integers(1, 2), st.integers(2, 8), st.integers(2, 8)), elements="separated"
        ),
        reference=max_pool_ref,
        reference_vjp=max_pool_vjp,
        kinks=max_pool_kinks,
        expected=("backward",),
    ),
    _case(
        make_square_contiguous_only,
        inputs=_single(_SMALL),
        reference=square_ref,
        reference_vjp=square_vjp,
        expected=("forward", "raises"),
    ),
    _case(
        make_sin_stride0_grad_output,
        inputs=_single(_MATRICES),
        reference=sin_ref,
        reference_vjp=sin_vjp,
        ulps=4,
        expected=("backward", "raises"),
    ),
    _case(
        make_tanh_grad_without_grad_output,
        inputs=_single(_SMALL),
        reference=tanh_ref,
        reference_vjp=tanh_vjp,
        ulps=4,
        expected=("zero_grad",),
    ),
    _case(
        make_softplus_tail_block_dropped,
        inputs=_single(_SMALL),
        reference=softplus_ref,
        reference_vjp=softplus_vjp,
        ulps=4,
        expected=("backward",),
    ),
    _case(
        make_sigmoid_bwd_in_float32,
        inputs=_single(_SMALL),
        reference=sigmoid_ref,
        reference_vjp=sigmoid_vjp,
        ulps=4,
        expected=("backward",),
    ),
    # expand=False: an in-place write into a broadcast (stride-0) input raises in torch before it corrupts anything;
    # "raises": a second backward through the same graph (the Jacobian check) trips autograd's saved-tensor check
    _case(
        make_exp_grad_into_input,
        inputs=_single(_SMALL, expand=False),
        reference=exp_ref,
        reference_vjp=exp_vjp,
        ulps=4,
        expected=("guards", "raises"),
    ),
    _case(
        make_relu_outputs_unwritten,
        inputs=_single(_SMALL, elements="separated"),
        reference=relu_ref,
        reference_vjp=relu_vjp,
        kinks=relu_kinks,
        expected=("forward",),
    ),
    _case(
        make_neighbour_sum_reads_past_end,
        inputs=_single(st.tuples(gs.sides(min_side=1, max_side=16))),
        reference=neighbour_sum_ref,
        reference_vjp=neighbour_sum_vjp,
        dtypes=(torch.float32,),
        multilinear=True,
        depth=2,
        expected=("forward",),
    ),
    _case(
        make_tanh_first_grad_row,
        inputs=_single(_MATRICES),
        reference=tanh_ref,
        reference_vjp=tanh_vjp,
        ulps=4,
        expected=("backward",),
    ),
    _case(
        make_row_sum_grad_is_mean,
        inputs=_single(gs.shapes(min_dims=1, max_numel=1 << 12)),
        reference=row_sum_ref,
        reference_vjp=row_sum_vjp,
        depth=last_dim_depth,
        multilinear=True,
        expected=("backward",),
    ),
    _case(
        make_cross_entropy_rows_past_2048,
        # half the examples past 2048 rows, so the derandomized ci profile reaches them every run
        inputs=_classification(st.one_of(st.integers(1, 40), st.sampled_from(gs.LARGE_SIZES)), st.integers(1, 10)),
        reference=cross_entropy_rows_ref,
        reference_vjp=cross_entropy_rows_vjp,
        depth=cross_entropy_depth,
        ulps=4,
        expected=("forward",),
    ),
]

CASES_BY_NAME: dict[str, Case] = {case.name: case for case in CASES}
