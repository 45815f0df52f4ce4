"""Plain calls give right verdicts: correct implementations with hand-written backwards
(``correct_kernels.py``) pass with nothing but the implementation, its inputs and a torch oracle
as the reference (no ``depth``, ``terms``, ``ulps`` or ``kinks``), where their outputs and
gradients cancel (softmax and norm backwards, attention's dS rows summing to 0, a norm at hidden
size 1) and where they accumulate with no declared depth (sums over 40 rows, means, norms);
and the same plain calls still reject bugs of the classes that hide in those places.
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from hypothesis import strategies as st

import gradcheck as gc
from gradcheck import profiles
from gradcheck import strategies as gs
from tests.gradcheck import correct_kernels as ck

F32_F64 = (torch.float32, torch.float64)
WITH_BF16 = (torch.float32, torch.float64, torch.bfloat16)


def _pairs() -> st.SearchStrategy:
    shape = gs.shapes(min_dims=1, max_dims=3, min_side=1, max_side=8, large=False)
    return shape.flatmap(lambda s: st.tuples(gs.tensors(s), gs.tensors(s)))


def _columns() -> st.SearchStrategy:
    shape = st.tuples(st.integers(1, 40), st.integers(1, 9))
    return gs.tensors(shape).map(lambda t: (t,))


def _torch_sum0(x: torch.Tensor) -> torch.Tensor:
    return torch.sum(x, 0)  # torch.*, not x.sum(0): that runs on NumPy arrays too, and NumPy code gets no VJP


def _torch_mean_last(x: torch.Tensor) -> torch.Tensor:
    return torch.mean(x, -1)


def _torch_layer_norm(x, w, b):
    return F.layer_norm(x, x.shape[-1:], w, b)


def _torch_rms_norm(x, w):
    return F.rms_norm(x, x.shape[-1:], w, 1e-6)


def _torch_swiglu(a, b):
    return F.silu(a) * b


def _torch_causal_attention(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


# name: (implementation, inputs, torch oracle, dtypes)
CASES = {
    "softmax": (
        ck.softmax,
        gs.rows_with_params(max_hidden=64, large=False),
        functools.partial(torch.softmax, dim=-1),
        WITH_BF16,
    ),
    "logsumexp": (ck.logsumexp, gs.rows_with_params(large=False), functools.partial(torch.logsumexp, dim=-1), F32_F64),
    "sum_dim0": (ck.sum_dim0, _columns(), _torch_sum0, F32_F64),
    "mean_last": (ck.mean_last, gs.rows_with_params(large=False), _torch_mean_last, F32_F64),
    "layer_norm": (ck.layer_norm, gs.rows_with_params(params=2, large=False), _torch_layer_norm, WITH_BF16),
    "rms_norm": (ck.rms_norm, gs.rows_with_params(params=1, large=False), _torch_rms_norm, WITH_BF16),
    # its two backward terms cancel to ~eps: only the simulated rounding of the oracle shows the scale
    "rms_norm_hidden_1": (
        ck.rms_norm,
        gs.rows_with_params(params=1, max_hidden=1, large=False),
        _torch_rms_norm,
        WITH_BF16,
    ),
    "gelu": (ck.gelu, gs.rows_with_params(large=False), F.gelu, F32_F64),
    "swiglu": (ck.swiglu, _pairs(), _torch_swiglu, F32_F64),
    "causal_attention": (
        ck.causal_attention,
        gs.attention_inputs(max_seq=33, max_head_dim=17),
        _torch_causal_attention,
        F32_F64,
    ),
    "smooth_l1": (ck.smooth_l1, _pairs(), F.smooth_l1_loss, F32_F64),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_correct_implementation_passes_a_plain_call(name):
    fn, inputs, oracle, dtypes = CASES[name]
    report = gc.verify(fn, inputs, reference=oracle, dtypes=dtypes, name=name)
    assert report.failures == []
    for dtype in dtypes:
        cells = {s.check: s for s in report.stats if s.dtype == str(dtype).removeprefix("torch.")}
        assert cells["backward"].examples > 0 and cells["forward"].examples > 0


# ---------------------------------------------------------------------------------------------
# the looser default still rejects the bugs that live where things cancel
# ---------------------------------------------------------------------------------------------


class _SoftmaxMissingTerm(torch.autograd.Function):
    """softmax backward without the - sum(g * y) term: right only where that sum is 0."""

    @staticmethod
    def forward(ctx, x):
        y = torch.softmax(x.float() if x.dtype != torch.float64 else x, -1).to(x.dtype)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return y * g


class _AttentionWithoutScale(ck.CausalAttention):
    """attention with the 1/sqrt(D) scale forgotten in the forward (right only at D=1)."""

    @staticmethod
    def forward(ctx, q, k, v):
        return ck.CausalAttention.forward(ctx, q * q.shape[-1] ** 0.5, k, v)


def _rms_norm_wrong_axis(x, w):
    """rms_norm whose dW sums over the hidden axis instead of the rows (a real attorch bug)."""

    class Wrong(ck.RMSNorm):
        @staticmethod
        def backward(ctx, g):
            dx, dw, _ = ck.RMSNorm.backward(ctx, g)
            x, _, rstd = ctx.saved_tensors
            wrong = (g.float() * x.float() * rstd).sum(-1).sum() * torch.ones_like(dw.float())
            return dx, wrong.to(dw.dtype), None

    return Wrong.apply(x, w)


# name: (implementation, inputs, torch oracle), each verified at BUG_DTYPES
BUGS = {
    "softmax_missing_term": (
        _SoftmaxMissingTerm.apply,
        gs.rows_with_params(large=False),
        functools.partial(torch.softmax, dim=-1),
    ),
    "attention_without_scale": (
        _AttentionWithoutScale.apply,
        gs.attention_inputs(max_seq=17, max_head_dim=9),
        _torch_causal_attention,
    ),
    "rms_norm_dw_wrong_axis": (_rms_norm_wrong_axis, gs.rows_with_params(params=1, large=False), _torch_rms_norm),
}
BUG_DTYPES = (torch.float32,)


@pytest.mark.parametrize("name", list(BUGS))
def test_a_bug_fails_a_plain_call(name):
    fn, inputs, oracle = BUGS[name]
    # the verdict is the point here, not the minimal example: no shrinking
    with profiles.without_shrinking(), pytest.raises(gc.VerificationError) as caught:
        gc.verify(fn, inputs, reference=oracle, dtypes=BUG_DTYPES)
    assert caught.value.check in ("forward", "backward", "backward_fd")


def test_a_torch_oracle_without_a_derivative_demands_none():
    """cross-entropy's class weight: torch gives no gradient, so none is demanded of the implementation."""

    @st.composite
    def weighted(draw):
        n, c = draw(st.integers(1, 6)), draw(st.integers(2, 7))
        logits = draw(gs.tensors((n, c)))
        target = draw(gs.class_targets((n,), c, ignore_index=None))
        weight = draw(gs.tensors((c,), elements="positive"))
        return logits, target, weight

    def ours(logits, target, weight):  # a correct implementation through torch's op, weight detached
        return F.cross_entropy(logits, target, weight=weight.detach())

    report = gc.verify(ours, weighted(), reference=F.cross_entropy, dtypes=(torch.float64,))
    assert report.failures == []


def test_a_reference_that_raises_is_named():
    def broken_reference(x):
        raise ValueError("boom")

    with pytest.raises(Exception, match=r"reference's forward \(.*broken_reference\) raised ValueError: boom"):
        gc.verify(lambda x: x * 2, gs.tensors().map(lambda t: (t,)), reference=broken_reference, max_examples=2)
