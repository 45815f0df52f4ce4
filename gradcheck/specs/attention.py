"""Catalog entry for scaled_dot_product_attention: q, k, v of shape (B, H, T, D) with T and D
not powers of two now and then, causal or not, the default scale 1/sqrt(D) or an explicit one.

The catalog calls it ``(q, k, v, is_causal, scale)``, both plain values: torch's ``scale`` is
keyword-only, so ``torch_fn`` is a thin wrapper that passes them by name (no mask tensor, no
dropout)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import strategies as st

import reference.attention
from gradcheck import strategies as gs
from gradcheck.ops import OpSpec

__all__ = ["SPECS", "scaled_dot_product_attention"]

#: Elements of the (B, H, T, T) score matrix at most: the reference's float64 VJP and the engine's
#: sensitivity probes each build it several times per example.
_MAX_SCORES = 1 << 14


def scaled_dot_product_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, is_causal: bool = False, scale: float | None = None
) -> torch.Tensor:
    """``F.scaled_dot_product_attention(q, k, v, is_causal=is_causal, scale=scale)``."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=is_causal, scale=scale)


@st.composite
def _inputs(draw, dtype: torch.dtype):
    """(q, k, v, is_causal, scale): T up to 129 (past the block multiples 64 and 128 of
    flash-attention kernels), D up to 65 (odd head dims included)."""
    q, k, v = draw(gs.attention_inputs(max_batch=2, max_heads=3, max_seq=129, max_head_dim=65))
    b, h, t, _ = q.shape
    while b * h * t * t > _MAX_SCORES and b * h > 1:  # long sequences keep one batch and head
        h, b = (h - 1, b) if h > 1 else (h, b - 1)
    q, k, v = (a[:b, :h] for a in (q, k, v))
    is_causal = draw(st.booleans())
    scale = draw(st.sampled_from((None, None, None, 0.3, 1.0, 2.0)))
    return q, k, v, is_causal, scale


def _depth(q, k, v, is_causal, scale) -> int:
    """Scores sum over D; the softmax and P v over T (keys); the backward's dv, dq and dk over T,
    dP over D."""
    return max(q.shape[-1], q.shape[-2], 1)


SPECS = [
    OpSpec(
        name="scaled_dot_product_attention",
        reference=reference.attention.scaled_dot_product_attention,
        reference_vjp=reference.attention.scaled_dot_product_attention_vjp,
        inputs=_inputs,
        depth=_depth,
        ulps=4,  # exp and a division
        torch_fn=scaled_dot_product_attention,
        doc="softmax(q k^T * scale [causal]) v over (B, H, T, D); q, k and v get gradients",
        tags=("dot",),
    ),
]
