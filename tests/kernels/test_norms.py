"""layer_norm, rms_norm and group_norm: property tests through the engine, the edge cases it does not
draw, and the torch bugs the catalog's strategies found."""

import math

import pytest
import torch
import torch.nn.functional as F

import kernels.norms as kn
from gradcheck.testing import op_tests
from gradcheck.tolerances import assert_close
from kernels import _runtime as rt
from kernels.norms import group_norm, layer_norm, rms_norm
from tests.kernels.library_checks import DTYPES, assert_compiled_matches_eager, assert_opcheck_passes

test_layer_norm = op_tests("layer_norm")
test_rms_norm = op_tests("rms_norm")
test_group_norm = op_tests("group_norm")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _grads(fn, x, *params, g=None):
    leaves = [t.detach().requires_grad_() if t is not None else None for t in (x, *params)]
    y = fn(*leaves)
    g = torch.randn(y.shape, dtype=torch.float64, generator=_gen(1)).to(y) if g is None else g
    wanted = [t for t in leaves if t is not None]
    return y, torch.autograd.grad(y, wanted, g)


def _ours_and_torch(ours, theirs, x, *params, depth, eps=1e-5):
    """Ours at x's dtype against torch at float64 on the same (rounded) inputs."""
    y, grads = _grads(lambda *a: ours(a[0], (x.shape[-1],), *a[1:], eps), x, *params)
    up = [p.double() if p is not None else None for p in params]
    g = torch.randn(y.shape, dtype=torch.float64, generator=_gen(1)).to(y).double()
    y_ref, grads_ref = _grads(lambda *a: theirs(a[0], (x.shape[-1],), *a[1:], eps), x.double(), *up, g=g)
    assert_close(y, y_ref, depth=depth, msg="forward")
    for got, want in zip(grads, grads_ref, strict=True):
        assert_close(got, want, depth=depth, grad=True, msg="backward")


@pytest.mark.parametrize("ours", [layer_norm, rms_norm], ids=["layer_norm", "rms_norm"])
def test_nan_and_inf_rows_match_torch(ours):
    """A NaN or inf in a row spoils that row only, as in torch (layer norm: the whole row NaN; RMS
    norm: inf * 0 = NaN where the inf is, 0 elsewhere), forward and dx; the other rows are exact."""
    x = torch.randn(4, 6, generator=_gen(0)).to(rt.device())
    x[1, 2] = math.nan
    x[2, 0] = math.inf
    w = torch.randn(6, generator=_gen(1)).to(rt.device())
    theirs = F.layer_norm if ours is layer_norm else F.rms_norm
    y, (dx, _) = _grads(lambda a, b: ours(a, (6,), b, eps=1e-5), x, w)
    y_ref, (dx_ref, _) = _grads(lambda a, b: theirs(a, (6,), b, eps=1e-5), x.double(), w.double())
    assert torch.isnan(y[1]).all() and torch.isnan(dx[1]).all()
    assert_close(y, y_ref, depth=6, expected_rounded=True, msg="forward")
    assert_close(dx, dx_ref, depth=6, grad=True, expected_rounded=True, msg="backward")


@pytest.mark.parametrize("ours", [layer_norm, rms_norm], ids=["layer_norm", "rms_norm"])
def test_zero_size_batch(ours):
    """No rows: an empty output and dx, and dweight/dbias zeros of the parameter's shape."""
    x = torch.empty(0, 5, device=rt.device(), requires_grad=True)
    w = torch.randn(5, device=rt.device(), requires_grad=True)
    y = ours(x, (5,), w)
    assert y.shape == (0, 5)
    dx, dw = torch.autograd.grad(y, (x, w), torch.ones_like(y))
    assert dx.shape == (0, 5) and torch.equal(dw, torch.zeros(5))


def test_zero_size_group_norm():
    x = torch.empty(0, 4, 3, device=rt.device(), requires_grad=True)
    w, b = (torch.randn(4, device=rt.device(), requires_grad=True) for _ in range(2))
    y = group_norm(x, 2, w, b)
    dx, dw, db = torch.autograd.grad(y, (x, w, b), torch.ones_like(y))
    assert y.shape == dx.shape == (0, 4, 3) and not dw.any() and not db.any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_rows_past_a_tile_and_many_programs_match_torch(dtype):
    """Rows longer than MAX_ROW (streamed in chunks, partials added chunk by chunk) and more rows
    than one backward program takes (dweight/dbias from several partial rows)."""
    for shape in ((3, kn.MAX_ROW + 77), (1000, 37)):
        x = (torch.randn(*shape, dtype=torch.float64, generator=_gen(2)) * 3 + 5).to(dtype).to(rt.device())
        w = torch.randn(shape[1], dtype=torch.float64, generator=_gen(3)).to(dtype).to(rt.device())
        b = torch.randn(shape[1], dtype=torch.float64, generator=_gen(4)).to(dtype).to(rt.device())
        depth = max(shape)
        _ours_and_torch(layer_norm, F.layer_norm, x, w, b, depth=depth)
        _ours_and_torch(rms_norm, F.rms_norm, x, w, depth=depth)


