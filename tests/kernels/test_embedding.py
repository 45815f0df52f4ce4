"""embedding: property test through the engine, the planted overwrite bug it must catch, and the
edge cases it does not draw (indices out of range, empty batches, padding_idx, fp32 accumulation)."""

import pytest
import torch
import torch.nn.functional as F

import gradcheck as gc
from gradcheck import profiles
from gradcheck.testing import op_tests
from gradcheck.tolerances import assert_close
from kernels import _runtime as rt
from kernels.embedding import embedding
from tests.kernels.library_checks import DTYPES, assert_compiled_matches_eager, assert_opcheck_passes

test_embedding = op_tests("embedding")


def _weight_grad(fn, indices, weight, g=None, padding_idx=None):
    w = weight.detach().requires_grad_()
    y = fn(indices, w, padding_idx)
    (dw,) = torch.autograd.grad(y, w, torch.ones_like(y) if g is None else g)
    return y, dw


# ---------------------------------------------------------------------------------------------
# edge cases the engine does not draw
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-1, 7, 100])
def test_out_of_range_indices_raise_before_launch(bad):
    weight = torch.randn(7, 3, device=rt.device())
    indices = torch.tensor([[0, 1], [bad, 2]], device=rt.device())
    with pytest.raises(IndexError, match=f"index {bad} is out of range for an embedding table of 7 rows"):
        embedding(indices, weight)


def test_bad_arguments_raise():
    weight = torch.randn(7, 3, device=rt.device())
    with pytest.raises(TypeError, match="int64 or int32"):
        embedding(torch.tensor([0.0, 1.0], device=rt.device()), weight)
    with pytest.raises(ValueError, match="2-d"):
        embedding(torch.tensor([0], device=rt.device()), torch.randn(7, device=rt.device()))
    with pytest.raises(ValueError, match="padding_idx=7"):
        embedding(torch.tensor([0], device=rt.device()), weight, 7)
    with pytest.raises(NotImplementedError):
        embedding(torch.tensor([0], device=rt.device()), weight, None, 1.0)


@pytest.mark.parametrize("shape", [(0,), (2, 0), (0, 3)])
def test_empty_batch_gives_empty_output_and_zero_gradient(shape):
    weight = torch.randn(5, 4, device=rt.device())
    indices = torch.empty(shape, dtype=torch.int64, device=rt.device())
    y, dw = _weight_grad(embedding, indices, weight)
    assert y.shape == (*shape, 4)
    assert torch.equal(dw, torch.zeros_like(weight))


@pytest.mark.parametrize("padding_idx", [2, -3])
def test_padding_row_gets_no_gradient_but_is_looked_up(padding_idx):
    weight = torch.randn(5, 4, dtype=torch.float64, device=rt.device())
    indices = torch.tensor([[2, 2, 0], [4, 2, 1]], device=rt.device())
    g = torch.randn(2, 3, 4, dtype=torch.float64, device=rt.device())
    y, dw = _weight_grad(embedding, indices, weight, g, padding_idx)
    y_ref, dw_ref = _weight_grad(F.embedding, indices, weight, g, padding_idx)
    assert torch.equal(y, y_ref)  # the padding row's values are returned as they are
    assert torch.equal(dw[2], torch.zeros(4, dtype=torch.float64))
    assert_close(dw, dw_ref, depth=indices.numel(), grad=True, expected_rounded=True)


def test_int32_indices_and_strided_index_and_grad_layouts_match_torch():
    weight = torch.randn(33, 6, dtype=torch.float64, device=rt.device())
    base = torch.randint(0, 33, (9, 8), generator=torch.Generator().manual_seed(0)).to(rt.device())
    for indices in (base.to(torch.int32), base.t(), base[::2, 1::3]):
        g = torch.randn(6, *indices.shape, dtype=torch.float64, device=rt.device()).movedim(0, -1)  # strided
        y, dw = _weight_grad(embedding, indices, weight.t().contiguous().t(), g)
        y_ref, dw_ref = _weight_grad(F.embedding, indices.long(), weight, g)
        assert torch.equal(y, y_ref)
        assert_close(dw, dw_ref, depth=indices.numel(), grad=True, expected_rounded=True)


