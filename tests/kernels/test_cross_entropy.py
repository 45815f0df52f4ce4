"""cross_entropy: property tests through the engine, plus the edge cases it does not draw."""

import math

import pytest
import torch
import torch.nn.functional as F

from gradcheck.testing import op_tests
from gradcheck.tolerances import assert_close
from kernels import _runtime as rt
from kernels.cross_entropy import cross_entropy
from tests.kernels.library_checks import DTYPES, assert_compiled_matches_eager, assert_opcheck_passes

test_cross_entropy = op_tests("cross_entropy")


def _randn(*shape, dtype=torch.float64, seed=0):
    return torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(seed)).to(rt.device())


def _targets(shape, classes, seed=0):
    return torch.randint(0, classes, shape, generator=torch.Generator().manual_seed(seed)).to(rt.device())


def _ce_both(x, target, g=None, **kwargs):
    """Our and torch's loss and input gradient (for grad_output g, default a random one)."""
    results = []
    for fn in (cross_entropy, F.cross_entropy):
        xx = x.detach().requires_grad_()
        loss = fn(xx, target, **kwargs)
        grad_out = g if g is not None else _randn(*loss.shape, dtype=loss.dtype, seed=9)
        (dx,) = torch.autograd.grad(loss, xx, grad_out)
        results.append((loss, dx))
    return results


def _agree(ours, theirs, x):
    """Loss and input gradient against torch's at the same dtype: the loss sums the classes, then
    (reduced) the rows; each gradient element sums the classes (the softmax) once."""
    (loss, dx), (ref, ref_dx) = ours, theirs
    classes = x.shape[1] if x.dim() > 1 else x.shape[0]
    depth = classes + x.numel() // max(classes, 1)
    assert_close(loss, ref, depth=depth, expected_rounded=True, msg="loss")
    assert_close(dx, ref_dx, depth=depth, grad=True, expected_rounded=True, msg="grad")


# ---------------------------------------------------------------------------------------------
# cross_entropy: bad input
# ---------------------------------------------------------------------------------------------


def test_cross_entropy_out_of_range_target_raises():
    x = _randn(4, 5)
    with pytest.raises(IndexError, match="target 7 is out of range for 5 classes"):
        cross_entropy(x, torch.tensor([0, 7, 1, 2], device=rt.device()))
    with pytest.raises(IndexError, match="target -3 is out of range"):
        cross_entropy(x, torch.tensor([0, -3, 1, -100], device=rt.device()))


@pytest.mark.parametrize(
    ("target", "error", "message"),
    [
        (torch.tensor([0, 1, 2], dtype=torch.int32), TypeError, "dtype int32; expected int64"),
        (torch.rand(3, 5), TypeError, "dtype float32; expected int64"),
        (torch.tensor([0, 1]), ValueError, r"target has shape \(2,\)"),
        (torch.tensor([[0], [1], [2]]), ValueError, r"must be \(3,\)"),
    ],
)
def test_cross_entropy_bad_target_raises(target, error, message):
    with pytest.raises(error, match=message):
        cross_entropy(_randn(3, 5), target.to(rt.device()))


def test_cross_entropy_bad_options_raise():
    x, t = _randn(3, 5), _targets((3,), 5)
    with pytest.raises(ValueError, match=r"weight has shape \(4,\); expected \(5,\)"):
        cross_entropy(x, t, weight=_randn(4))
    with pytest.raises(TypeError, match="mixed dtypes"):
        cross_entropy(x, t, weight=_randn(5, dtype=torch.float32))
    with pytest.raises(ValueError, match="reduction='avg'"):
        cross_entropy(x, t, reduction="avg")
    with pytest.raises(ValueError, match=r"label_smoothing=1\.5"):
        cross_entropy(x, t, label_smoothing=1.5)
    with pytest.raises(ValueError, match="0-d"):
        cross_entropy(_randn(), torch.tensor(0, device=rt.device()))


# ---------------------------------------------------------------------------------------------
# cross_entropy: semantics
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_all_ignored_matches_torch(reduction):
    """'mean' of no counted rows is 0/0 = NaN (torch), with zero gradients; 'sum' and 'none' are 0."""
    x = _randn(4, 6)
    t = torch.full((4,), -100, device=rt.device())
    (loss, dx), (ref, ref_dx) = _ce_both(x, t, reduction=reduction)
    assert_close(loss, ref, expected_rounded=True)
    assert bool(loss.isnan().all()) if reduction == "mean" else bool((loss == 0).all())
    assert torch.equal(dx, torch.zeros_like(dx)) and torch.equal(ref_dx, torch.zeros_like(ref_dx))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_cross_entropy_ignore_index_inside_the_classes(reduction, smoothing):
    x, t = _randn(9, 4), _targets((9,), 4)
    kwargs = {"ignore_index": 2, "reduction": reduction, "label_smoothing": smoothing, "weight": _randn(4).abs()}
    _agree(*_ce_both(x, t, **kwargs), x)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_cross_entropy_unbatched_and_spatial_inputs(reduction, smoothing):
    cases = [
        (_randn(7), torch.tensor(3, device=rt.device())),
        (_randn(2, 5, 3, 4), _targets((2, 3, 4), 5)),
        (_randn(2, 4, 3, 5).permute(0, 3, 2, 1), _targets((2, 4, 3), 5).transpose(1, 2)),
    ]
    for x, t in cases:
        _agree(*_ce_both(x, t, reduction=reduction, label_smoothing=smoothing), x)


