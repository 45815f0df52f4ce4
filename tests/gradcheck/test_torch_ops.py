"""No false positives: torch's own softmax, cross_entropy and conv2d pass the engine against NumPy references.

The references (forward and VJP, float64) are written here, independently of torch and of the
project's ``reference/`` package, so a disagreement points at the engine or at torch, not at
shared code.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import strategies as st

import gradcheck as gc
from gradcheck import strategies as gs

IGNORE_INDEX = -100
LOW_PRECISION = (torch.float16, torch.bfloat16)


def _dtype_id(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# ---------------------------------------------------------------------------------------------
# softmax
# ---------------------------------------------------------------------------------------------


def softmax_ref(x: np.ndarray, dim: int) -> np.ndarray:
    if x.size == 0:
        return x.copy()
    e = np.exp(x - x.max(axis=dim, keepdims=True))
    return e / e.sum(axis=dim, keepdims=True)


def softmax_vjp(x: np.ndarray, dim: int, g: np.ndarray) -> tuple:
    y = softmax_ref(x, dim)
    return y * (g - (g * y).sum(axis=dim, keepdims=True)), None


def softmax_vjp_terms(x: np.ndarray, dim: int, g: np.ndarray) -> tuple:
    """Sum of |terms| of y * (g - sum(g * y)), each y = exp(x - m) / sum carrying the rounding of
    x - m amplified by |x - m|: the backward rounds relative to this, not to its result, which
    cancels to 0 for a grad_output constant along ``dim``."""
    y = softmax_ref(x, dim)
    sized = y * (1.0 + np.abs(x - x.max(axis=dim, keepdims=True))) if x.size else y
    g_abs = np.abs(g)
    row_gy, row_g_sized = (g_abs * y).sum(axis=dim, keepdims=True), (g_abs * sized).sum(axis=dim, keepdims=True)
    return sized * (g_abs + row_gy) + y * row_g_sized, None


def softmax_depth(x: np.ndarray, dim: int) -> int:
    """The normaliser and the backward's g . y both sum along ``dim``."""
    return max(1, x.shape[dim]) if x.ndim else 1


@st.composite
def softmax_inputs(draw) -> tuple[torch.Tensor, int]:
    x = draw(gs.tensors(gs.shapes(min_dims=1, max_numel=1 << 12), elements="logits"))
    return x, draw(st.integers(-x.dim(), x.dim() - 1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, *LOW_PRECISION], ids=_dtype_id)
def test_torch_softmax_passes(dtype: torch.dtype) -> None:
    gc.verify(
        F.softmax,
        softmax_inputs(),
        reference=softmax_ref,
        reference_vjp=softmax_vjp,
        dtypes=(dtype,),
        vjp_terms=softmax_vjp_terms,
        name="F.softmax",
        depth=softmax_depth,
        ulps=4,
    )


# ---------------------------------------------------------------------------------------------
# cross_entropy
# ---------------------------------------------------------------------------------------------


