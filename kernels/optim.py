"""SGD (torch.optim.SGD's rule and interface) as one fused Triton update over all parameters."""

from __future__ import annotations

from collections.abc import Callable

import torch
import triton
import triton.language as tl

from kernels import _runtime as rt
from kernels._library import custom_op
from kernels._strided import flat_strides, strided_offsets

__all__ = ["SGD", "sgd_step", "sgd_step_"]

# torch.optim.SGD's rule, per parameter p with gradient g (torch/optim/sgd.py, _single_tensor_sgd):
#
#   d = -g if maximize else g
#   d = d + weight_decay * p                        (when weight_decay != 0)
#   buf = d on the first step, else momentum * buf + (1 - dampening) * d   (when momentum != 0)
#   d = d + momentum * buf if nesterov else buf     (when momentum != 0)
#   p = p - lr * d
#
# computed in fp64 whatever the parameter's dtype and rounded once on store, without fused
# multiply-adds (each step rounds as IEEE says, on every backend). The update is an affine map whose
# terms can cancel (momentum * buf against d, p against lr * d): rounding fp32 intermediates would
# cost an error relative to the terms, not to the result. fp64 arithmetic is free here, the update
# being memory-bound (a few flops per 12-20 bytes moved). The hyperparameters reach the kernels as
# a float64 tensor, not as scalar arguments: Triton passes Python floats as fp32.

#: Elements per program of the one-parameter (strided) update.
BLOCK = 1024
#: Elements of one parameter per program of the fused update; each program walks its chunk in
#: blocks of CHUNK_BLOCK (the interpreter takes the whole chunk at once: its cost is per operation).
CHUNK = 8192
CHUNK_BLOCK = CHUNK if rt.INTERPRET else 1024
#: Columns of the fused update's per-tensor table: param, grad and buffer addresses, numel, first step.
TABLE_COLUMNS = 5
#: Compile option: no fused multiply-adds (the interpreter rounds every operation anyway).
_NO_FMA = {} if rt.INTERPRET else {"enable_fp_fusion": False}


@triton.jit
def _sgd_rule(
    p, g, buf,  # parameter, gradient, momentum buffer (ignored on a first step), in the compute dtype
    first,  # the buffer starts as d (first step with momentum)
    lr, momentum, dampening, weight_decay,  # hyperparameters, in the compute dtype
    HAS_MOMENTUM: tl.constexpr, NESTEROV: tl.constexpr, MAXIMIZE: tl.constexpr, HAS_WEIGHT_DECAY: tl.constexpr,
):
    """One SGD step; returns (new parameter, new buffer)."""
    d = g
    if MAXIMIZE:
        d = -g
    if HAS_WEIGHT_DECAY:
        d = d + weight_decay * p
    if HAS_MOMENTUM:
        buf = tl.where(first, d, momentum * buf + (1.0 - dampening) * d)
        if NESTEROV:
            d = d + momentum * buf
        else:
            d = buf
    return p - lr * d, buf


