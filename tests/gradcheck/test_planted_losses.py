"""Planted bugs in losses and attention, each a real class of bug shipped in a Triton kernel library,
caught by ``verify_op`` with the catalog's default strategies and no aimed inputs:

- the smooth-L1 threshold tested on the signed difference (attorch: ``d < beta`` for ``|d| < beta``);
- a fused linear-cross-entropy whose ``reduction='none'`` backward scales every row by
  ``grad_output[0]`` (Liger);
- an attention backward missing the softmax scale in dq and dk.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import gradcheck as gc
from gradcheck import profiles


def _smooth_l1_signed_threshold(x, y, size_average=None, reduce=None, reduction="mean", beta=1.0):
    """smooth_l1_loss with the quadratic branch chosen by ``d < beta``: every d below -beta is
    squared instead of taken linearly (and beta = 0 divides by zero there)."""
    d = x - y
    loss = torch.where(d < beta, 0.5 * d * d / beta, d.abs() - 0.5 * beta)
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.mean()


class _LinearCrossEntropyFirstGrad(torch.autograd.Function):
    """A fused linear-cross-entropy whose backward, with ``reduction='none'``, uses grad_output[0]
    for every row (Liger's bug); the forward and the other reductions are right."""

    @staticmethod
    def forward(ctx, hidden, weight, target, bias, ignore_index, reduction):
        logits = (hidden.float() @ weight.float().T) + (0.0 if bias is None else bias.float())
        loss = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction=reduction)
        ctx.save_for_backward(hidden, weight, target, logits)
        ctx.has_bias, ctx.ignore_index, ctx.reduction = bias is not None, ignore_index, reduction
        return loss.to(hidden.dtype)

    @staticmethod
    def backward(ctx, g):
        hidden, weight, target, logits = ctx.saved_tensors
        counted = target != ctx.ignore_index
        d_logits = torch.softmax(logits, dim=-1)
        rows = torch.arange(len(target))[counted]
        d_logits[rows, target[counted]] -= 1.0
        d_logits = d_logits * counted[:, None]
        if ctx.reduction == "none":
            d_logits = d_logits * g.float().reshape(-1)[0]  # the bug: one grad_output for all rows
        elif ctx.reduction == "sum":
            d_logits = d_logits * g.float()
        else:
            d_logits = d_logits * (g.float() / counted.sum())
        d_hidden = (d_logits @ weight.float()).to(hidden.dtype)
        d_weight = (d_logits.T @ hidden.float()).to(weight.dtype)
        d_bias = d_logits.sum(0).to(weight.dtype) if ctx.has_bias else None
        return d_hidden, d_weight, None, d_bias, None, None


def _linear_cross_entropy_first_grad(hidden, weight, target, bias=None, ignore_index=-100, reduction="mean"):
    return _LinearCrossEntropyFirstGrad.apply(hidden, weight, target, bias, ignore_index, reduction)


class _AttentionWithoutScale(torch.autograd.Function):
    """Attention whose backward leaves the softmax scale out of dq and dk (the forward is right)."""

    @staticmethod
    def forward(ctx, q, k, v, is_causal, scale):
        c = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
        s = (q.float() @ k.float().transpose(-1, -2)) * c
        if is_causal:
            t_q, t_k = s.shape[-2:]
            s = s.masked_fill(~torch.ones(t_q, t_k, dtype=torch.bool).tril(), -math.inf)
        p = torch.softmax(s, dim=-1)
        ctx.save_for_backward(q, k, v, p)
        return (p @ v.float()).to(q.dtype)

    @staticmethod
    def backward(ctx, g):
        q, k, v, p = ctx.saved_tensors
        g = g.float()
        dv = p.transpose(-1, -2) @ g
        dp = g @ v.float().transpose(-1, -2)
        ds = p * (dp - (dp * p).sum(-1, keepdim=True))
        dq = ds @ k.float()  # the bug: times the scale is missing
        dk = ds.transpose(-1, -2) @ q.float()  # likewise
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None


def _attention_without_scale(q, k, v, is_causal=False, scale=None):
    return _AttentionWithoutScale.apply(q, k, v, is_causal, scale)


@pytest.mark.parametrize(
    ("name", "buggy", "check"),
    [
        ("smooth_l1_loss", _smooth_l1_signed_threshold, "forward"),
        ("linear_cross_entropy", _linear_cross_entropy_first_grad, "backward"),
        ("scaled_dot_product_attention", _attention_without_scale, "backward"),
    ],
    ids=["smooth_l1_signed_threshold", "linear_cross_entropy_grad_output_0", "attention_backward_without_scale"],
)
def test_a_planted_bug_is_caught_by_the_catalog(name, buggy, check):
    # the verdict is the point, not the minimal example: no shrinking
    with profiles.without_shrinking(), pytest.raises(gc.VerificationError) as caught:
        gc.verify_op(name, impl=buggy, dtypes=[torch.float32], max_findings=1)
    assert caught.value.check == check, str(caught.value)
