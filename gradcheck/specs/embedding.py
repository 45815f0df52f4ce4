"""Catalog entry for embedding (F.embedding(input, weight, padding_idx))."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import strategies as st

import reference.embedding
from gradcheck import strategies as gs
from gradcheck.ops import OpSpec
from gradcheck.specs._common import MAX_NUMEL

__all__ = ["SPECS"]

#: Vocabulary sizes: tiny (every index repeats), and not powers of 2 (a 33-row or 1000-row table).
_VOCABS = st.one_of(st.integers(1, 12), st.sampled_from((17, 33, 100, 1000, 1025)))


@st.composite
def _inputs(draw, dtype: torch.dtype):
    """(indices, weight, padding_idx): int64 indices of 1 to 3 dims (sometimes empty), a (V, D)
    table, and padding_idx None half the time, else a row (negative now and then, as torch allows).

    Repeated indices are the common case: the indices come uniform over the table, from a handful of
    rows (heavy repeats), or hitting the padding row often."""
    vocab = draw(_VOCABS)
    d = draw(gs.sides(min_side=1, max_side=16, awkward=True, large=True))
    d = min(d, max(1, MAX_NUMEL // vocab))
    shape = draw(gs.shapes(min_dims=1, max_dims=3, max_side=12, max_numel=max(1, MAX_NUMEL // d)))
    padding_idx = None
    if draw(st.booleans()):
        padding_idx = draw(st.integers(-vocab, vocab - 1))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(("uniform", "uniform", "few", "padding")))
    if kind == "few":
        pool = rng.integers(0, vocab, draw(st.integers(1, 3)))
        idx = rng.choice(pool, shape)
    else:
        idx = rng.integers(0, vocab, shape)
        if kind == "padding" and padding_idx is not None:
            idx = np.where(rng.random(shape) < 0.5, padding_idx % vocab, idx)
    weight = draw(gs.tensors((vocab, d), elements=st.sampled_from(("normal", "normal", "integers"))))
    return torch.from_numpy(np.asarray(idx, dtype=np.int64)), weight, padding_idx


def _depth(indices, weight, padding_idx) -> int:
    """The weight gradient of a row sums one grad_output row per lookup: the most repeated index."""
    return int(np.bincount(np.asarray(indices).reshape(-1), minlength=1).max()) if np.size(indices) else 1


def _kinks(indices, weight, padding_idx) -> float:
    """Linear in the weight, so smooth; but the padding row's gradient is zero by definition, not
    the derivative (its lookups do move the output): finite differences are skipped for an example
    that looks the padding row up (the reference VJP still checks it there)."""
    if padding_idx is not None and np.any(np.asarray(indices) == padding_idx % weight.shape[0]):
        return 0.0
    return np.inf


SPECS = [
    OpSpec(
        name="embedding",
        reference=reference.embedding.embedding,
        reference_vjp=reference.embedding.embedding_vjp,
        inputs=_inputs,
        depth=_depth,
        kinks=_kinks,
        multilinear=True,  # the weight gradient is a sum of grad_output rows: |g| bounds its terms
        torch_fn=F.embedding,
        doc="the weight rows at the indices (any index shape, repeated indices, a padding_idx); the weight "
        "gradient sums the grad_output rows of repeated indices, zero for the padding row",
        tags=("indexing",),
    ),
]
