"""scaled_dot_product_attention: property tests through the engine, plus the edge cases it does not draw."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import gradcheck as gc
import kernels.attention as ka
import reference.attention
from gradcheck.tolerances import assert_close
from kernels import _runtime as rt
from kernels.attention import scaled_dot_product_attention
from tests.kernels.library_checks import DTYPES, assert_compiled_matches_eager, assert_opcheck_passes

DEV = rt.device()
KERNELS = ("_attn_fwd_kernel", "_attn_bwd_dq_kernel", "_attn_bwd_dkdv_kernel")


# Sized for CI under the interpreter, where one forward and backward of a single (batch, head) costs
# tens of milliseconds and the engine calls the op about ten times an example (opcheck's tests about
# ten more): 6 examples per dtype (as conv2d), opcheck on the first of them only (the hand-picked
# layouts below cover the registration); compiled, the active profile decides both. The shapes the
# draws rarely reach (several blocks, tails, T_q != T_k) are tested below.
SIZING = {"max_examples": 6, "opcheck_examples": 1} if rt.INTERPRET else {}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
def test_scaled_dot_product_attention(dtype):
    gc.verify_op("scaled_dot_product_attention", dtypes=[dtype], **SIZING)


def _randn(shape, dtype=torch.float64, seed=0):
    return torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)).to(dtype).to(DEV)


def _forward_backward(fn, q, k, v, g=None, **kw):
    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    out = fn(q, k, v, **kw)
    g = torch.ones_like(out) if g is None else g
    return (out, *torch.autograd.grad(out, (q, k, v), g))


def _reference(q, k, v, g, is_causal, scale):
    """The float64 NumPy reference (forward and VJP) on the inputs as the kernel saw them."""
    q, k, v, g = (t.detach().double().cpu().numpy() for t in (q, k, v, g))
    out = reference.attention.scaled_dot_product_attention(q, k, v, is_causal, scale)
    dq, dk, dv, _, _ = reference.attention.scaled_dot_product_attention_vjp(q, k, v, is_causal, scale, g)
    return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in (out, dq, dk, dv))


@pytest.fixture
def launches(monkeypatch):
    """Names of the attention kernels launched while the test runs, in order."""
    seen = []
    for name in KERNELS:
        kernel = getattr(ka, name)

        class Counting:
            def __getitem__(self, grid, kernel=kernel, name=name):
                seen.append(name)
                return kernel[grid]

        monkeypatch.setattr(ka, name, Counting())
    return seen


# ---------------------------------------------------------------------------------------------
# shapes the draws rarely reach: several blocks, tails, T_q != T_k, D_v != D, strided layouts
# ---------------------------------------------------------------------------------------------

# (B, H, T_q, T_k, D, D_v, is_causal, scale): 129 is past four 32-blocks (the interpreter's tiles)
# and past the GPU's 64- and 128-blocks, with a partial tail, causal with diagonal blocks, unmasked
# blocks and skipped ones; T_q > T_k and T_q < T_k with torch's top-left causal alignment
CASES = [
    (1, 1, 129, 129, 65, 65, True, None),
    (2, 1, 70, 40, 16, 24, True, 0.3),
    (1, 1, 40, 70, 33, 8, False, None),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[:6])) + ("-causal" if c[6] else ""))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_long_sequences_and_strided_layouts_match_the_reference(dtype, case):
    """q laid out as (B, T, H, D) memory, k sliced from a longer cache, v with its head dim
    outermost, grad_output expanded along T (stride 0): within the tolerance table of the exact
    float64 result on the same rounded inputs."""
    b, h, tq, tk, d, dv, is_causal, scale = case
    q = _randn((b, tq, h, d), dtype, seed=1).transpose(1, 2)
    k = _randn((b, h, 2 * tk, d), dtype, seed=2)[:, :, 1::2]
    v = _randn((dv, b, h, tk), dtype, seed=3).permute(1, 2, 3, 0)
    g = _randn((b, h, 1, dv), dtype, seed=4).expand(b, h, tq, dv)
    got = _forward_backward(scaled_dot_product_attention, q, k, v, g, is_causal=is_causal, scale=scale)
    want = _reference(q, k, v, g, is_causal, scale)
    depth = max(d, dv, tq, tk)  # scores sum over D, P v and the gradients over the sequence
    for name, a, e in zip(("output", "dq", "dk", "dv"), got, want, strict=True):
        assert a.shape == e.shape and a.dtype == dtype, name
        assert_close(a, e, depth=depth, ulps=4, grad=name != "output", msg=name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_causal_matches_torch(dtype):
    q, k, v = (_randn((2, 3, 5, 3), dtype, seed=s) for s in range(3))
    got = _forward_backward(scaled_dot_product_attention, q, k, v, is_causal=True)
    want = _forward_backward(F.scaled_dot_product_attention, q, k, v, is_causal=True)
    for name, a, e in zip(("output", "dq", "dk", "dv"), got, want, strict=True):
        assert_close(a, e, depth=5, ulps=4, grad=name != "output", expected_rounded=True, msg=name)


# ---------------------------------------------------------------------------------------------
# edge cases the engine does not draw: NaN and inf, empty tensors, bad input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [math.nan, math.inf], ids=["nan", "inf"])
@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
def test_nan_or_inf_in_a_query_row_reaches_only_what_that_row_touches(value, is_causal):
    """Query row 2 holds NaN (or +inf, whose scores give inf - inf): its output row is NaN, as
    torch's math backend; every other output row and row of dq, and the rows of dv of keys that
    query 2 does not see (causal: keys 3 and 4), are bitwise those of a run without it. (dk is not
    checked past the keys query 2 sees: dS^T q multiplies query 2's NaN by the masked zeros of the
    same block, as any matmul does, so how far the NaN reaches depends on the block size.)"""
    q, k, v = (_randn((1, 2, 5, 4), seed=s) for s in range(3))
    bad = q.clone()
    bad[:, :, 2, 1] = value
    got = _forward_backward(scaled_dot_product_attention, bad, k, v, is_causal=is_causal)
    clean = _forward_backward(scaled_dot_product_attention, q, k, v, is_causal=is_causal)
    with sdpa_kernel([SDPBackend.MATH]):
        torch_out = F.scaled_dot_product_attention(bad, k, v, is_causal=is_causal)
    out, dq, dk, dv = got
    assert torch.equal(out.isnan(), torch_out.isnan())
    assert out[:, :, 2].isnan().all()
    rows = [0, 1, 3, 4]
    assert torch.equal(out[:, :, rows], clean[0][:, :, rows]) and torch.equal(dq[:, :, rows], clean[1][:, :, rows])
    assert dq[:, :, 2].isnan().all()
    seen = [0, 1, 2] if is_causal else [0, 1, 2, 3, 4]
    unseen = [j for j in range(5) if j not in seen]
    assert dk[:, :, seen].isnan().all() and dv[:, :, seen].isnan().all()
    assert torch.equal(dv[:, :, unseen], clean[3][:, :, unseen])


def test_nan_in_a_causal_key_row_reaches_only_the_queries_that_see_it():
    """Key 2 holds NaN: causal queries 0 and 1 never see it and their outputs are bitwise
    unchanged; queries 2-4 are NaN, as the NumPy reference (torch's math backend adds its -inf
    mask to the NaN score and makes every row NaN; its CPU flash kernel agrees with us). dk and dv
    of key 2 are NaN."""
    q, k, v = (_randn((1, 1, 5, 3), seed=s) for s in range(3))
    bad = k.clone()
    bad[0, 0, 2, 0] = math.nan
    out, dq, dk, dv = _forward_backward(scaled_dot_product_attention, q, bad, v, is_causal=True)
    clean_out = scaled_dot_product_attention(q, k, v, is_causal=True)
    want = _reference(q, bad, v, torch.ones_like(out), True, None)[0]
    assert torch.equal(out.isnan().cpu(), want.isnan())
    assert torch.equal(out[:, :, :2], clean_out[:, :, :2]) and out[:, :, 2:].isnan().all()
    assert dq[:, :, 2:].isnan().all() and dk[:, :, 2].isnan().all() and dv[:, :, 2].isnan().all()


# (B, H, T_q, T_k, D, D_v): no batch, no head, no query, no key (zeros, as torch): nothing to
# launch; then an empty output (the forward still computes the logsumexp the op returns) and an
# empty head dim for q and k (all scores 0: uniform attention, as torch)
EMPTY = [(0, 2, 3, 3, 4, 4), (2, 0, 3, 3, 4, 4), (1, 2, 0, 3, 4, 4), (1, 2, 3, 0, 4, 4)]


@pytest.mark.parametrize("shape", [*EMPTY, (1, 2, 3, 3, 4, 0), (1, 2, 3, 5, 0, 4)], ids=str)
def test_empty_dims_match_torch(shape, launches):
    b, h, tq, tk, d, dv = shape
    q, k, v = _randn((b, h, tq, d), seed=0), _randn((b, h, tk, d), seed=1), _randn((b, h, tk, dv), seed=2)
    got = _forward_backward(scaled_dot_product_attention, q, k, v)
    want = _forward_backward(F.scaled_dot_product_attention, q, k, v)
    for name, a, e in zip(("output", "dq", "dk", "dv"), got, want, strict=True):
        assert a.shape == e.shape, name
        assert_close(a, e, depth=max(tk, 1), grad=name != "output", msg=name)
    if shape in EMPTY:
        assert launches == []  # nothing to compute: no kernel runs


@pytest.mark.parametrize("shape", [*EMPTY, (1, 2, 3, 3, 4, 0), (1, 2, 3, 5, 0, 4)], ids=str)
def test_the_reference_on_empty_dims_matches_torch(shape):
    """The NumPy reference agrees with torch (float64) on the same shapes; at D = 0 its default
    scale 1/sqrt(D) does not divide by zero."""
    b, h, tq, tk, d, dv = shape
    q, k, v = _randn((b, h, tq, d), seed=0), _randn((b, h, tk, d), seed=1), _randn((b, h, tk, dv), seed=2)
    want = _forward_backward(F.scaled_dot_product_attention, q, k, v)
    got = _reference(q, k, v, torch.ones_like(want[0]), False, None)
    for name, a, e in zip(("output", "dq", "dk", "dv"), got, want, strict=True):
        assert a.shape == e.shape, name
        assert_close(a, e, depth=max(tk, 1), grad=name != "output", msg=name)


def test_bad_inputs_raise_before_launch(launches):
    q, k, v = (_randn((1, 2, 3, 4), seed=s) for s in range(3))
    sdpa = scaled_dot_product_attention
    with pytest.raises(ValueError, match=r"query must be \(B, H, T, D\)"):
        sdpa(q[0], k, v)
    with pytest.raises(TypeError, match="key has dtype int64"):
        sdpa(q, k.long(), v)
    with pytest.raises(TypeError, match=r"value must be a torch\.Tensor"):
        sdpa(q, k, v.tolist())
    with pytest.raises(TypeError, match="mixed dtypes"):
        sdpa(q, k.float(), v)
    with pytest.raises(ValueError, match=r"share \(B, H\)"):
        sdpa(q, k[:, :1], v[:, :1])
    with pytest.raises(ValueError, match=r"grouped-query attention is not supported"):
        sdpa(q, k[:, :1], v[:, :1], enable_gqa=True)
    with pytest.raises(ValueError, match="same length T_k"):
        sdpa(q, k, v[:, :, :2])
    with pytest.raises(ValueError, match="same head dim D"):
        sdpa(q, k[..., :3], v)
    big = _randn((1, 1, 2, ka.MAX_HEAD_DIM + 1))
    with pytest.raises(ValueError, match=f"head dims up to {ka.MAX_HEAD_DIM}"):
        sdpa(big, big, big)
    with pytest.raises(NotImplementedError, match="attn_mask"):
        sdpa(q, k, v, torch.ones(3, 3, dtype=torch.bool, device=DEV))
    with pytest.raises(NotImplementedError, match="dropout"):
        sdpa(q, k, v, dropout_p=0.1)
    with pytest.raises(TypeError, match="is_causal must be a bool"):
        sdpa(q, k, v, is_causal=1)
    for scale in (math.inf, math.nan, True, "0.5"):
        with pytest.raises(ValueError, match="scale must be None or a finite number"):
            sdpa(q, k, v, scale=scale)
    assert launches == []


def test_the_triton_kernels_run_forward_and_backward(launches):
    q, k, v = (_randn((1, 2, 5, 4), seed=s) for s in range(3))
    _forward_backward(scaled_dot_product_attention, q, k, v, is_causal=True)
    assert launches == list(KERNELS)  # forward; then dq (which also writes delta), dk and dv


def test_gpu_autotuning_times_several_tiles_only_for_long_sequences():
    """The pruning the autotuner applies when compiled (the interpreter has one config): short
    sequences (every property-test draw) take one config, so nothing is timed and each kernel
    variant compiles once; fp64 heads past 128 take the 16 x 16 tile, the only one whose shared
    memory fits; long sequences time several tiles, fp64 only those up to 64 x 64."""

    def tiles(configs, dtype, t, head):
        args = {"q_ptr": torch.empty(1, dtype=dtype), "Tq": t, "Tk": t}
        return [(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) for c in ka._prune(configs, args, BLOCK_D=head, BLOCK_DV=16)]

    for configs in (ka._FWD_CONFIGS, ka._DQ_CONFIGS, ka._DKDV_CONFIGS):
        assert tiles(configs, torch.bfloat16, 129, 128) == [(32, 32)]
        assert tiles(configs, torch.float64, 129, 256) == [(16, 16)]
        assert len(tiles(configs, torch.bfloat16, 4096, 128)) == len(configs) > 1
        long_fp64 = tiles(configs, torch.float64, 4096, 256)
        assert len(long_fp64) > 1 and max(m * n for m, n in long_fp64) <= 64 * 64


# ---------------------------------------------------------------------------------------------
# int64 offsets (GPU): tensors past 2^31 elements
# ---------------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_attention_past_2_31_elements():
    """q, k and v of 2^31 + 2^17 elements each (bf16, 4 GiB each): the last heads start past 2^31,
    so 32-bit offsets would wrap there. Heads are independent: the last two and the first one
    are checked against torch on those heads alone."""
    b, h, t, d = 1, 2**14 + 1, 1024, 128
    gen = torch.Generator(device=DEV).manual_seed(0)
    q, k, v = (torch.randn((b, h, t, d), dtype=torch.bfloat16, device=DEV, generator=gen) for _ in range(3))
    assert q.numel() > 2**31
    g = torch.randn((b, h, t, d), dtype=torch.bfloat16, device=DEV, generator=gen)
    out, dq, dk, dv = _forward_backward(scaled_dot_product_attention, q, k, v, g, is_causal=True)
    for heads in (slice(h - 2, h), slice(0, 1)):
        part = [t[:, heads] for t in (q, k, v, g)]
        want = _forward_backward(F.scaled_dot_product_attention, *part[:3], part[3], is_causal=True)
        for name, a, e in zip(("output", "dq", "dk", "dv"), (out, dq, dk, dv), want, strict=True):
            assert_close(a[:, heads], e, depth=t, ulps=4, grad=name != "output", expected_rounded=True, msg=name)


# ---------------------------------------------------------------------------------------------
# torch.library registration: opcheck and torch.compile
# ---------------------------------------------------------------------------------------------


def _opcheck_inputs(dtype):
    q = _randn((1, 3, 2, 4), dtype, seed=0).transpose(1, 2)  # (B, H, T, D) of (B, T, H, D) memory
    k = _randn((1, 2, 3, 4), dtype, seed=1)
    v = _randn((1, 2, 3, 5), dtype, seed=2)[..., ::2]  # D_v = 3, sliced
    return q, k, v


# The engine opchecks the forward op on the first drawn examples of every dtype; here a hand-picked
# layout at fp32 and bf16 (the UPCAST path), and the backward op, which only autograd calls, at all four.
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_opcheck_scaled_dot_product_attention(dtype):
    q, k, v = (t.requires_grad_() for t in _opcheck_inputs(dtype))
    assert_opcheck_passes(torch.ops.blitz.scaled_dot_product_attention.default, (q, k, v, True, 0.5))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_opcheck_scaled_dot_product_attention_backward(dtype):
    q, k, v = _opcheck_inputs(dtype)
    out, lse = ka.scaled_dot_product_attention_op(q, k, v, True, 0.5)
    g = _randn((1, 2, 1, 3), dtype, seed=3).expand(out.shape)  # stride 0 along T
    args = (g, q, k, v, out, lse, True, 0.5)
    assert_opcheck_passes(torch.ops.blitz.scaled_dot_product_attention_backward.default, args)


def test_scaled_dot_product_attention_compiles():
    q, k, v = (_randn((1, 2, 5, 4), torch.float32, seed=s) for s in range(3))
    assert_compiled_matches_eager(lambda a, b, c: scaled_dot_product_attention(a, b, c, is_causal=True) * 2, q, k, v)
