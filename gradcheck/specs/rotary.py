"""Catalog entry for rotary_embedding: the half-rotation layout of Llama-style models, x of shape
(B, H, T, D) (heads before time, as attention takes q and k), cos and sin tables of shape (T, D)
broadcast over batch and heads; all three get gradients, as in torch."""

from __future__ import annotations

import torch

import reference.rotary
from gradcheck import strategies as gs
from gradcheck.ops import OpSpec

__all__ = ["SPECS", "rotary_embedding"]


def rotary_embedding(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """torch's reading of the op (the Hugging Face Llama ``apply_rotary_pos_emb`` for one tensor):
    ``x * cos + rotate_half(x) * sin`` with ``rotate_half(x) = cat(-x2, x1)`` along the last dim;
    x (B, H, T, D), cos and sin (T, D)."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def _inputs(dtype: torch.dtype):
    return gs.rotary_inputs(max_batch=2, max_heads=3, max_seq=64, max_head_dim=64)


def _depth(x, cos, sin) -> int:
    """Two products per output; the tables' gradients sum over batch and heads."""
    return max(2, x.shape[0] * x.shape[1])


SPECS = [
    OpSpec(
        name="rotary_embedding",
        reference=reference.rotary.rotary_embedding,
        reference_vjp=reference.rotary.rotary_embedding_vjp,
        inputs=_inputs,
        depth=_depth,
        torch_fn=rotary_embedding,
        doc="rotary position embedding, half-rotation layout: x (B, H, T, D) * cos + rotate_half(x) * sin, "
        "tables (T, D); x and both tables get gradients",
    ),
]