@pytest.mark.parametrize(
    ("dtype", "big"), [(torch.float16, 2048.0), (torch.bfloat16, 256.0)], ids=["float16", "bfloat16"]
)
def test_repeated_indices_accumulate_in_fp32(dtype, big):
    """big + 1 + 1 is exact in the dtype (2050 in fp16, 258 in bf16), but summed in the dtype one
    addition at a time it stays at big (big + 1 is a tie that rounds back; torch's CPU kernel)."""
    weight = torch.zeros(3, 1, dtype=dtype, device=rt.device())
    indices = torch.tensor([1, 1, 1], device=rt.device())
    g = torch.tensor([[big], [1.0], [1.0]], dtype=dtype, device=rt.device())
    _, dw = _weight_grad(embedding, indices, weight, g)
    assert dw[1].item() == big + 2 and dw[0].item() == 0.0 and dw[2].item() == 0.0


def test_backward_is_deterministic():
    weight = torch.randn(10, 16, device=rt.device())
    indices = torch.randint(0, 10, (300,), generator=torch.Generator().manual_seed(1)).to(rt.device())
    g = torch.randn(300, 16, device=rt.device())
    first = _weight_grad(embedding, indices, weight, g)[1]
    assert torch.equal(first, _weight_grad(embedding, indices, weight, g)[1])


# ---------------------------------------------------------------------------------------------
# planted bug: verify_op with the catalog's default strategies must catch it (no shrinking:
# the first failing example settles it)
# ---------------------------------------------------------------------------------------------


class _OverwritingEmbedding(torch.autograd.Function):
    """An embedding whose backward stores each grad_output row into its weight row instead of
    adding it: with repeated indices one lookup's gradient survives and the others are lost."""

    @staticmethod
    def forward(ctx, indices, weight, padding_idx):
        ctx.save_for_backward(indices)
        ctx.shape = weight.shape
        ctx.padding_idx = padding_idx
        return F.embedding(indices, weight, padding_idx)

    @staticmethod
    def backward(ctx, g):
        (indices,) = ctx.saved_tensors
        dw = torch.zeros(ctx.shape, dtype=g.dtype, device=g.device)
        dw.index_put_((indices.reshape(-1),), g.reshape(-1, ctx.shape[1]), accumulate=False)  # the bug
        if ctx.padding_idx is not None:
            dw[ctx.padding_idx] = 0
        return None, dw, None


def test_planted_overwrite_instead_of_accumulate_is_caught():
    with profiles.without_shrinking(), pytest.raises(gc.VerificationError) as err:
        gc.verify_op("embedding", impl=_OverwritingEmbedding.apply, dtypes=[torch.float32], max_findings=1)
    assert err.value.check in ("backward", "backward_fd", "jacobian")


# ---------------------------------------------------------------------------------------------
# torch.library registration: opcheck and torch.compile
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_opcheck_embedding(dtype):
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(7, 5, dtype=dtype, generator=gen).to(rt.device())
    indices = torch.randint(0, 7, (4, 3), generator=gen).to(rt.device())
    for w in (weight, weight.t().contiguous().t()):
        assert_opcheck_passes(torch.ops.blitz.embedding.default, (indices, w.detach().requires_grad_(), 2))
    g = torch.randn(4, 3, 5, dtype=dtype, generator=gen).to(rt.device())
    assert_opcheck_passes(torch.ops.blitz.embedding_backward.default, (indices.t(), g.transpose(0, 1), 7, -1))


def test_embedding_compiles():
    weight = torch.randn(11, 4, device=rt.device())
    indices = torch.tensor([[1, 3, 3], [10, 0, 1]], device=rt.device())
    assert_compiled_matches_eager(lambda w: embedding(indices, w, 3) * 2, weight)


@pytest.mark.gpu
def test_embedding_past_2_to_the_31_elements():
    """(2^19 + 3) indices into a (1000, 4096) fp16 table: the output passes 2^31 elements (int64
    offsets); its last rows are the table's rows, and with grad_output 1 each dweight row is its
    index's count, exact in fp16 (fp32 accumulation, counts under 2048)."""
    n, v, d = 2**19 + 3, 1000, 4096
    gen = torch.Generator(device="cuda").manual_seed(0)
    weight = torch.randn(v, d, device="cuda", dtype=torch.float16, generator=gen).requires_grad_()
    indices = torch.randint(0, v, (n,), device="cuda", generator=gen)
    y = embedding(indices, weight)
    assert y.numel() > 2**31
    assert torch.equal(y[-3:], weight.detach()[indices[-3:]])
    (dw,) = torch.autograd.grad(y, weight, torch.ones_like(y))
    counts = torch.bincount(indices, minlength=v).to(torch.float16)
    assert torch.equal(dw, counts[:, None].expand(v, d))