def test_bf16_dweight_and_dbias_accumulate_in_fp32():
    """4097 rows of g = 1: dbias is 4097 (4096 in bf16), where torch 2.13's CPU bf16 layer_norm
    returns 512 (test_torch_layer_norm_bf16_bias_grad_accumulates_in_bf16)."""
    x = torch.randn(4097, 4, generator=_gen(5)).bfloat16().to(rt.device())
    b = torch.zeros(4, dtype=torch.bfloat16, device=rt.device())
    _, (_, db) = _grads(lambda a, c: layer_norm(a, (4,), None, c), x, b, g=torch.ones_like(x))
    assert torch.equal(db, torch.full((4,), 4096.0, dtype=torch.bfloat16))


def test_multi_dim_normalized_shape_and_eps_none():
    x = torch.randn(3, 4, 5, generator=_gen(6), dtype=torch.float64).to(rt.device())
    w = torch.randn(4, 5, generator=_gen(7), dtype=torch.float64).to(rt.device())
    assert_close(layer_norm(x, (4, 5), w), F.layer_norm(x, (4, 5), w), depth=20)
    assert_close(rms_norm(x, [4, 5], w), F.rms_norm(x, [4, 5], w), depth=20)  # eps None: finfo(float64).eps


def test_bad_input_raises():
    x = torch.randn(2, 3, device=rt.device())
    with pytest.raises(ValueError, match=r"normalized_shape \(4,\) must match the trailing dims"):
        layer_norm(x, (4,))
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\)"):
        layer_norm(x, (3,), torch.ones(4, device=rt.device()))
    with pytest.raises(ValueError, match=r"bias must have shape \(3,\)"):
        layer_norm(x, (3,), None, torch.ones(2, 2, device=rt.device()))
    with pytest.raises(TypeError, match="mixed dtypes"):
        rms_norm(x, (3,), torch.ones(3, dtype=torch.float64, device=rt.device()))
    with pytest.raises(TypeError, match="dtype int64"):
        layer_norm(torch.ones(2, 3, dtype=torch.int64, device=rt.device()), (3,))
    with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
        layer_norm(x, (3,), eps=-1.0)
    with pytest.raises(ValueError, match="normalized_shape must be a non-empty sequence"):
        rms_norm(x, ())
    with pytest.raises(ValueError, match="num_groups=2 must divide the number of channels, 3"):
        group_norm(x, 2)
    with pytest.raises(ValueError, match=r"group_norm needs an input of shape \(N, C, \*\)"):
        group_norm(torch.randn(3, device=rt.device()), 1)


# ---------------------------------------------------------------------------------------------
# torch.library registration: opcheck and torch.compile
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_opcheck_norms(dtype):
    x = torch.randn(4, 6, dtype=dtype, generator=_gen(0)).to(rt.device())
    w = torch.randn(6, dtype=dtype, generator=_gen(1)).to(rt.device())
    ops = torch.ops.blitz
    bias = w.detach().flip(0)
    assert_opcheck_passes(ops.layer_norm.default, (x.requires_grad_(), w.requires_grad_(), bias, 1e-5))
    assert_opcheck_passes(ops.layer_norm.default, (x.detach().t().contiguous().t(), None, None, 1e-5))
    assert_opcheck_passes(ops.rms_norm.default, (x.detach().requires_grad_(), w.detach().requires_grad_(), 1e-6))
    _, mean, rstd = ops.layer_norm(x.detach(), w.detach(), None, 1e-5)
    assert_opcheck_passes(ops.layer_norm_backward.default, (x.detach(), w.detach(), x.detach(), mean, rstd, True, True))
    assert_opcheck_passes(ops.rms_norm_backward.default, (x.detach(), None, x.detach(), rstd, False))


@pytest.mark.parametrize("ours", [layer_norm, rms_norm], ids=["layer_norm", "rms_norm"])
def test_norms_compile(ours):
    x = torch.randn(3, 5, generator=_gen(0)).to(rt.device())
    weights = torch.arange(15.0, device=rt.device()).reshape(3, 5)
    assert_compiled_matches_eager(lambda t: ours(t, (5,)) * weights, x)


# ---------------------------------------------------------------------------------------------
# torch bugs the catalog's strategies found (tests/gradcheck/test_torch_ops.py lists them as known
# failures); when one of these fails, torch is fixed: drop its entry there
# ---------------------------------------------------------------------------------------------