def _log_softmax(x: np.ndarray) -> np.ndarray:
    """log_softmax over dim 1 (the class dim)."""
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _counted(targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mask of counted positions and the targets made safe to index, as (N, 1, *S)."""
    valid = targets != IGNORE_INDEX
    return valid, np.where(valid, targets, 0)[:, None]


def _position_losses(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """-log p_target per position (N, *S), as log1p(sum_{j != t} exp(x_j - m) + expm1(x_t - m)) - (x_t - m):
    two non-negative parts, so a loss near 0 (a confident right answer) keeps its relative accuracy."""
    valid, safe = _counted(targets)
    shifted = logits - logits.max(axis=1, keepdims=True)
    picked = np.take_along_axis(shifted, safe, axis=1)
    others = np.exp(shifted)
    np.put_along_axis(others, safe, 0.0, axis=1)
    losses = np.log1p(others.sum(axis=1, keepdims=True) + np.expm1(picked)) - picked
    return np.where(valid, losses[:, 0], 0.0)


def _softmax_minus_onehot(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """softmax - onehot along dim 1, the target's entry as minus the sum of the others (p_t - 1 would cancel)."""
    _, safe = _counted(targets)
    grad = np.exp(_log_softmax(logits))
    np.put_along_axis(grad, safe, 0.0, axis=1)
    np.put_along_axis(grad, safe, -grad.sum(axis=1, keepdims=True), axis=1)
    return grad


def _reduce(per_position: np.ndarray, valid: np.ndarray, reduction: str) -> np.ndarray:
    """(N, *S) -> the loss's shape: as is, summed, or averaged over the counted positions."""
    if reduction == "none":
        return per_position
    if reduction == "sum":
        return np.asarray(per_position.sum())
    count = valid.sum()
    return np.asarray(per_position.sum() / count if count else np.nan)  # torch: 0 / 0 is NaN when all are ignored


def _position_weights(valid: np.ndarray, g: np.ndarray, reduction: str) -> np.ndarray:
    """d loss / d loss_position, times grad_output: (N, *S)."""
    if reduction == "none":
        return np.where(valid, g, 0.0)
    count = valid.sum()
    if reduction == "mean":
        # torch's convention when every target is ignored (a NaN mean): the gradient is 0
        return np.where(valid, g / count if count else 0.0, 0.0)
    return np.where(valid, g, 0.0)


def cross_entropy_ref(logits: np.ndarray, targets: np.ndarray, *, reduction: str) -> np.ndarray:
    return _reduce(_position_losses(logits, targets), targets != IGNORE_INDEX, reduction)


def cross_entropy_vjp(logits: np.ndarray, targets: np.ndarray, g: np.ndarray, *, reduction: str) -> tuple:
    weights = _position_weights(targets != IGNORE_INDEX, g, reduction)
    return _softmax_minus_onehot(logits, targets) * weights[:, None], None


def cross_entropy_terms(logits: np.ndarray, targets: np.ndarray, *, reduction: str) -> np.ndarray:
    """Sum of |terms| of the loss m + log(sum exp(x - m)) - x[target], reduced like the loss: the
    terms cancel for a confident right answer after each is rounded at the dtype, and the sum
    (>= 1) rounds too, which moves its log by about u, whatever the loss (the 1 below)."""
    valid, safe = _counted(targets)
    picked = np.take_along_axis(logits, safe, axis=1)[:, 0]
    top = logits.max(axis=1)
    log_sum = picked + _position_losses(logits, targets) - top
    terms = _reduce(np.where(valid, np.abs(top) + np.abs(log_sum) + 1.0 + np.abs(picked), 0.0), valid, reduction)
    return np.nan_to_num(terms)  # all ignored under 'mean': the NaN loss has no terms


def cross_entropy_vjp_terms(logits: np.ndarray, targets: np.ndarray, g: np.ndarray, *, reduction: str) -> tuple:
    """Sum of |terms| of (softmax - onehot) * weight: p = exp(x - m) / sum carries the rounding of
    x - m amplified by |x - m|, and p_target - 1 cancels where p_target ~ 1."""
    valid, safe = _counted(targets)
    shifted = logits - logits.max(axis=1, keepdims=True)
    onehot = np.zeros(logits.shape)
    np.put_along_axis(onehot, safe, 1.0, axis=1)
    probs = np.exp(_log_softmax(logits))
    weights = np.abs(_position_weights(valid, g, reduction))[:, None]
    return (probs * (1.0 + np.abs(shifted)) + onehot) * weights, None


def cross_entropy_depth(logits: np.ndarray, targets: np.ndarray) -> int:
    """The normaliser sums C terms, the reduction every position."""
    return max(logits.shape[1], targets.size)


@st.composite
def cross_entropy_inputs(draw) -> tuple[torch.Tensor, torch.Tensor]:
    spatial = draw(st.sampled_from([(), (), (3,)]))
    n = draw(gs.sides(min_side=1, max_side=8))
    c = draw(gs.sides(min_side=1, max_side=12, large=False))
    while n * c * (spatial[0] if spatial else 1) > 1 << 14:
        n = max(1, n // 2)
    logits = draw(gs.tensors((n, c, *spatial), elements="logits"))
    return logits, draw(gs.class_targets((n, *spatial), c, ignore_index=IGNORE_INDEX))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, *LOW_PRECISION], ids=_dtype_id)
def test_torch_cross_entropy_passes(dtype: torch.dtype, reduction: str) -> None:
    gc.verify(
        functools.partial(F.cross_entropy, ignore_index=IGNORE_INDEX, reduction=reduction),
        cross_entropy_inputs(),
        reference=functools.partial(cross_entropy_ref, reduction=reduction),
        reference_vjp=functools.partial(cross_entropy_vjp, reduction=reduction),
        terms=functools.partial(cross_entropy_terms, reduction=reduction),
        vjp_terms=functools.partial(cross_entropy_vjp_terms, reduction=reduction),
        dtypes=(dtype,),
        name=f"F.cross_entropy[{reduction}]",
        depth=cross_entropy_depth,
        ulps=4,
        # measured on an H200 (torch 2.11): CUDA's reduced cross-entropy sums with atomics, so a rerun
        # differs in the last bits; compare the rerun within tolerance there instead of bitwise
        deterministic=not torch.cuda.is_available(),
    )


# ---------------------------------------------------------------------------------------------
# conv2d
# ---------------------------------------------------------------------------------------------


def _windows(h: int, w: int, ho: int, wo: int, stride, dilation):
    """For each kernel tap (i, j): the slices of the padded input that it reads for every output."""
    (sh, sw), (dh, dw) = stride, dilation
    for i in range(h):
        for j in range(w):
            yield i, j, (slice(i * dh, i * dh + sh * (ho - 1) + 1, sh), slice(j * dw, j * dw + sw * (wo - 1) + 1, sw))


