"""linear_cross_entropy: property test through the engine, plus what it does not draw: all targets
ignored, bad targets and shapes, the empty batch, large logits, the chunked backward (H past one
tile), per-row gradients, and that the (N, V) logits are never allocated."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

import kernels.linear_cross_entropy as klce
from gradcheck.testing import op_tests
from gradcheck.tolerances import assert_close
from kernels import _runtime as rt
from kernels.linear_cross_entropy import linear_cross_entropy
from tests.kernels.library_checks import DTYPES, assert_compiled_matches_eager, assert_opcheck_passes

# 4 examples per dtype under the ci profile (the budget of this file is ~40 s of CPU time): under
# the interpreter one example costs about a second (a forward and backward run a dozen times, the
# first two opchecked); across the four dtypes the draws include a batch of 2049, a vocabulary of
# 1000, and H of 129, 255 and 257 (past one tile: the chunked backward)
test_linear_cross_entropy = op_tests("linear_cross_entropy", cpu_max_examples=4)


def _randn(*shape, dtype=torch.float64, seed=0, scale=1.0):
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * scale
    return x.to(dtype).to(rt.device())


def _targets(n, classes, seed=0, ignore_every=0, ignore_index=-100):
    t = torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(seed)).to(rt.device())
    if ignore_every:
        t[::ignore_every] = ignore_index
    return t


def _torch_lce(hidden, weight, target, bias=None, ignore_index=-100, reduction="mean"):
    return F.cross_entropy(F.linear(hidden, weight, bias), target, ignore_index=ignore_index, reduction=reduction)


def _ours(hidden, weight, target, bias=None, ignore_index=-100, reduction="mean"):
    """Our kernel (torch's keyword-only signature) called as ``_torch_lce`` is."""
    return linear_cross_entropy(
        hidden, weight, target, linear_bias=bias, ignore_index=ignore_index, reduction=reduction
    )


def _loss_and_grads(fn, hidden, weight, target, bias, g, **kwargs):
    leaves = [t.detach().requires_grad_() for t in (hidden, weight, *([bias] if bias is not None else []))]
    loss = fn(leaves[0], leaves[1], target, leaves[2] if bias is not None else None, **kwargs)
    return loss, torch.autograd.grad(loss, leaves, g.to(loss.dtype))


def _check_against_torch(hidden, weight, target, bias=None, g=None, **kwargs):
    """Ours at the inputs' dtype against torch in float64 on the same (rounded) inputs, loss and
    every gradient, with the catalog's accumulation depth (H + V + N)."""
    n, h = hidden.shape
    ref_loss = _torch_lce(hidden.double(), weight.double(), target, None if bias is None else bias.double(), **kwargs)
    g = _randn(*ref_loss.shape, seed=7) if g is None else g
    loss, grads = _loss_and_grads(_ours, hidden, weight, target, bias, g, **kwargs)
    ref_loss, ref_grads = _loss_and_grads(
        _torch_lce, hidden.double(), weight.double(), target, None if bias is None else bias.double(), g, **kwargs
    )
    depth = h + weight.shape[0] + n
    assert_close(loss, ref_loss, depth=depth, ulps=4, msg="loss")
    for name, got, want in zip(("dhidden", "dweight", "dbias"), grads, ref_grads, strict=False):
        assert_close(got, want, depth=depth, ulps=4, grad=True, msg=name)
    return loss, grads


class _NoLaunch:
    """Stands in for a kernel (or the matmul launcher) that must not run."""

    def __init__(self, name):
        self.name = name

    def __getitem__(self, grid):
        raise AssertionError(f"{self.name} was launched")

    def __call__(self, *args, **kwargs):
        raise AssertionError(f"{self.name} was called")


@pytest.fixture
def no_launch(monkeypatch):
    """Any launch of this module's kernels or of the matmul kernel fails the test."""
    kernels = ("_lce_fwd_kernel", "_lce_finish_kernel", "_lce_dlogits_kernel", "_lce_dhidden_kernel")
    for name in (*kernels, "_lce_dweight_kernel", "_mm"):
        monkeypatch.setattr(klce, name, _NoLaunch(name))


# ---------------------------------------------------------------------------------------------
# bad input: clear exceptions before any launch
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [9, -3])
def test_out_of_range_target_raises_naming_the_range(bad, no_launch):
    hidden, weight = _randn(4, 3), _randn(9, 3)
    target = torch.tensor([0, bad, 8, -100], device=rt.device())
    with pytest.raises(IndexError, match=rf"target {bad} is out of range \[0, 9\) for 9 classes"):
        linear_cross_entropy(hidden, weight, target)