@pytest.mark.parametrize("rows", [2048, 2049, 4097])
def test_cross_entropy_batches_past_a_block_with_10_classes(rows):
    """attorch's cross entropy lost its last block's loss from batch 2048 on."""
    x, t = _randn(rows, 10, dtype=torch.float32), _targets((rows,), 10)
    for reduction in ("mean", "sum"):
        _agree(*_ce_both(x, t, reduction=reduction), x)


def test_cross_entropy_large_logits_and_minus_inf():
    x = _randn(5, 8) * 1e4
    x[1, 1] = -math.inf
    t = torch.tensor([0, 1, 2, 3, 4], device=rt.device())
    ours, theirs = _ce_both(x, t, reduction="none")
    _agree(ours, theirs, x)
    loss = ours[0]
    assert loss[1].item() == math.inf  # the target's logit is -inf


def test_cross_entropy_gradient_for_any_grad_output_and_retained_graph():
    """The first backward scales the gradient stored by the forward; a second one through the
    retained graph recomputes it. Both agree with torch, for grad_output 1 and otherwise; the
    logits are never written."""
    x, t, w = _randn(6, 9, dtype=torch.float32), _targets((6,), 9), _randn(9, dtype=torch.float32).abs()
    before = x.clone()
    xx = x.requires_grad_()
    loss = cross_entropy(xx, t, weight=w, label_smoothing=0.1)
    ref = F.cross_entropy(xx, t, weight=w, label_smoothing=0.1)
    for g in (1.0, 0.5, -3.0):
        g_t = torch.tensor(g, device=rt.device())
        (dx,) = torch.autograd.grad(loss, xx, g_t, retain_graph=True)
        (ref_dx,) = torch.autograd.grad(ref, xx, g_t, retain_graph=True)
        assert_close(dx, ref_dx, depth=9 + 6, grad=True, expected_rounded=True)
    assert torch.equal(x.detach(), before)


def test_cross_entropy_legacy_reduction_flags():
    x, t = _randn(5, 3), _targets((5,), 3)
    depth = 3 + 5
    assert_close(
        cross_entropy(x, t, reduce=False), F.cross_entropy(x, t, reduction="none"), depth=depth, expected_rounded=True
    )
    assert_close(
        cross_entropy(x, t, size_average=False),
        F.cross_entropy(x, t, reduction="sum"),
        depth=depth,
        expected_rounded=True,
    )


def test_cross_entropy_without_grad_stores_nothing():
    x, t = _randn(4, 7), _targets((4,), 7)
    with torch.no_grad():
        loss = cross_entropy(x, t)
    assert_close(loss, F.cross_entropy(x, t), depth=7 + 4, expected_rounded=True)
    assert loss.grad_fn is None


@pytest.mark.gpu
@pytest.mark.parametrize(("rows", "classes"), [(2**18 + 1, 8192), (2**16 + 1, 32768)])
def test_cross_entropy_past_2_to_the_31_logits(rows, classes):
    """(rows x classes) > 2^31 logit elements: offsets past int32 in the loss pass (rows in
    registers at 8192 classes, streamed at 32768) and in the gradient; the last rows, which live
    past 2^31, are checked against torch on a slice."""
    assert rows * classes > 2**31
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(rows, classes, device="cuda", dtype=torch.bfloat16, generator=gen).requires_grad_()
    t = torch.randint(0, classes, (rows,), device="cuda", generator=gen)
    loss = cross_entropy(x, t, reduction="none")
    (dx,) = torch.autograd.grad(loss, x, torch.ones_like(loss))
    tail = slice(rows - 3, rows)
    xt = x.detach()[tail].float().requires_grad_()
    ref = F.cross_entropy(xt, t[tail], reduction="none")
    (ref_dx,) = torch.autograd.grad(ref, xt, torch.ones_like(ref))
    # torch in fp32 on the bf16 logits: exact next to bf16's rounding
    assert_close(loss[tail], ref, depth=classes)
    assert_close(dx[tail], ref_dx, depth=classes, grad=True)
    del dx
    total = cross_entropy(x.detach(), t, reduction="sum")
    # the per-row losses were rounded to bf16 before this sum: one u_out of the total, within rel
    assert_close(total, loss.double().sum(), depth=rows)


# ---------------------------------------------------------------------------------------------
# torch.library registration: opcheck and torch.compile
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_opcheck_cross_entropy(dtype):
    x = _randn(5, 4, dtype=dtype).t().requires_grad_()  # (4, 5), classes not contiguous
    target = torch.tensor([0, 3, 4, -100], device=rt.device())
    weight = torch.rand(5, generator=torch.Generator().manual_seed(1)).to(dtype).to(rt.device())
    op = torch.ops.blitz.cross_entropy.default
    for reduction in ("mean", "sum", "none"):
        assert_opcheck_passes(op, (x, target, weight, -100, reduction, 0.1))
    assert_opcheck_passes(
        op, (_randn(2, 3, 2, dtype=dtype).requires_grad_(), _targets((2, 2), 3), None, -100, "mean", 0.0)
    )


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_cross_entropy_compiles(reduction):
    x = _randn(4, 5, dtype=torch.float32)
    target = _targets((4,), 5)
    assert_compiled_matches_eager(lambda t: cross_entropy(t, target, reduction=reduction, label_smoothing=0.1) * 2, x)