def _conv_geometry(x: np.ndarray, w: np.ndarray, padding, dilation, stride) -> tuple[int, int]:
    (ph, pw), (dh, dw), (sh, sw) = padding, dilation, stride
    ho = (x.shape[2] + 2 * ph - dh * (w.shape[2] - 1) - 1) // sh + 1
    wo = (x.shape[3] + 2 * pw - dw * (w.shape[3] - 1) - 1) // sw + 1
    return ho, wo


def conv2d_ref(x, w, b, stride, padding, dilation, groups):
    """Direct convolution: one einsum per group and kernel tap."""
    ho, wo = _conv_geometry(x, w, padding, dilation, stride)
    (ph, pw) = padding
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    c_out, c_in_g = w.shape[0], w.shape[1]
    c_out_g = c_out // groups
    out = np.zeros((x.shape[0], c_out, ho, wo))
    for grp in range(groups):
        ins, outs = slice(grp * c_in_g, (grp + 1) * c_in_g), slice(grp * c_out_g, (grp + 1) * c_out_g)
        for i, j, (rows, cols) in _windows(w.shape[2], w.shape[3], ho, wo, stride, dilation):
            out[:, outs] += np.einsum("nchw,oc->nohw", xp[:, ins, rows, cols], w[outs, :, i, j])
    return out + b[None, :, None, None]


def conv2d_vjp(x, w, b, stride, padding, dilation, groups, g):
    ho, wo = _conv_geometry(x, w, padding, dilation, stride)
    (ph, pw) = padding
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    grad_xp, grad_w = np.zeros(xp.shape), np.zeros(w.shape)
    c_out, c_in_g = w.shape[0], w.shape[1]
    c_out_g = c_out // groups
    for grp in range(groups):
        ins, outs = slice(grp * c_in_g, (grp + 1) * c_in_g), slice(grp * c_out_g, (grp + 1) * c_out_g)
        for i, j, (rows, cols) in _windows(w.shape[2], w.shape[3], ho, wo, stride, dilation):
            grad_w[outs, :, i, j] += np.einsum("nchw,nohw->oc", xp[:, ins, rows, cols], g[:, outs])
            grad_xp[:, ins, rows, cols] += np.einsum("nohw,oc->nchw", g[:, outs], w[outs, :, i, j])
    grad_x = grad_xp[:, :, ph : ph + x.shape[2], pw : pw + x.shape[3]]
    return grad_x, grad_w, g.sum(axis=(0, 2, 3)), None, None, None, None


def conv2d_depth(x, w, b, stride, padding, dilation, groups) -> int:
    """Longest dot: C_in/groups * KH * KW (forward, grad_x), N * HO * WO (grad_w, grad_b)."""
    ho, wo = _conv_geometry(x, w, padding, dilation, stride)
    return max(
        w.shape[1] * w.shape[2] * w.shape[3], (w.shape[0] // groups) * w.shape[2] * w.shape[3], x.shape[0] * ho * wo
    )


def torch_conv2d(x, weight, bias, stride, padding, dilation, groups):
    """F.conv2d on canonical contiguous copies of the input and the weight. torch 2.13's CPU
    convolution returns wrong values for some layouts, all found by this test under the thorough
    profile: (1) a (2, 1, 1, 3) float32 weight with strides (3, 1, 3, 1) (contiguous and
    channels_last at once) on a (17, 1, 2, 5) input at stride (1, 3) is off by 7; (2) grouped, a
    (2, 2, 1, 2) weight with strides (4, 1, 2, 2) on a channels_last input, float32 and bfloat16;
    (3) grouped (2 groups of 1 channel) bfloat16 on a channels_last input of batch >= 16, off by 3.
    The copies keep this test about torch's arithmetic, which is right, not its layout dispatch."""
    canonical = torch.contiguous_format
    return F.conv2d(
        x.clone(memory_format=canonical), weight.clone(memory_format=canonical), bias, stride, padding, dilation, groups
    )


@st.composite
def conv2d_inputs(draw) -> tuple:
    geo = draw(gs.conv2d_geometries())
    x = draw(gs.tensors(geo.input_shape))
    w = draw(gs.tensors(geo.weight_shape))
    b = draw(gs.tensors((geo.c_out,)))
    return x, w, b, geo.stride, geo.padding, geo.dilation, geo.groups


# not float16: torch's CPU float16 convolution backward accumulates in half precision (grad_weight off
# by ~4x the bound for fp32 accumulation, which the float16 row assumes); bfloat16 accumulates in fp32
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=_dtype_id)
def test_torch_conv2d_passes(dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch) -> None:
    if torch.cuda.is_available() and dtype == torch.bfloat16:
        pytest.skip("cuDNN's bf16 convolution is outside the bf16 row's fp32-accumulation bound (seen on an H200)")
    # cuDNN runs fp32 convolutions on TF32 by default (measured: errors 400x the fp32 row on an H200);
    # this test checks IEEE fp32, so switch TF32 off for it
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    gc.verify(
        torch_conv2d,
        conv2d_inputs(),
        reference=conv2d_ref,
        reference_vjp=conv2d_vjp,
        dtypes=(dtype,),
        name="F.conv2d",
        depth=conv2d_depth,
        multilinear=True,
    )