@triton.jit
def _sgd_step_kernel(
    p_ptr, g_ptr, b_ptr,  # parameter, gradient, buffer: any layouts (strides below), updated in place; the
    # buffer is read only with momentum and not on a first step, written only with momentum
    hyper_ptr,  # float64 (lr, momentum, dampening, weight_decay)
    n,  # elements
    first,  # 1 on the first step (the buffer starts as d), else 0
    S1, S2, S3,  # collapsed sizes (S0 is implied by n)
    ps0, ps1, ps2, ps3,  # parameter strides
    gs0, gs1, gs2, gs3,  # gradient strides
    bs0, bs1, bs2, bs3,  # buffer strides
    HAS_MOMENTUM: tl.constexpr, NESTEROV: tl.constexpr, MAXIMIZE: tl.constexpr, HAS_WEIGHT_DECAY: tl.constexpr,
    CONTIGUOUS: tl.constexpr,  # every operand contiguous: skip the index arithmetic
    BLOCK: tl.constexpr,
):
    acc_t = tl.float64  # see the module comment: one rounding, on store
    # stores go through fp32 for 16-bit outputs: the interpreter converts fp64 to bf16 wrongly
    mid_t = tl.float64 if p_ptr.dtype.element_ty == tl.float64 else tl.float32
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < n
    if CONTIGUOUS:
        p_offs = offs
        g_offs = offs
        b_offs = offs
    else:
        p_offs = strided_offsets(offs, S1, S2, S3, ps0, ps1, ps2, ps3, 4)
        g_offs = strided_offsets(offs, S1, S2, S3, gs0, gs1, gs2, gs3, 4)
        b_offs = strided_offsets(offs, S1, S2, S3, bs0, bs1, bs2, bs3, 4)
    # the hyperparameters, inline (each nested jit call costs the interpreter a re-patch per program)
    lr = tl.load(hyper_ptr).to(acc_t)
    momentum = tl.load(hyper_ptr + 1).to(acc_t)
    dampening = tl.load(hyper_ptr + 2).to(acc_t)
    weight_decay = tl.load(hyper_ptr + 3).to(acc_t)
    p = tl.load(p_ptr + p_offs, mask=ok).to(acc_t)
    g = tl.load(g_ptr + g_offs, mask=ok).to(acc_t)
    buf = p  # a placeholder: _sgd_rule reads the buffer only with momentum
    if HAS_MOMENTUM:
        # (the flag is broadcast to the block: the interpreter rejects a scalar-and-block mask)
        buf = tl.load(b_ptr + b_offs, mask=ok & (offs * 0 + first == 0), other=0.0).to(acc_t)
    new_p, new_b = _sgd_rule(
        p, g, buf, first != 0, lr, momentum, dampening, weight_decay, HAS_MOMENTUM, NESTEROV, MAXIMIZE, HAS_WEIGHT_DECAY
    )
    tl.store(p_ptr + p_offs, new_p.to(mid_t).to(p_ptr.dtype.element_ty), mask=ok)
    if HAS_MOMENTUM:
        tl.store(b_ptr + b_offs, new_b.to(mid_t).to(b_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _sgd_fused_kernel(
    table_ptr,  # int64 (tensors, TABLE_COLUMNS): param address, grad address, buffer address, numel, first step
    chunks_ptr,  # int64 (programs, 2): tensor row in the table, first element of this program's chunk
    type_ptr,  # one of the parameters: its element type types the addresses in the table
    hyper_ptr,  # float64 (lr, momentum, dampening, weight_decay)
    COLUMNS: tl.constexpr,  # TABLE_COLUMNS
    HAS_MOMENTUM: tl.constexpr, NESTEROV: tl.constexpr, MAXIMIZE: tl.constexpr, HAS_WEIGHT_DECAY: tl.constexpr,
    CHUNK: tl.constexpr,  # elements per program
    BLOCK: tl.constexpr,  # elements per iteration within the chunk
):
    elem_t = type_ptr.dtype.element_ty
    acc_t = tl.float64  # see the module comment: one rounding, on store
    # stores go through fp32 for 16-bit parameters: the interpreter converts fp64 to bf16 wrongly
    mid_t = tl.float64 if elem_t == tl.float64 else tl.float32
    pid = tl.program_id(0)
    row = table_ptr + tl.load(chunks_ptr + 2 * pid) * COLUMNS
    start = tl.load(chunks_ptr + 2 * pid + 1)
    p_ptr = tl.load(row).to(type_ptr.dtype)  # addresses cast to type_ptr's pointer type
    g_ptr = tl.load(row + 1).to(type_ptr.dtype)
    b_ptr = tl.load(row + 2).to(type_ptr.dtype)
    n = tl.load(row + 3)
    first = tl.load(row + 4)
    # the hyperparameters, inline (each nested jit call costs the interpreter a re-patch per program)
    lr = tl.load(hyper_ptr).to(acc_t)
    momentum = tl.load(hyper_ptr + 1).to(acc_t)
    dampening = tl.load(hyper_ptr + 2).to(acc_t)
    weight_decay = tl.load(hyper_ptr + 3).to(acc_t)
    for i in tl.static_range(0, CHUNK, BLOCK):
        offs = start + i + tl.arange(0, BLOCK)
        ok = offs < n
        p = tl.load(p_ptr + offs, mask=ok).to(acc_t)
        g = tl.load(g_ptr + offs, mask=ok).to(acc_t)
        buf = p  # a placeholder: _sgd_rule reads the buffer only with momentum
        if HAS_MOMENTUM:
            # (the flag is broadcast to the block: the interpreter rejects a scalar-and-block mask)
            buf = tl.load(b_ptr + offs, mask=ok & (offs * 0 + first == 0), other=0.0).to(acc_t)
        new_p, new_b = _sgd_rule(
            p, g, buf, first != 0, lr, momentum, dampening, weight_decay,
            HAS_MOMENTUM, NESTEROV, MAXIMIZE, HAS_WEIGHT_DECAY,
        )  # fmt: skip
        tl.store(p_ptr + offs, new_p.to(mid_t).to(elem_t), mask=ok)
        if HAS_MOMENTUM:
            tl.store(b_ptr + offs, new_b.to(mid_t).to(elem_t), mask=ok)


# ---------------------------------------------------------------------------------------------
# One parameter: in place (blitz::sgd_step_), and out of place (sgd_step, what the catalog verifies)
# ---------------------------------------------------------------------------------------------


def _check_hyper(lr, momentum, dampening, weight_decay, nesterov, maximize) -> tuple[float, float, float, float]:
    values = []
    for name, v in (("lr", lr), ("momentum", momentum), ("dampening", dampening), ("weight_decay", weight_decay)):
        if isinstance(v, torch.Tensor):
            if v.numel() != 1:
                raise ValueError(f"{name} must be a number or a 1-element tensor, got shape {tuple(v.shape)}")
            v = v.item()
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise TypeError(f"{name} must be a number, got {type(v).__name__}")
        values.append(float(v))
    lr, momentum, dampening, weight_decay = values
    if lr < 0:
        raise ValueError(f"Invalid learning rate: {lr}")
    if momentum < 0:
        raise ValueError(f"Invalid momentum value: {momentum}")
    if weight_decay < 0:
        raise ValueError(f"Invalid weight_decay value: {weight_decay}")
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError("Nesterov momentum requires a momentum and zero dampening")
    for name, flag in (("nesterov", nesterov), ("maximize", maximize)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {flag!r}")
    return lr, momentum, dampening, weight_decay


def _hyper_tensor(values: tuple[float, ...], device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, device=device)


@custom_op("sgd_step_", mutates_args=("param", "momentum_buffer"))
def _sgd_step_op(
    param: torch.Tensor,
    grad: torch.Tensor,
    momentum_buffer: torch.Tensor | None,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
    first_step: bool,
) -> None:
    """One torch.optim.SGD step of one parameter, in place: ``param`` and (with momentum)
    ``momentum_buffer`` are overwritten, in their own layouts (any strides, not overlapping).
    The buffer is read only with momentum and not on the first step; with momentum it is required."""
    has_momentum = momentum != 0
    n = param.numel()
    if n == 0:
        return
    buf = momentum_buffer if has_momentum else param
    sizes, strides, contiguous, _ = flat_strides(param, grad, buf)
    _sgd_step_kernel[(rt.cdiv(n, BLOCK),)](
        param, grad, buf, _hyper_tensor((lr, momentum, dampening, weight_decay), param.device), n, int(first_step),
        *sizes[1:], *strides[0], *strides[1], *strides[2],
        HAS_MOMENTUM=has_momentum, NESTEROV=nesterov, MAXIMIZE=maximize, HAS_WEIGHT_DECAY=weight_decay != 0,
        CONTIGUOUS=contiguous, BLOCK=BLOCK, **_NO_FMA,
    )  # fmt: skip


@_sgd_step_op.register_fake
def _(param, grad, momentum_buffer, lr, momentum, dampening, weight_decay, nesterov, maximize, first_step):
    return None


def _check_step(param, grad, momentum_buffer, hyper, first_step, *, in_place: bool) -> torch.Tensor | None:
    """Validate one parameter's step; returns the buffer the step reads (None when it reads none)."""
    rt.check_float(param, "param")
    rt.check_float(grad, "grad")
    if not isinstance(first_step, bool):
        raise TypeError(f"first_step must be a bool, got {first_step!r}")
    has_momentum = hyper[1] != 0
    reads_buffer = has_momentum and not first_step
    if (reads_buffer or (in_place and has_momentum)) and momentum_buffer is None:
        when = "first_step=False" if reads_buffer else "the step is in place"
        raise ValueError(f"momentum_buffer is None, but momentum != 0 and {when}: it must be given")
    buf = momentum_buffer if (reads_buffer or (in_place and has_momentum)) else None
    if buf is not None:
        rt.check_float(buf, "momentum_buffer")
    rt.check_same_dtype(param=param, grad=grad, momentum_buffer=buf)
    rt.check_device(param, grad, buf)
    for name, t in (("grad", grad), ("momentum_buffer", buf)):
        if t is not None and t.shape != param.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, but param has shape {tuple(param.shape)}")
    if in_place:
        for name, t in (("param", param), ("momentum_buffer", buf)):
            if t is not None and _overlaps(t):
                raise ValueError(f"{name} has overlapping memory (stride {t.stride()}): it cannot be updated in place")
    return buf if reads_buffer else None


def _overlaps(t: torch.Tensor) -> bool:
    """Two elements of ``t`` share memory (a stride 0 on a dim of size > 1, or strides that interleave)."""
    dims = sorted((st, n) for n, st in zip(t.shape, t.stride(), strict=True) if n > 1)
    span = 1
    for st, n in dims:
        if st < span:
            return True
        span = st * (n - 1) + span
    return False


def sgd_step_(
    param: torch.Tensor,
    grad: torch.Tensor,
    momentum_buffer: torch.Tensor | None,
    *,
    lr: float,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    maximize: bool = False,
    first_step: bool = False,
) -> None:
    """One torch.optim.SGD step for one parameter, in place (``blitz::sgd_step_``): updates ``param``
    and, with momentum, ``momentum_buffer`` (required then; on the first step it is only written)."""
    hyper = _check_hyper(lr, momentum, dampening, weight_decay, nesterov, maximize)
    _check_step(param, grad, momentum_buffer, hyper, first_step, in_place=True)
    buf = momentum_buffer if hyper[1] != 0 else None
    _sgd_step_op(param, grad, buf, *hyper, nesterov, maximize, first_step)


def sgd_step(
    param: torch.Tensor,
    grad: torch.Tensor,
    momentum_buffer: torch.Tensor | None,
    *,
    lr: float,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    maximize: bool = False,
    first_step: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One torch.optim.SGD step for one parameter, out of place: returns (new_param, new_buffer).

    ``new_buffer`` is None when ``momentum`` is 0 (torch keeps no buffer then). On the first step
    (``first_step``, torch's "no momentum_buffer in the state yet") the buffer starts as the update
    direction and ``momentum_buffer`` is not read (it may be None). Inputs may have any layout;
    outputs are contiguous copies that ``blitz::sgd_step_`` then updates in place."""
    hyper = _check_hyper(lr, momentum, dampening, weight_decay, nesterov, maximize)
    buf = _check_step(param, grad, momentum_buffer, hyper, first_step, in_place=False)
    new_p = rt.empty_like(param).copy_(param)
    new_b = None
    if hyper[1] != 0:
        new_b = rt.empty_like(param)
        if buf is not None:
            new_b.copy_(buf)
    _sgd_step_op(new_p, grad, new_b, *hyper, nesterov, maximize, first_step)
    return new_p, new_b


# ---------------------------------------------------------------------------------------------
# The optimizer: torch.optim.SGD's interface, one fused launch per (param group, device, dtype)
# ---------------------------------------------------------------------------------------------


def _dense_order(t: torch.Tensor) -> tuple[int, ...] | None:
    """The dim order (outermost first) in which ``t`` is dense and non-overlapping, or None."""
    order = sorted(range(t.dim()), key=lambda d: (t.stride(d), t.shape[d]), reverse=True)
    expected = 1
    for d in reversed(order):
        if t.shape[d] != 1 and t.stride(d) != expected:
            return None
        expected *= t.shape[d]
    return tuple(order)


def _same_memory_layout(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Element i of a's memory is element i of b's (same shape, strides on every dim of size > 1)."""
    pairs = zip(a.shape, a.stride(), b.stride(), strict=True)
    return a.shape == b.shape and all(s1 == s2 for n, s1, s2 in pairs if n > 1)


def _empty_as(t: torch.Tensor) -> torch.Tensor:
    """A buffer with ``t``'s memory layout (dense), through rt.empty."""
    flat = rt.empty((t.numel(),), dtype=t.dtype, device=t.device)
    return flat.as_strided(t.shape, t.stride())


class SGD(torch.optim.Optimizer):
    """torch.optim.SGD with the update fused into one Triton launch per (param group, device, dtype).

    Same constructor, defaults, param groups, state (``state[p]["momentum_buffer"]``) and
    state_dict format as torch.optim.SGD, so the two load each other's state. ``foreach`` and
    ``fused`` are accepted and ignored (the update is always fused); ``differentiable=True`` is not
    supported. Parameters whose memory is not dense, or whose gradient is laid out differently,
    are updated through a dense copy (rare: parameters are dense and their gradients follow them)."""

    def __init__(
        self,
        params,
        lr: float | torch.Tensor = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        _check_hyper(lr, momentum, dampening, weight_decay, nesterov, maximize)
        if differentiable:
            raise NotImplementedError("kernels.optim.SGD does not support differentiable=True")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
            "foreach": foreach,
            "differentiable": differentiable,
            "fused": fused,
        }
        super().__init__(params, defaults)

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("nesterov", False)
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)
            group.setdefault("differentiable", False)
            group.setdefault("fused", None)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        """One update of every parameter with a gradient; returns ``closure()``'s loss if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            names = ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize")
            hyper = _check_hyper(*(group[k] for k in names))
            buckets: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("kernels.optim.SGD does not support sparse gradients")
                rt.check_float(p, "parameter")
                if p.grad.dtype != p.dtype or p.grad.shape != p.shape:
                    got, want = f"{p.grad.dtype}{tuple(p.grad.shape)}", f"{p.dtype}{tuple(p.shape)}"
                    raise ValueError(f"gradient {got} does not match its parameter {want}")
                buckets.setdefault((p.device, p.dtype), []).append(p)
            for (device, _), params in buckets.items():
                self._update(params, hyper, group, device)
        return loss

    def _update(self, params: list[torch.Tensor], hyper: tuple[float, ...], group: dict, device: torch.device) -> None:
        """One fused launch (``blitz::sgd_``) for ``params`` (one device, one dtype)."""
        params = [p for p in params if p.numel()]
        if not params:
            return
        bufs: list[torch.Tensor] = []
        first: list[bool] = []
        if hyper[1] != 0:
            for p in params:
                state = self.state[p]
                buf = state.get("momentum_buffer")
                first.append(buf is None)
                if buf is None:
                    buf = _empty_as(p) if _dense_order(p) is not None else rt.empty_like(p)
                    state["momentum_buffer"] = buf
                bufs.append(buf)
        _sgd_op(
            params, [p.grad for p in params], bufs, first, *hyper, bool(group["nesterov"]), bool(group["maximize"])
        )


@custom_op("sgd_", mutates_args=("params", "momentum_buffers"))
def _sgd_op(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    momentum_buffers: list[torch.Tensor],
    first_step: list[bool],
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
) -> None:
    """One torch.optim.SGD step of every parameter in ``params`` (one device, one dtype, gradients
    of the same shapes), in place and in one launch. With momentum, ``momentum_buffers`` and
    ``first_step`` (a buffer is only written on its first step) have one entry per parameter;
    without, both are empty. Parameters whose memory is not dense, or whose gradient or buffer is
    laid out differently, are updated through dense copies, copied back."""
    has_momentum = momentum != 0
    rows: list[list[int]] = []
    chunks: list[int] = []
    write_back: list[tuple[torch.Tensor, torch.Tensor]] = []
    keep_alive: list[torch.Tensor] = []
    for i, (p, grad) in enumerate(zip(params, grads, strict=True)):
        n = p.numel()
        if n == 0:
            continue
        target = p
        buf = momentum_buffers[i] if has_momentum else None
        dense = _dense_order(p) is not None and _same_memory_layout(p, grad)
        dense = dense and (buf is None or _same_memory_layout(p, buf))
        if not dense:  # walk a dense copy, then copy the results back
            target = p.contiguous()
            grad = grad.contiguous()
            if buf is not None:
                dense_buf = buf.contiguous()
                write_back.append((buf, dense_buf))
                buf = dense_buf
            write_back.append((p, target))
            keep_alive += [target, grad]
        row = len(rows)
        first = int(first_step[i]) if has_momentum else 0
        rows.append([target.data_ptr(), grad.data_ptr(), buf.data_ptr() if buf is not None else 0, n, first])
        for start in range(0, n, CHUNK):
            chunks += [row, start]
    if not rows:
        return
    device = params[0].device
    table = torch.tensor([v for r in rows for v in r] + chunks, dtype=torch.int64).to(device, non_blocking=True)
    n_rows = len(rows) * TABLE_COLUMNS
    _sgd_fused_kernel[(len(chunks) // 2,)](
        table[:n_rows], table[n_rows:], params[0], _hyper_tensor((lr, momentum, dampening, weight_decay), device),
        COLUMNS=TABLE_COLUMNS,
        HAS_MOMENTUM=has_momentum, NESTEROV=nesterov, MAXIMIZE=maximize,
        HAS_WEIGHT_DECAY=weight_decay != 0, CHUNK=CHUNK, BLOCK=CHUNK_BLOCK, **_NO_FMA,
    )  # fmt: skip
    for dst, src in write_back:
        dst.copy_(src)


@_sgd_op.register_fake
def _(params, grads, momentum_buffers, first_step, lr, momentum, dampening, weight_decay, nesterov, maximize):
    return None
