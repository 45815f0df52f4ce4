"""gs.rotary_inputs: (x, cos, sin) for the half-rotation rotary embedding, with genuine tables."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings

import gradcheck as gc
from gradcheck import strategies as gs


@settings(max_examples=30, database=None)
@given(gs.rotary_inputs(max_batch=3, max_heads=4, max_seq=40, max_head_dim=20))
def test_shapes_agree_and_the_tables_are_rotations(inputs):
    x, cos, sin = inputs
    b, h, t, d = x.shape
    assert d % 2 == 0 and d <= 20 and b <= 3 and h <= 4
    assert cos.shape == sin.shape == (t, d)
    assert x.dtype == cos.dtype == sin.dtype == torch.float64
    np.testing.assert_allclose((cos * cos + sin * sin).numpy(), 1.0, rtol=1e-14)
    # the two halves share their angles; the first frequency is 1, so successive positions step by 1 radian
    np.testing.assert_array_equal(cos[:, : d // 2].numpy(), cos[:, d // 2 :].numpy())
    if t > 1:
        angle = np.arctan2(sin[1:, 0].numpy(), cos[1:, 0].numpy()) - np.arctan2(
            sin[:-1, 0].numpy(), cos[:-1, 0].numpy()
        )
        np.testing.assert_allclose(np.cos(angle), np.cos(1.0), atol=1e-12)


def test_tables_start_at_position_zero_with_the_identity():
    cos, sin = gs.rotary_tables(np.arange(3), 6)
    np.testing.assert_array_equal(cos[0], 1.0)
    np.testing.assert_array_equal(sin[0], 0.0)
    with pytest.raises(ValueError, match="head_dim must be even"):
        gs.rotary_tables(np.arange(3), 5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_head_dim": 1}, "max_head_dim must be >= 2"),
        ({"base": 1.0}, "base must be a number > 1"),
        ({"max_seq": 0}, "max_seq must be >= 1"),
    ],
)
def test_arguments_are_checked_when_the_strategy_is_built(kwargs, message):
    with pytest.raises(ValueError, match=message):
        gs.rotary_inputs(**kwargs)


def test_a_users_rotary_is_verified_against_the_catalogs_torch_reading():
    def mine(x, cos, sin):  # the same op written as pairs of rotations (each half of a table used)
        half = x.shape[-1] // 2
        x1, x2 = x[..., :half], x[..., half:]
        c1, c2, s1, s2 = cos[..., :half], cos[..., half:], sin[..., :half], sin[..., half:]
        return torch.cat((x1 * c1 - x2 * s1, x2 * c2 + x1 * s2), dim=-1)

    torch_fn = gc.catalog()["rotary_embedding"].torch_fn
    report = gc.verify(
        mine, gs.rotary_inputs(max_seq=17, max_head_dim=10), reference=torch_fn, dtypes=(torch.float32,), max_examples=5
    )
    assert report.failures == []