def test_ignore_index_inside_the_classes_is_ignored_and_any_other_index_counts():
    hidden, weight = _randn(6, 5), _randn(7, 5, seed=1)
    target = torch.tensor([2, 0, 2, 6, 1, 2], device=rt.device())
    for reduction in ("mean", "sum", "none"):
        _check_against_torch(hidden, weight, target, ignore_index=2, reduction=reduction)


def test_signature_and_defaults_are_torchs():
    """torch's keyword names call ours unchanged; ``ignore_index=None`` (torch's default) is -100;
    where torch has ``F.linear_cross_entropy`` (2.13 on), both agree on the same call."""
    hidden, weight, bias = _randn(5, 3), _randn(6, 3, seed=1), _randn(6, seed=2)
    target = torch.tensor([0, -100, 5, 2, -100], device=rt.device())
    call = {"linear_bias": bias, "reduction": "sum"}
    ours = linear_cross_entropy(hidden, weight, target, ignore_index=None, **call)
    assert torch.equal(ours, linear_cross_entropy(hidden, weight, target, ignore_index=-100, **call))
    if hasattr(F, "linear_cross_entropy"):
        assert_close(ours, F.linear_cross_entropy(hidden, weight, target, **call), depth=3 + 6 + 5, ulps=4)


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        ({"target": torch.tensor([0, 1, 2], dtype=torch.int32)}, TypeError, "dtype int32; expected int64"),
        ({"target": torch.tensor([0, 1])}, ValueError, r"target has shape \(2,\); expected \(3,\)"),
        ({"input": torch.randn(3, 4, 1)}, ValueError, r"input must be 2-D \(N, H\)"),
        ({"linear_weight": torch.randn(5, 3)}, ValueError, "H=4 features but linear_weight"),
        ({"linear_weight": torch.randn(0, 4)}, ValueError, r"no classes \(V=0\)"),
        ({"linear_bias": torch.randn(4)}, ValueError, r"linear_bias has shape \(4,\); expected \(5,\)"),
        ({"linear_bias": torch.randn(5, dtype=torch.float64)}, TypeError, "mixed dtypes"),
        ({"input": torch.randn(3, 4).long()}, TypeError, "input has dtype int64"),
        ({"reduction": "avg"}, ValueError, "reduction='avg'"),
        ({"ignore_index": 1.5}, TypeError, "ignore_index must be an int"),
        ({"weight": torch.ones(5)}, NotImplementedError, r"class weights \(weight=\) are not supported"),
        ({"label_smoothing": 0.1}, NotImplementedError, "label_smoothing=0.1 is not supported"),
    ],
)
def test_bad_arguments_raise(args, error, message):
    call = {
        "input": torch.randn(3, 4),
        "linear_weight": torch.randn(5, 4),
        "target": torch.tensor([0, 1, 4]),
        "linear_bias": None,
        "ignore_index": -100,
        "reduction": "mean",
    }
    call.update(args)
    call = {k: v.to(rt.device()) if isinstance(v, torch.Tensor) else v for k, v in call.items()}
    with pytest.raises(error, match=message):
        linear_cross_entropy(**call)


