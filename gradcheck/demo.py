"""Planted bugs that show a failure report (``python -m gradcheck --ops relu --impl relu=gradcheck.demo:NAME``).

Each is a relu whose forward is right and whose backward has one bug class seen in real kernels.
"""

from __future__ import annotations

import torch

__all__ = ["relu_strided_bug", "relu_tail_bug"]


class _ReluStridedBug(torch.autograd.Function):
    """The backward reads grad_output's storage as if it were contiguous: right for contiguous
    grad_outputs, wrong for transposed, sliced or stride-0 ones."""

    @staticmethod
    def forward(ctx, x):
        y = torch.where(x < 0, torch.zeros_like(x), x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        contiguous_strides = torch.empty(g.shape, device="meta").stride()
        g_as_if_contiguous = g.as_strided(g.shape, contiguous_strides, g.storage_offset())
        return torch.where(y > 0, g_as_if_contiguous, torch.zeros_like(g))


class _ReluTailBug(torch.autograd.Function):
    """The backward works in blocks of 1024 elements and drops the last partial block."""

    @staticmethod
    def forward(ctx, x):
        y = torch.where(x < 0, torch.zeros_like(x), x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        dx = torch.where(y > 0, g, torch.zeros_like(g)).reshape(-1).clone()
        full = (dx.numel() // 1024) * 1024
        if full:  # the tail past the last full block keeps whatever was there: zero here
            dx[full:] = 0
        return dx.reshape(y.shape)


def relu_strided_bug(x: torch.Tensor) -> torch.Tensor:
    return _ReluStridedBug.apply(x)


def relu_tail_bug(x: torch.Tensor) -> torch.Tensor:
    return _ReluTailBug.apply(x)