def test_torch_layer_norm_bf16_bias_grad_accumulates_in_bf16():
    """torch 2.13's CPU layer_norm backward accumulates dbias (and dweight) in bf16: 4097 rows of
    grad_output 1 give a dbias of 512 (a bf16 sum stalls there), not 4096."""
    x = torch.randn(4097, 4, generator=_gen(0)).bfloat16().requires_grad_()
    b = torch.zeros(4, dtype=torch.bfloat16, requires_grad=True)
    (db,) = torch.autograd.grad(F.layer_norm(x, (4,), None, b, 1e-5), (b,), torch.ones(4097, 4, dtype=torch.bfloat16))
    assert db.tolist() == [512.0] * 4, "torch's bf16 dbias is right now: drop layer_norm bf16 from KNOWN_FAILURES"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_torch_layer_norm_low_precision_bias_grad_rounds_each_partial_sum(dtype):
    """The same at fp16 (found under thorough: dweight over 2049 rows 4.6% off): three rows of
    grad_output big, 1, 1 give a dbias of big, where big + 2 is representable (the dtype's spacing
    is 2 there: big + 1 is a tie that rounds back to big)."""
    big = 2.0 / torch.finfo(dtype).eps
    x = torch.randn(3, 4, generator=_gen(0)).to(dtype)
    b = torch.zeros(4, dtype=dtype, requires_grad=True)
    g = torch.tensor([big, 1.0, 1.0], dtype=dtype)[:, None].expand(3, 4)
    (db,) = torch.autograd.grad(F.layer_norm(x, (4,), None, b, 1e-5), (b,), g)
    assert torch.tensor(big + 2, dtype=dtype).item() == big + 2
    assert db.tolist() == [big] * 4, f"torch's {dtype} dbias is right now: drop layer_norm {dtype} from KNOWN_FAILURES"


def test_torch_group_norm_channels_last_variance_cancels():
    """torch 2.13's CPU group_norm on a channels_last input takes the variance as E[x^2] - E[x]^2:
    with a mean of 300 and a spread of 0.1 the fp32 result is off by O(1) (0.9 here), where the
    contiguous path stays at fp32's cancellation level (3e-4)."""
    x = torch.randn(4, 8, 3, 3, generator=_gen(0)) * 0.1 + 300
    exact = F.group_norm(x.double(), 2)
    contiguous = (F.group_norm(x, 2).double() - exact).abs().max()
    channels_last = (F.group_norm(x.contiguous(memory_format=torch.channels_last), 2).double() - exact).abs().max()
    assert contiguous < 1e-3
    assert channels_last > 0.1, "torch's channels_last group_norm is right now: drop group_norm from KNOWN_FAILURES"


def test_torch_group_norm_bias_without_weight_backward_raises():
    """torch 2.13's CPU group_norm backward with a bias and no weight raises 'tensor does not have a
    device' (the catalog's strategy leaves that combination out)."""
    x = torch.randn(2, 6, generator=_gen(0), dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, generator=_gen(1), dtype=torch.float64, requires_grad=True)
    y = F.group_norm(x, 2, None, b, 1e-5)
    with pytest.raises(RuntimeError, match="tensor does not have a device"):
        torch.autograd.grad(y, (x, b), torch.ones_like(y))
    # ours takes it
    y = group_norm(x.detach().to(rt.device()).requires_grad_(), 2, None, b.detach().to(rt.device()).requires_grad_())
    assert y.shape == (2, 6)


@pytest.mark.gpu
@pytest.mark.parametrize("ours", ["layer_norm", "rms_norm"])
def test_norms_past_2_to_the_31_elements(ours):
    """(2^19 + 3) rows of 4096 fp16: the last rows live past 2^31 elements (int64 offsets in the
    forward and dx), checked against torch in fp32 on a slice; dweight sums every row, checked
    against torch's own fp16 result (fp32 accumulation on CUDA, rounded the same way)."""
    rows, d = 2**19 + 3, 4096
    assert rows * d > 2**31
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(rows, d, device="cuda", dtype=torch.float16, generator=gen).requires_grad_()
    w = torch.rand(d, device="cuda", dtype=torch.float16, generator=gen).add_(0.5).requires_grad_()
    g = torch.randn(rows, d, device="cuda", dtype=torch.float16, generator=gen)
    if ours == "layer_norm":
        y = layer_norm(x, (d,), w, None)
        dx, dw = torch.autograd.grad(y, (x, w), g)
        want_dw = torch.autograd.grad(F.layer_norm(x, (d,), w, None), (w,), g)[0]
    else:
        y = rms_norm(x, (d,), w, 1e-6)
        dx, dw = torch.autograd.grad(y, (x, w), g)
        want_dw = torch.autograd.grad(F.rms_norm(x, (d,), w, 1e-6), (w,), g)[0]
    tail = slice(rows - 3, rows)
    xt = x.detach()[tail].float().requires_grad_()
    wt = w.detach().float().requires_grad_()
    ref = F.layer_norm(xt, (d,), wt, None) if ours == "layer_norm" else F.rms_norm(xt, (d,), wt, 1e-6)
    (ref_dx,) = torch.autograd.grad(ref, xt, g[tail].float())
    assert_close(y[tail], ref, depth=d)
    assert_close(dx[tail], ref_dx, depth=d, grad=True)
    assert_close(dw, want_dw, depth=rows, grad=True, expected_rounded=True)