# ---------------------------------------------------------------------------------------------
# semantics the engine does not draw
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_all_targets_ignored_matches_torch(reduction):
    """'mean' over no counted target is 0 / 0 = NaN, as torch; 'sum' and 'none' are 0; every
    gradient is exactly 0."""
    hidden, weight, bias = _randn(5, 4), _randn(6, 4, seed=1), _randn(6, seed=2)
    target = torch.full((5,), -100, device=rt.device())
    g = torch.ones(5 if reduction == "none" else (), dtype=torch.float64, device=rt.device())
    loss, grads = _loss_and_grads(_ours, hidden, weight, target, bias, g, reduction=reduction)
    ref, _ = _loss_and_grads(_torch_lce, hidden, weight, target, bias, g, reduction=reduction)
    assert_close(loss, ref)
    assert bool(loss.isnan().all()) if reduction == "mean" else bool((loss == 0).all())
    assert all(torch.equal(d, torch.zeros_like(d)) for d in grads)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_empty_batch_matches_torch(reduction, no_launch):
    """N = 0: 'mean' NaN, 'sum' 0, 'none' an empty loss; dhidden empty, dweight and dbias zeros;
    no kernel launched."""
    hidden, weight, bias = _randn(0, 4), _randn(6, 4, seed=1), _randn(6, seed=2)
    target = torch.empty((0,), dtype=torch.int64, device=rt.device())
    g = torch.ones((0,) if reduction == "none" else (), dtype=torch.float64, device=rt.device())
    loss, grads = _loss_and_grads(_ours, hidden, weight, target, bias, g, reduction=reduction)
    ref, ref_grads = _loss_and_grads(_torch_lce, hidden, weight, target, bias, g, reduction=reduction)
    assert loss.shape == ref.shape
    torch.testing.assert_close(loss, ref, equal_nan=True, rtol=0, atol=0)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_large_logits_match_torch(dtype):
    """Logits of order 1e4 (exp overflows without the running max) and one row whose target is
    far below its max (the loss is large, the target's probability underflows to 0)."""
    hidden = _randn(9, 6, dtype=dtype, scale=100.0)
    weight = _randn(13, 6, dtype=dtype, seed=1, scale=30.0)
    target = _targets(9, 13, ignore_every=4)
    loss, _ = _check_against_torch(hidden, weight, target, reduction="none")
    assert bool(torch.isfinite(loss).all()) and loss.max().item() > 100.0


def test_per_row_grad_output_is_used_for_each_row():
    """reduction='none' with a different grad_output per row, and an expanded (stride-0) one: a
    kernel that used grad_output[0] for every row (as a shipped one did) fails here. The target
    is strided too."""
    hidden, weight, bias = _randn(7, 5), _randn(11, 5, seed=1), _randn(11, seed=2)
    target = _targets(14, 11, ignore_every=3)[::2]
    _check_against_torch(hidden, weight, target, bias, g=_randn(7, seed=3), reduction="none")
    _check_against_torch(hidden, weight, target, bias, g=_randn(1, seed=4).expand(7), reduction="none")


def test_only_the_gradients_asked_for():
    """Frozen hidden states (only weight and bias), and a frozen head (only hidden)."""
    hidden, weight, bias = _randn(6, 5), _randn(9, 5, seed=1), _randn(9, seed=2)
    target = _targets(6, 9)
    ref = _torch_lce(hidden, weight.requires_grad_(), target, bias.requires_grad_())
    loss = linear_cross_entropy(hidden, weight, target, linear_bias=bias)
    grads, ref_grads = torch.autograd.grad(loss, (weight, bias)), torch.autograd.grad(ref, (weight, bias))
    for got, want in zip(grads, ref_grads, strict=True):
        assert_close(got, want, depth=20, grad=True, expected_rounded=True)
    h = hidden.requires_grad_()
    (dh,) = torch.autograd.grad(linear_cross_entropy(h, weight.detach(), target), h)
    (ref_dh,) = torch.autograd.grad(_torch_lce(h, weight.detach(), target), h)
    assert_close(dh, ref_dh, depth=20, grad=True, expected_rounded=True)


# ---------------------------------------------------------------------------------------------
# the chunked backward (H past one tile) and the memory bound
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def chunked(monkeypatch):
    """Every backward by chunks of dZ and matmuls; tiles of at most 512 elements (32 vocabulary
    columns) and chunks of at most 256, so that small problems take several of each."""
    monkeypatch.setattr(klce, "FUSED_MAX_H", 0)
    monkeypatch.setattr(klce, "CHUNK_ELEMENTS", 256)
    monkeypatch.setattr(klce, "_INTERPRET_TILE", 512)


