"""SGD: the engine's property test of one step, and the optimizer against torch.optim.SGD."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch

import kernels.optim
from gradcheck.testing import op_tests
from gradcheck.tolerances import assert_close
from kernels import _runtime as rt
from kernels.optim import SGD, sgd_step, sgd_step_

DEV = rt.device()
STEPS = 10
#: Rounded operations per element and step in torch.optim.SGD (weight decay, momentum, dampening,
#: nesterov, the lr scale, the update), each of which we fuse into one rounding: after STEPS steps
#: the two runs differ by up to STEPS * ROUNDINGS roundings of the parameters' scale (the small lr
#: keeps the feedback through the gradients below that).
ROUNDINGS = 6


test_sgd = op_tests("sgd", cpu_max_examples=15)


def _model(dtype: torch.dtype) -> torch.nn.Module:
    torch.manual_seed(0)
    layers = (torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    return torch.nn.Sequential(*layers).to(dtype).to(DEV)


def _train(model, optimizer, dtype, steps=STEPS, seed=1):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(5, 6, generator=gen, dtype=torch.float64).to(dtype).to(DEV)
        optimizer.zero_grad()
        model(x).sin().sum().backward()  # bounded gradients: maximize does not diverge
        optimizer.step()


def _assert_close(ours, theirs, steps=STEPS):
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        assert_close(p, q, depth=steps * ROUNDINGS, expected_rounded=True, msg=name)


OPTIONS = [
    dict(momentum=m, dampening=d, weight_decay=wd, nesterov=n, maximize=mx)
    for m, d, wd, n, mx in itertools.product((0.0, 0.9), (0.0, 0.3), (0.0, 0.01), (False, True), (False, True))
    if not (n and (m == 0 or d != 0))
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_matches_torch_sgd_over_many_steps(options, dtype):
    ours, theirs = _model(dtype), _model(dtype)
    _train(ours, SGD(ours.parameters(), lr=0.05, **options), dtype)
    _train(theirs, torch.optim.SGD(theirs.parameters(), lr=0.05, **options), dtype)
    _assert_close(ours, theirs)


def test_param_groups_and_missing_grads():
    """Groups with their own hyperparameters; a parameter without a gradient is left alone."""
    ours, theirs = _model(torch.float64), _model(torch.float64)
    frozen = [ours[2].bias, theirs[2].bias]
    for f in frozen:
        f.requires_grad_(False)

    def groups(m):
        return [
            {"params": [m[0].weight, m[0].bias]},
            {"params": [m[2].weight, m[2].bias, m[4].weight, m[4].bias], "lr": 0.01, "momentum": 0.5, "nesterov": True},
        ]

    _train(ours, SGD(groups(ours), lr=0.1, momentum=0.9, weight_decay=0.01), torch.float64)
    _train(theirs, torch.optim.SGD(groups(theirs), lr=0.1, momentum=0.9, weight_decay=0.01), torch.float64)
    _assert_close(ours, theirs)
    assert torch.equal(frozen[0], _model(torch.float64)[2].bias)


def test_state_dict_round_trip():
    """State saved by either optimizer loads into the other and training goes on identically."""
    ours, theirs = _model(torch.float64), _model(torch.float64)
    opt_ours = SGD(ours.parameters(), lr=0.05, momentum=0.9, dampening=0.1)
    opt_theirs = torch.optim.SGD(theirs.parameters(), lr=0.05, momentum=0.9, dampening=0.1)
    _train(ours, opt_ours, torch.float64, steps=3)
    _train(theirs, opt_theirs, torch.float64, steps=3)
    saved_ours, saved_theirs = copy.deepcopy(opt_ours.state_dict()), copy.deepcopy(opt_theirs.state_dict())
    assert saved_ours["param_groups"] == saved_theirs["param_groups"]
    assert saved_ours["state"].keys() == saved_theirs["state"].keys()
    for k, state in saved_theirs["state"].items():
        mine = saved_ours["state"][k]["momentum_buffer"]
        assert_close(mine, state["momentum_buffer"], depth=3 * ROUNDINGS, expected_rounded=True)
    # swap: each optimizer continues from the other's state on a copy of the other's model
    ours_next, theirs_next = copy.deepcopy(theirs), copy.deepcopy(ours)
    opt_a = SGD(ours_next.parameters(), lr=1.0)
    opt_a.load_state_dict(saved_theirs)
    opt_b = torch.optim.SGD(theirs_next.parameters(), lr=1.0)
    opt_b.load_state_dict(saved_ours)
    assert opt_a.param_groups[0]["lr"] == 0.05
    _train(ours_next, opt_a, torch.float64, seed=2)
    _train(theirs_next, opt_b, torch.float64, seed=2)
    _assert_close(ours_next, theirs_next, steps=3 + STEPS)


def test_layouts_and_dtypes_in_one_group():
    """channels_last, transposed and strided (non-dense) parameters, fp32 and fp64 side by side."""
    torch.manual_seed(3)
    values = [
        torch.randn(4, 3, 3, 3).to(DEV).contiguous(memory_format=torch.channels_last),
        torch.randn(5, 7, dtype=torch.float64).to(DEV).t(),
        torch.randn(6, 10).to(DEV)[:, ::2],
        torch.randn(0, 3).to(DEV),
        torch.randn(20000).to(DEV),  # several chunks
    ]
    ours = [torch.nn.Parameter(v.clone()) for v in values]
    theirs = [torch.nn.Parameter(v.clone()) for v in values]
    opt_ours = SGD(ours, lr=0.1, momentum=0.9, weight_decay=0.1)
    opt_theirs = torch.optim.SGD(theirs, lr=0.1, momentum=0.9, weight_decay=0.1)
    for step in range(3):
        for a, b in zip(ours, theirs, strict=True):
            g = torch.randn(a.shape, generator=torch.Generator().manual_seed(step), dtype=a.dtype).to(DEV)
            a.grad, b.grad = g.clone(), g.clone()
        opt_ours.step()
        opt_theirs.step()
    for a, b in zip(ours, theirs, strict=True):
        assert_close(a, b, depth=3 * ROUNDINGS, expected_rounded=True)
        assert a.stride() == b.stride()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_parameters(dtype):
    """16-bit parameters: computed in fp32 and rounded once, so within one rounding of an fp32 run."""
    ours = _model(dtype)
    reference = _model(torch.float32)
    reference.load_state_dict({k: v.float() for k, v in ours.state_dict().items()})
    opt = SGD(ours.parameters(), lr=0.05, momentum=0.9)
    x = torch.randn(5, 6).to(DEV)
    opt.zero_grad()
    ours(x.to(dtype)).sum().backward()
    grads = [p.grad.float() for p in ours.parameters()]
    opt.step()
    for p, q, g in zip(ours.parameters(), reference.parameters(), grads, strict=True):
        exact = q.detach().double() - 0.05 * g.double()  # one step without momentum history
        assert_close(p, exact)


def test_one_launch_per_group_and_dtype(monkeypatch):
    launches = []
    kernel = kernels.optim._sgd_fused_kernel

    class Counting:
        def __getitem__(self, grid):
            launches.append(grid)
            return kernel[grid]

    monkeypatch.setattr(kernels.optim, "_sgd_fused_kernel", Counting())
    model = _model(torch.float32)
    model[4].double()
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    model[4](model[:4](torch.randn(2, 6, device=DEV)).double()).sum().backward()
    opt.step()
    assert len(launches) == 2  # fp32 and fp64 parameters


def test_closure_and_version_counter():
    p = torch.nn.Parameter(torch.ones(3, device=DEV))
    opt = SGD([p], lr=0.5)
    version = p._version

    def closure():
        opt.zero_grad()
        loss = (p * 2).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == 6.0
    assert torch.equal(p.detach(), torch.zeros(3, device=DEV))
    assert p._version > version, "an in-place update must bump the version counter"


def test_tensor_lr():
    p = torch.nn.Parameter(torch.ones(2, dtype=torch.float64, device=DEV))
    p.grad = torch.ones(2, dtype=torch.float64, device=DEV)
    SGD([p], lr=torch.tensor(0.25)).step()
    assert torch.equal(p.detach(), torch.full((2,), 0.75, dtype=torch.float64, device=DEV))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": -1.0}, "Invalid learning rate"),
        ({"lr": 0.1, "momentum": -0.5}, "Invalid momentum"),
        ({"lr": 0.1, "weight_decay": -1.0}, "Invalid weight_decay"),
        ({"lr": 0.1, "nesterov": True}, "Nesterov momentum requires a momentum and zero dampening"),
        ({"lr": 0.1, "momentum": 0.9, "dampening": 0.1, "nesterov": True}, "Nesterov momentum requires"),
    ],
)
def test_bad_hyperparameters_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SGD([torch.nn.Parameter(torch.ones(1, device=DEV))], **kwargs)
    with pytest.raises(ValueError, match=message):
        sgd_step(torch.ones(1, device=DEV), torch.ones(1, device=DEV), torch.ones(1, device=DEV), **kwargs)


def test_sgd_step_bad_input_raises():
    p = torch.ones(3, device=DEV)
    with pytest.raises(ValueError, match="grad has shape"):
        sgd_step(p, torch.ones(4, device=DEV), None, lr=0.1)
    with pytest.raises(ValueError, match="momentum_buffer is None"):
        sgd_step(p, p, None, lr=0.1, momentum=0.9)
    with pytest.raises(TypeError, match="mixed dtypes"):
        sgd_step(p, p.double(), None, lr=0.1)
    with pytest.raises(TypeError, match="grad has dtype int64"):
        sgd_step(p, torch.ones(3, dtype=torch.int64, device=DEV), None, lr=0.1)
    with pytest.raises(NotImplementedError, match="differentiable"):
        SGD([torch.nn.Parameter(p)], lr=0.1, differentiable=True)


def test_sgd_step_first_step_and_no_momentum():
    p = torch.tensor([1.0, 2.0], dtype=torch.float64, device=DEV)
    g = torch.tensor([0.5, -1.0], dtype=torch.float64, device=DEV)
    new_p, new_b = sgd_step(p, g, None, lr=0.1, momentum=0.9, first_step=True)
    assert torch.equal(new_b, g) and torch.equal(new_p, p - 0.1 * g)
    new_p, new_b = sgd_step(p, g, None, lr=0.1)
    assert new_b is None and torch.equal(new_p, p - 0.1 * g)


# ---------------------------------------------------------------------------------------------
# torch.library registration: blitz::sgd_step_ (one parameter) and blitz::sgd_ (the optimizer's
# fused step), both in place
# ---------------------------------------------------------------------------------------------

OPCHECK_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def _r(*shape, dtype):
    return torch.randn(shape, dtype=dtype, device=DEV)


@pytest.mark.parametrize("case", ["momentum_transposed", "plain_maximize", "first_step"])
@pytest.mark.parametrize("dtype", OPCHECK_DTYPES, ids=str)
def test_opcheck_sgd_step_(case, dtype):
    """opcheck of the in-place one-parameter op: its schema declares the mutation of param and
    momentum_buffer (test_schema fails an op that mutates an argument it does not declare)."""
    torch.manual_seed(9)
    if case == "momentum_transposed":  # param and buffer non-contiguous (transposed)
        args = (_r(5, 7, dtype=dtype).t(), _r(7, 5, dtype=dtype), _r(5, 7, dtype=dtype).t(), 0.1, 0.9, 0.0, 0.01)
        args += (True, False, False)
    elif case == "plain_maximize":
        args = (_r(3, 4, dtype=dtype), _r(3, 4, dtype=dtype), None, 0.1, 0.0, 0.0, 0.0, False, True, False)
    else:
        args = (_r(6, dtype=dtype)[::2], _r(3, dtype=dtype), _r(3, dtype=dtype), 0.1, 0.9, 0.3, 0.0, False, False, True)
    results = torch.library.opcheck(torch.ops.blitz.sgd_step_.default, args)
    assert results and set(results.values()) == {"SUCCESS"}, results


@pytest.mark.parametrize("dtype", OPCHECK_DTYPES, ids=str)
def test_opcheck_sgd_(dtype):
    """opcheck of the fused multi-parameter op, with a dense and a strided parameter."""
    torch.manual_seed(10)
    params = [_r(3, 4, dtype=dtype), _r(6, dtype=dtype)[::2]]
    grads = [_r(3, 4, dtype=dtype), _r(3, dtype=dtype)]
    bufs = [_r(3, 4, dtype=dtype), _r(3, dtype=dtype)]
    args = (params, grads, bufs, [False, True], 0.1, 0.9, 0.1, 0.01, False, False)
    results = torch.library.opcheck(torch.ops.blitz.sgd_.default, args)
    assert results and set(results.values()) == {"SUCCESS"}, results


def test_sgd_step_in_place_updates_param_and_buffer():
    """sgd_step_ (blitz::sgd_step_) matches sgd_step and writes through non-contiguous layouts."""
    torch.manual_seed(11)
    p = torch.randn(4, 6, dtype=torch.float64, device=DEV).t()
    g = torch.randn(6, 4, dtype=torch.float64, device=DEV)
    b = torch.randn(4, 6, dtype=torch.float64, device=DEV).t()
    options = dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01)
    new_p, new_b = sgd_step(p, g, b, **options)
    version = p._version
    sgd_step_(p, g, b, **options)
    assert torch.equal(p, new_p) and torch.equal(b, new_b)
    assert p.stride() == (1, 6) and p._version > version
    assert new_p.untyped_storage().data_ptr() != p.untyped_storage().data_ptr()


def test_sgd_step_in_place_rejects_overlapping_and_missing_buffer():
    p = torch.ones(1, device=DEV).expand(4)
    with pytest.raises(ValueError, match="overlapping memory"):
        sgd_step_(p, torch.ones(4, device=DEV), None, lr=0.1)
    with pytest.raises(ValueError, match="momentum_buffer is None"):
        sgd_step_(torch.ones(4, device=DEV), torch.ones(4, device=DEV), None, lr=0.1, momentum=0.9, first_step=True)