@pytest.mark.parametrize(
    ("dtype", "reduction", "with_bias"),
    [(torch.float64, "none", True), (torch.bfloat16, "mean", False)],
    ids=["float64-none-bias", "bfloat16-mean"],
)
def test_chunked_backward_matches_torch(chunked, dtype, reduction, with_bias):
    """Three chunks of rows (pass 1) and two of vocabulary columns (pass 2), the last ones
    partial, on a transposed hidden and a sliced weight."""
    hidden = _randn(6, 40, dtype=dtype).t()  # (40, 6), column-major
    weight = _randn(45, 12, dtype=dtype, seed=1)[:, ::2]  # (45, 6), strided
    bias = _randn(45, dtype=dtype, seed=2) if with_bias else None
    blocks = klce._Blocks(dtype, 40, 45, 6)
    assert (klce._chunk(40, 45, blocks.n), klce._chunk(45, 40, blocks.v)) == (16, 32)
    _check_against_torch(hidden, weight, _targets(40, 45, ignore_every=7), bias, reduction=reduction)


def test_an_h_past_one_tile_takes_the_chunked_backward():
    """The fused backward holds all of H in one tile up to FUSED_MAX_H; past it, chunks."""
    for h, fused in ((0, True), (klce.FUSED_MAX_H, True), (klce.FUSED_MAX_H + 1, False)):
        hidden, weight = _randn(5, h), _randn(7, h, seed=1)
        back = klce._Backward(torch.ones(()), hidden, weight, _targets(5, 7), None, None, None, -100, "mean")
        assert back.fused == fused, h


def _largest_allocation(fn, *args) -> int:
    """Bytes of the largest tensor any op allocated during forward and backward of ``fn`` (torch's
    profiler sees each op's own CPU allocations, inside custom ops and Triton launches too), or
    that autograd saved for the backward."""
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    leaves = [a.detach().requires_grad_() if a.is_floating_point() else a for a in args]
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = fn(*leaves)
        torch.autograd.grad(loss, [a for a in leaves if a.requires_grad])
    allocated = max((e.self_cpu_memory_usage for e in prof.events()), default=0)
    return max(allocated, *saved)


@pytest.mark.skipif(not rt.INTERPRET, reason="counts CPU allocations: the kernels run on the CPU here")
@pytest.mark.parametrize("path", ["fused", "chunked", "torch"])
def test_the_logits_are_never_allocated(path, monkeypatch):
    """No tensor of N V elements is ever allocated or saved: N V is 16x hidden and weight and 4x a
    chunk of dZ; the unfused torch path is caught by the same measure."""
    n, h, v = 64, 4, 64
    hidden, weight, target = _randn(n, h, dtype=torch.float32), _randn(v, h, dtype=torch.float32), _targets(n, v)
    logits_bytes = n * v * 4
    if path == "chunked":  # chunks of 16 rows x 64 columns, then of 64 rows x 16 columns
        monkeypatch.setattr(klce, "FUSED_MAX_H", 0)
        monkeypatch.setattr(klce, "CHUNK_ELEMENTS", 256)
        monkeypatch.setattr(klce, "_INTERPRET_TILE", 256)
    fn = _torch_lce if path == "torch" else linear_cross_entropy
    largest = _largest_allocation(fn, hidden, weight, target)
    if path == "torch":
        assert largest >= logits_bytes
    else:
        assert largest <= logits_bytes // 4, f"{largest} bytes allocated at once; the logits take {logits_bytes}"


# ---------------------------------------------------------------------------------------------
# past 2^31 logits (GPU)
# ---------------------------------------------------------------------------------------------


def _reference_in_chunks(hidden, weight, target, bias, g, rows=2048):
    """torch in fp32 on the (bf16) inputs, chunk by chunk of rows: per-row loss, dhidden, and
    dweight and dbias summed over the chunks (the logits of one chunk at a time)."""
    h32, w32, b32 = hidden.float(), weight.float(), bias.float()
    loss = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
    dh = torch.empty_like(h32)
    dw, db = torch.zeros_like(w32), torch.zeros_like(b32)
    for r0 in range(0, hidden.shape[0], rows):
        x = h32[r0 : r0 + rows].clone().requires_grad_()
        w, b = w32.detach().requires_grad_(), b32.detach().requires_grad_()
        part = _torch_lce(x, w, target[r0 : r0 + rows], b, reduction="none")
        gx, gw, gb = torch.autograd.grad(part, (x, w, b), g[r0 : r0 + rows].float())
        loss[r0 : r0 + rows], dh[r0 : r0 + rows] = part.detach(), gx
        dw += gw
        db += gb
    return loss, dh, dw, db


@pytest.mark.gpu
@pytest.mark.parametrize("h", [64, 256], ids=["fused", "chunked"])
def test_linear_cross_entropy_past_2_to_the_31_logits(h):
    """N V > 2^31 logits (never allocated): both backward paths (H = 64 in one tile, H = 256 by
    chunks), against torch in fp32 chunk by chunk; the last rows live past 2^31 in logit space."""
    rows, classes = 2**14 + 1, 2**17 + 3
    assert rows * classes > 2**31
    gen = torch.Generator(device="cuda").manual_seed(0)
    hidden = torch.randn(rows, h, device="cuda", dtype=torch.bfloat16, generator=gen)
    weight = (torch.randn(classes, h, device="cuda", generator=gen) / math.sqrt(h)).to(torch.bfloat16)
    bias = torch.randn(classes, device="cuda", dtype=torch.bfloat16, generator=gen)
    target = torch.randint(0, classes, (rows,), device="cuda", generator=gen)
    target[::5] = -100
    g = torch.randn(rows, device="cuda", dtype=torch.bfloat16, generator=gen)
    leaves = [t.detach().requires_grad_() for t in (hidden, weight, bias)]
    loss = linear_cross_entropy(leaves[0], leaves[1], target, linear_bias=leaves[2], reduction="none")
    dh, dw, db = torch.autograd.grad(loss, leaves, g)
    ref_loss, ref_dh, ref_dw, ref_db = _reference_in_chunks(hidden, weight, target, bias, g)
    # fp32 on the bf16 inputs: exact next to bf16's rounding
    assert_close(loss, ref_loss, depth=h + classes)
    assert_close(dh, ref_dh, depth=classes, grad=True)
    assert_close(dw, ref_dw, depth=rows, grad=True)
    assert_close(db, ref_db, depth=rows, grad=True)


# ---------------------------------------------------------------------------------------------
# torch.library registration: opcheck and torch.compile
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_opcheck_linear_cross_entropy(dtype):
    hidden = _randn(5, 4, dtype=dtype).t().requires_grad_()  # (4, 5), column-major
    weight = _randn(6, 5, dtype=dtype, seed=1).requires_grad_()
    bias = _randn(6, dtype=dtype, seed=2).requires_grad_()
    target = torch.tensor([0, 5, -100, 3], device=rt.device())
    assert_opcheck_passes(torch.ops.blitz.linear_cross_entropy.default, (hidden, weight, target, bias, -100, "mean"))
    _, stats, count = torch.ops.blitz.linear_cross_entropy(hidden, weight, target, bias, -100, "none")
    g = _randn(4, dtype=dtype, seed=3)
    args = (g, hidden.detach(), weight.detach(), target, bias.detach(), stats, count, -100, "none", [True, False, True])
    assert_opcheck_passes(torch.ops.blitz.linear_cross_entropy_backward.default, args)


def test_linear_cross_entropy_compiles():
    hidden, weight = _randn(4, 3, dtype=torch.float32), _randn(5, 3, dtype=torch.float32, seed=1)
    target = torch.tensor([0, 4, -100, 2], device=rt.device())
    assert_compiled_matches_eager(lambda h, w: linear_cross_entropy(h, w, target, reduction="none") * 2, hidden, weight)
