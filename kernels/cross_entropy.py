"""cross_entropy in Triton: loss and gradient in one pass over the logits, deterministic sums; forward and backward."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels import _runtime as rt
from kernels._library import custom_op
from kernels._reductions import REDUCTIONS, check_reduction, legacy_reduction
from kernels._strided import strided_offsets
from kernels._sums import acc_dtype, finish_sum
from kernels.softmax import TILE, log_top_plus_rest, online_top_rest, pick_blocks, row_layout

__all__ = ["cross_entropy", "cross_entropy_backward_op", "cross_entropy_op"]

# Rows (targets) per program of the target pre-pass: 16 KiB of fp32 in flight per program.
BLOCK = TILE
# label_smoothing travels to the kernels as the integer eps * 2^53: a Python float argument is
# fp32 on the GPU, an integer converts to fp64 exactly and 2^-53 is exact in every float type.
SMOOTHING_BITS = 53


# ---------------------------------------------------------------------------------------------
# cross_entropy kernels
# ---------------------------------------------------------------------------------------------


@triton.jit
def _class_weights(weight_ptr, cols, c_ok, ws, acc_ty: tl.constexpr, HAS_WEIGHT: tl.constexpr):
    """The class weights at ``cols`` (1 without a weight tensor), 0 past the last class."""
    if HAS_WEIGHT:
        return tl.load(weight_ptr + cols * ws, mask=c_ok, other=0.0).to(acc_ty)
    return tl.where(c_ok, 1.0, 0.0).to(acc_ty)


@triton.jit
def _ce_grad(p, is_target, hit, w_sum, wc, eps, c_f, SMOOTH: tl.constexpr):
    """d loss_i / d x[j] = hit (p[j] - [j == t]) + eps / C (p[j] S_w - w[j]), hit = (1 - eps) w[t]:
    grouped so that each bracket is exactly 0 where it should be (a single class, p = 1)."""
    grad = hit * (p - tl.where(is_target, 1.0, 0.0))
    if SMOOTH:
        grad += eps / c_f * (p * w_sum - wc)
    return grad


@triton.jit
def _ce_targets_kernel(
    target_ptr,  # class indices, int64, the row shape (N, d1, ...), any layout
    weight_ptr,  # class weights (C,) (HAS_WEIGHT), else unused
    part_ptr,  # (2, n_parts): per program, the summed weight of counted targets; the count of bad ones
    n_parts,
    n_rows,
    C,
    ignore_index,
    R1,
    R2,
    R3,  # collapsed row dims
    ts0,
    ts1,
    ts2,
    ts3,  # target strides along them
    ws,  # weight stride
    HAS_WEIGHT: tl.constexpr,
    RANK: tl.constexpr,  # collapsed dims the offsets use: 1 (offset = index * stride) or 4
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = rows < n_rows
    t = tl.load(target_ptr + strided_offsets(rows, R1, R2, R3, ts0, ts1, ts2, ts3, RANK), mask=ok, other=ignore_index)
    counted = ok & (t != ignore_index)
    bad = counted & ((t < 0) | (t >= C))
    good = counted & (t >= 0) & (t < C)
    acc_ty = part_ptr.dtype.element_ty
    if HAS_WEIGHT:
        w = tl.load(weight_ptr + tl.where(good, t, 0) * ws, mask=good, other=0.0).to(acc_ty)
    else:
        w = tl.where(good, 1.0, 0.0).to(acc_ty)
    tl.store(part_ptr + pid, tl.sum(w, axis=0))
    tl.store(part_ptr + n_parts + pid, tl.sum(bad.to(acc_ty), axis=0))


@triton.jit
def _ce_fwd_kernel(
    x_ptr,  # logits (N, C, d1, ...) or (C,), any layout
    target_ptr,  # class indices, int64, the row shape, any layout
    weight_ptr,  # class weights (C,) (HAS_WEIGHT), else unused
    total_ptr,  # summed weight of the counted targets (the mean's divisor), in memory
    loss_ptr,  # per-row losses (REDUCE == 0, contiguous row shape) or per-program partial sums
    stats_ptr,  # (rows, 3): shift, log of the shifted sum, summed class weight (SAVE_STATS)
    grad_ptr,  # d(loss)/d(logits) for grad_output = 1 (STORE_GRAD), contiguous in the logits' shape
    n_rows,
    C,
    ignore_index,
    smoothing_num,  # label_smoothing * 2^53 (SMOOTH)
    R1,
    R2,
    R3,  # collapsed row dims
    xs0,
    xs1,
    xs2,
    xs3,
    xsc,  # logit strides: rows, then along the classes
    ts0,
    ts1,
    ts2,
    ts3,  # target strides
    gs0,
    gs1,
    gs2,
    gs3,
    gsc,  # gradient strides
    ws,  # weight stride
    REDUCE: tl.constexpr,  # 0 none, 1 sum, 2 mean
    HAS_WEIGHT: tl.constexpr,
    SMOOTH: tl.constexpr,  # label_smoothing > 0
    STORE_GRAD: tl.constexpr,
    SAVE_STATS: tl.constexpr,
    RANK: tl.constexpr,  # collapsed dims the offsets use: 1 (offset = index * stride) or 4
    SINGLE: tl.constexpr,  # all classes in one tile; else two passes (online max and sum, then gradient)
    BLOCK_R: tl.constexpr,  # rows per program
    BLOCK_C: tl.constexpr,  # classes per tile
):
    # loss_i = (1 - eps) w[t] (lse - x[t]) + eps / C * sum_c w[c] (lse - x[c]), with lse computed as
    # shift + log(sum exp(x - shift)); its gradient is _ce_grad's
    pid = tl.program_id(0)
    rows = pid.to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = rows < n_rows
    acc_ty = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    x_row = strided_offsets(rows, R1, R2, R3, xs0, xs1, xs2, xs3, RANK)
    t_offs = strided_offsets(rows, R1, R2, R3, ts0, ts1, ts2, ts3, RANK)
    t = tl.load(target_ptr + t_offs, mask=row_ok, other=ignore_index)
    # an out-of-range target counts as ignored here (no read out of bounds); the launcher raises
    valid = row_ok & (t != ignore_index) & (t >= 0) & (t < C)
    t = tl.where(valid, t, 0)
    if HAS_WEIGHT:
        w_t = tl.load(weight_ptr + t * ws, mask=valid, other=0.0).to(acc_ty)
    else:
        w_t = tl.where(valid, 1.0, 0.0).to(acc_ty)
    x_t = tl.load(x_ptr + x_row + t * xsc, mask=valid, other=0.0).to(acc_ty)
    eps = tl.cast(smoothing_num, acc_ty) * (2.0**-53)
    c_f = tl.cast(C, acc_ty)
    cols = tl.arange(0, BLOCK_C).to(tl.int64)[None, :]  # int64: col * stride can pass 2^31
    x_base = x_ptr + x_row[:, None]
    w_sum = tl.zeros((1,), acc_ty)  # S_w (SMOOTH)
    wx = tl.zeros((BLOCK_R,), acc_ty)  # sum_c w[c] (x[c] - shift) (SMOOTH)
    wc = tl.zeros((1, BLOCK_C), acc_ty)  # w[c] of the current tile (SMOOTH)
    if SINGLE:
        c_ok = cols < C
        mask = row_ok[:, None] & c_ok
        x = tl.load(x_base + cols * xsc, mask=mask, other=-float("inf")).to(acc_ty)
        m = tl.max(x, axis=1)
        shift = tl.where(m == -float("inf"), 0.0, m)  # a row of -inf: exp gives 0, the loss NaN
        e = tl.exp(x - shift[:, None])
        top = mask & (x == m[:, None])  # the max entries: e = 1 (split off for log_top_plus_rest)
        c = tl.sum(tl.where(top, e, 0.0), axis=1)
        r = tl.sum(tl.where(top, 0.0, e), axis=1)
        if SMOOTH:
            wc = _class_weights(weight_ptr, cols, c_ok, ws, acc_ty, HAS_WEIGHT)
            w_sum = tl.sum(wc, axis=1)
            wx = tl.sum(tl.where(mask, wc * (x - shift[:, None]), 0.0), axis=1)
    else:
        # online, as in kernels.softmax: the running max m, the sums c of exp(x - shift) over the
        # entries equal to it and r over the rest, rescaled (and the old max entries moved to r)
        # when the max grows
        m = tl.full((BLOCK_R,), -float("inf"), acc_ty)
        shift = tl.zeros((BLOCK_R,), acc_ty)
        c = tl.zeros((BLOCK_R,), acc_ty)
        r = tl.zeros((BLOCK_R,), acc_ty)
        for start in range(0, C, BLOCK_C):
            c_ok = cols + start < C
            mask = row_ok[:, None] & c_ok
            x = tl.load(x_base + (cols + start) * xsc, mask=mask, other=-float("inf")).to(acc_ty)
            m_new, shift_new, c, r = online_top_rest(m, c, r, x, mask)
            if SMOOTH:
                wc = _class_weights(weight_ptr, cols + start, c_ok, ws, acc_ty, HAS_WEIGHT)
                wx += w_sum * (shift - shift_new)  # re-centre the earlier chunks on the new shift
                wx += tl.sum(tl.where(mask, wc * (x - shift_new[:, None]), 0.0), axis=1)
                w_sum += tl.sum(wc, axis=1)
            m = m_new
            shift = shift_new
    s = c + r
    log_s = log_top_plus_rest(c, r)
    nll = log_s - (x_t - shift)  # lse - x[t]
    if SMOOTH:
        loss = (1.0 - eps) * w_t * nll + eps / c_f * (w_sum * log_s - wx)
    else:
        loss = w_t * nll
    loss = tl.where(valid, loss, 0.0)
    if REDUCE == 0:
        tl.store(loss_ptr + rows, loss.to(loss_ptr.dtype.element_ty), mask=row_ok)
    else:
        tl.store(loss_ptr + pid, tl.sum(loss, axis=0))
    if SAVE_STATS:
        tl.store(stats_ptr + 3 * rows, shift, mask=row_ok)
        tl.store(stats_ptr + 3 * rows + 1, log_s, mask=row_ok)
        tl.store(stats_ptr + 3 * rows + 2, tl.zeros_like(shift) + w_sum, mask=row_ok)
    if STORE_GRAD:
        if REDUCE == 2:
            scale = tl.where(valid, 1.0 / tl.load(total_ptr).to(acc_ty), 0.0)
        else:
            scale = tl.where(valid, 1.0, 0.0).to(acc_ty)
        hit = ((1.0 - eps) * w_t)[:, None]
        g_base = grad_ptr + strided_offsets(rows, R1, R2, R3, gs0, gs1, gs2, gs3, RANK)[:, None]
        if SINGLE:
            grad = _ce_grad(e / s[:, None], cols == t[:, None], hit, w_sum, wc, eps, c_f, SMOOTH)
            tl.store(g_base + cols * gsc, (grad * scale[:, None]).to(grad_ptr.dtype.element_ty), mask=mask)
        else:
            for start in range(0, C, BLOCK_C):
                c_ok = cols + start < C
                mask = row_ok[:, None] & c_ok
                x = tl.load(x_base + (cols + start) * xsc, mask=mask, other=-float("inf")).to(acc_ty)
                p = tl.exp(x - shift[:, None]) / s[:, None]
                if SMOOTH:
                    wc = _class_weights(weight_ptr, cols + start, c_ok, ws, acc_ty, HAS_WEIGHT)
                grad = _ce_grad(p, cols + start == t[:, None], hit, w_sum, wc, eps, c_f, SMOOTH)
                tl.store(
                    g_base + (cols + start) * gsc, (grad * scale[:, None]).to(grad_ptr.dtype.element_ty), mask=mask
                )


@triton.jit
def _ce_bwd_kernel(
    x_ptr,  # logits, any layout
    target_ptr,  # class indices, int64, any layout
    weight_ptr,  # class weights (HAS_WEIGHT), else unused
    total_ptr,  # the mean's divisor, in memory
    stats_ptr,  # (rows, 3) saved by the forward: shift, log of the shifted sum, summed class weight
    g_ptr,  # grad_output: per row (REDUCE == 0, any layout) or one value
    dx_ptr,  # grad_input, contiguous in the logits' shape
    n_rows,
    C,
    ignore_index,
    smoothing_num,
    R1,
    R2,
    R3,
    xs0,
    xs1,
    xs2,
    xs3,
    xsc,
    ts0,
    ts1,
    ts2,
    ts3,
    os0,
    os1,
    os2,
    os3,  # grad_output strides (REDUCE == 0)
    ds0,
    ds1,
    ds2,
    ds3,
    dsc,  # grad_input strides
    ws,
    REDUCE: tl.constexpr,
    HAS_WEIGHT: tl.constexpr,
    SMOOTH: tl.constexpr,
    RANK: tl.constexpr,  # collapsed dims the offsets use: 1 (offset = index * stride) or 4
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    # the forward's gradient formula, with the softmax from the saved row statistics (one pass)
    pid = tl.program_id(0)
    rows = pid.to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = rows < n_rows
    acc_ty = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    t_offs = strided_offsets(rows, R1, R2, R3, ts0, ts1, ts2, ts3, RANK)
    t = tl.load(target_ptr + t_offs, mask=row_ok, other=ignore_index)
    valid = row_ok & (t != ignore_index)
    t = tl.where(valid, t, 0)
    if HAS_WEIGHT:
        w_t = tl.load(weight_ptr + t * ws, mask=valid, other=0.0).to(acc_ty)
    else:
        w_t = tl.where(valid, 1.0, 0.0).to(acc_ty)
    if REDUCE == 0:
        g = tl.load(g_ptr + strided_offsets(rows, R1, R2, R3, os0, os1, os2, os3, RANK), mask=row_ok, other=0.0)
    else:
        g = tl.load(g_ptr)
    scale = g.to(acc_ty)
    if REDUCE == 2:
        scale = scale / tl.load(total_ptr).to(acc_ty)
    scale = tl.where(valid, scale, 0.0)  # ignored rows get 0, even when every row is (0 / 0)
    shift = tl.load(stats_ptr + 3 * rows, mask=row_ok, other=0.0)[:, None]
    log_s = tl.load(stats_ptr + 3 * rows + 1, mask=row_ok, other=0.0)[:, None]
    eps = tl.cast(smoothing_num, acc_ty) * (2.0**-53)
    c_f = tl.cast(C, acc_ty)
    w_sum = tl.load(stats_ptr + 3 * rows + 2, mask=row_ok, other=0.0)[:, None]
    hit = ((1.0 - eps) * w_t)[:, None]
    x_base = x_ptr + strided_offsets(rows, R1, R2, R3, xs0, xs1, xs2, xs3, RANK)[:, None]
    d_base = dx_ptr + strided_offsets(rows, R1, R2, R3, ds0, ds1, ds2, ds3, RANK)[:, None]
    cols = tl.arange(0, BLOCK_C).to(tl.int64)[None, :]  # int64: col * stride can pass 2^31
    for start in range(0, C, BLOCK_C):
        c_ok = cols + start < C
        mask = row_ok[:, None] & c_ok
        x = tl.load(x_base + (cols + start) * xsc, mask=mask, other=-float("inf")).to(acc_ty)
        wc = tl.zeros((1, BLOCK_C), acc_ty)
        if SMOOTH:
            wc = _class_weights(weight_ptr, cols + start, c_ok, ws, acc_ty, HAS_WEIGHT)
        grad = _ce_grad(tl.exp((x - shift) - log_s), cols + start == t[:, None], hit, w_sum, wc, eps, c_f, SMOOTH)
        tl.store(d_base + (cols + start) * dsc, (grad * scale[:, None]).to(dx_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------------
# cross_entropy launchers
# ---------------------------------------------------------------------------------------------


def _check_cross_entropy(x, target, weight, ignore_index, reduction, label_smoothing) -> None:
    rt.check_float(x, "input")
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor of int64 class indices, got {type(target).__name__}")
    if target.dtype != torch.int64:
        raise TypeError(
            f"target has dtype {str(target.dtype).removeprefix('torch.')}; expected int64 class indices "
            "(class probabilities as targets are not supported)"
        )
    if weight is not None:
        rt.check_float(weight, "weight")
        rt.check_same_dtype(input=x, weight=weight)
    rt.check_device(x, target, weight)
    if x.dim() == 0:
        raise ValueError("cross_entropy input must be (C,), (N, C) or (N, C, d1, ...); got a 0-d tensor")
    want = tuple(x.shape[:1] + x.shape[2:]) if x.dim() >= 2 else ()
    if tuple(target.shape) != want:
        raise ValueError(
            f"target has shape {tuple(target.shape)}; for input of shape {tuple(x.shape)} it must be {want} "
            "(the input's shape without the class dim 1)"
        )
    n_classes = x.shape[1] if x.dim() >= 2 else x.shape[0]
    if n_classes == 0:
        raise ValueError(f"cross_entropy input {tuple(x.shape)} has no classes")
    if weight is not None and tuple(weight.shape) != (n_classes,):
        raise ValueError(f"weight has shape {tuple(weight.shape)}; expected ({n_classes},), one per class")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise TypeError(f"ignore_index must be an int, got {type(ignore_index).__name__}")
    check_reduction(reduction)
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, int | float):
        raise TypeError(f"label_smoothing must be a float, got {type(label_smoothing).__name__}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing={label_smoothing} must be in [0, 1]")


class _CrossEntropyProblem:
    """The geometry every cross_entropy kernel shares: logits (N, C, d...) as rows x classes."""

    def __init__(self, x, target, weight, reduction, label_smoothing):
        self.class_dim = 1 if x.dim() >= 2 else 0
        self.row_dims_x = [d for d in range(x.dim()) if d != self.class_dim]
        self.row_shape = tuple(target.shape)
        self.n_classes = x.shape[self.class_dim]
        self.weight = weight
        self.reduce = REDUCTIONS[reduction]
        self.smoothing_num = round(float(label_smoothing) * 2.0**SMOOTHING_BITS)
        self.acc_dtype = acc_dtype(x.dtype)

    def layout(self, logit_like: list[torch.Tensor], row_like: list[torch.Tensor]):
        """Row layout of tensors of the logits' shape and of the row shape (target, per-row grads)."""
        layout = row_layout(
            self.row_shape,
            [*logit_like, *row_like],
            [self.row_dims_x] * len(logit_like) + [list(range(len(self.row_shape)))] * len(row_like),
        )
        rows_contiguous = layout.tensors[0].stride(self.class_dim) != 1 and layout.strides[0][3] == 1
        blocks = pick_blocks(layout.n_rows, self.n_classes, rows_contiguous)
        return layout, blocks

    def flags(self) -> dict:
        return {
            "REDUCE": self.reduce,
            "HAS_WEIGHT": self.weight is not None,
            "SMOOTH": self.smoothing_num > 0,
        }

    def weight_args(self, fallback: torch.Tensor) -> tuple[torch.Tensor, int]:
        return (self.weight, self.weight.stride(0)) if self.weight is not None else (fallback, 0)


class _BadTargetCount:
    """The count of out-of-range targets, read on the host without draining the GPU's queue: on
    CUDA it is copied to pinned memory behind an event, and the loss kernels are queued before the
    host waits for that event (a plain ``.item()`` would leave the GPU idle while they launch)."""

    def __init__(self, count: torch.Tensor) -> None:
        self.event = None
        self.host = count
        if count.is_cuda:
            self.host = torch.empty(count.shape, dtype=count.dtype, pin_memory=True)
            self.host.copy_(count, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()

    def positive(self) -> bool:
        if self.event is not None:
            self.event.synchronize()
        return bool(self.host.item() > 0)


def _ce_forward(x, target, weight, ignore_index, reduction, label_smoothing, store_grad: bool):
    """Loss, plus (when ``store_grad``) the gradient for grad_output = 1 (reductions 'mean' and
    'sum') and the per-row statistics the recomputing backward needs; and the summed target weight."""
    p = _CrossEntropyProblem(x, target, weight, reduction, label_smoothing)
    dev = x.device
    n_rows = target.numel()
    weight_t, ws = p.weight_args(x)

    # pre-pass over the targets: the mean's divisor, and whether any target is out of range
    t_layout = row_layout(p.row_shape, [target], [list(range(target.dim()))])
    n_parts = rt.cdiv(n_rows, BLOCK)
    parts = rt.empty((2, n_parts), dtype=p.acc_dtype, device=dev)
    totals = rt.empty((2,), dtype=p.acc_dtype, device=dev)  # summed target weight, bad-target count
    if n_parts:
        _ce_targets_kernel[(n_parts,)](
            t_layout.tensors[0],
            weight_t,
            parts,
            n_parts,
            n_rows,
            p.n_classes,
            ignore_index,
            *t_layout.sizes,
            *t_layout.strides[0],
            ws,
            HAS_WEIGHT=weight is not None,
            RANK=1 if t_layout.flat else 4,
            BLOCK=BLOCK,
        )
    finish_sum(parts, totals)
    check = _BadTargetCount(totals[1:])

    store_grad = store_grad and p.reduce != 0
    loss_rows = rt.empty(p.row_shape, dtype=x.dtype, device=dev) if p.reduce == 0 else None
    grad = rt.empty_like(x) if store_grad else None
    stats = rt.empty((n_rows, 3), dtype=p.acc_dtype, device=dev)
    layout, blocks = p.layout([x, *([grad] if store_grad else [])], [target])
    x_l, *rest = layout.tensors
    grad_l, target_l = (rest[0], rest[1]) if store_grad else (None, rest[0])
    n_programs = rt.cdiv(n_rows, blocks.rows)
    partials = rt.empty((n_programs,), dtype=p.acc_dtype, device=dev) if p.reduce else None
    g_strides = [*layout.strides[1], grad_l.stride(p.class_dim)] if store_grad else [0] * 5
    if n_programs:
        _ce_fwd_kernel[(n_programs,)](
            x_l,
            target_l,
            weight_t,
            totals,
            loss_rows if p.reduce == 0 else partials,
            stats,
            grad_l if store_grad else x_l,
            n_rows,
            p.n_classes,
            ignore_index,
            p.smoothing_num,
            *layout.sizes,
            *layout.strides[0],
            x_l.stride(p.class_dim),
            *layout.strides[-1],
            *g_strides,
            ws,
            **p.flags(),
            STORE_GRAD=store_grad,
            SAVE_STATS=True,
            RANK=1 if layout.flat else 4,
            SINGLE=blocks.single,
            BLOCK_R=blocks.rows,
            BLOCK_C=blocks.length,
            num_warps=blocks.num_warps,
        )
    if p.reduce == 0:
        loss = loss_rows
    else:
        loss = rt.empty((), dtype=x.dtype, device=dev)
        if p.reduce == 2:
            finish_sum(partials, loss.view(1), den=totals)
        else:
            finish_sum(partials, loss.view(1))
    if check.positive():  # the kernels treated bad targets as ignored: nothing was read out of bounds
        bad = target[(target != ignore_index) & ((target < 0) | (target >= p.n_classes))]
        raise IndexError(
            f"target {int(bad.reshape(-1)[0])} is out of range for {p.n_classes} classes "
            f"({bad.numel()} bad target(s); ignore_index={ignore_index})"
        )
    return loss, grad, stats, totals


def _ce_backward(x, target, weight, ignore_index, reduction, label_smoothing, stats, totals, g) -> torch.Tensor:
    """The gradient recomputed from the logits and the saved row statistics (one pass)."""
    p = _CrossEntropyProblem(x, target, weight, reduction, label_smoothing)
    dx = rt.empty_like(x)
    n_rows = target.numel()
    if dx.numel() == 0:
        return dx
    weight_t, ws = p.weight_args(x)
    per_row = [g] if p.reduce == 0 else []
    layout, blocks = p.layout([x, dx], [target, *per_row])
    x_l, dx_l, target_l, *g_l = layout.tensors
    _ce_bwd_kernel[(rt.cdiv(n_rows, blocks.rows),)](
        x_l,
        target_l,
        weight_t,
        totals,
        stats,
        g_l[0] if per_row else g,
        dx_l,
        n_rows,
        p.n_classes,
        ignore_index,
        p.smoothing_num,
        *layout.sizes,
        *layout.strides[0],
        x_l.stride(p.class_dim),
        *layout.strides[2],
        *(layout.strides[3] if per_row else [0, 0, 0, 0]),
        *layout.strides[1],
        dx_l.stride(p.class_dim),
        ws,
        **p.flags(),
        RANK=1 if layout.flat else 4,
        BLOCK_R=blocks.rows,
        BLOCK_C=blocks.length,
        num_warps=blocks.num_warps,
    )
    return dx


# ---------------------------------------------------------------------------------------------
# Custom ops (torch.ops.blitz.cross_entropy and its backward ops) and the public API
# ---------------------------------------------------------------------------------------------
#
# Design: the forward reads the logits once and saves per-row statistics (shift and log-sum); the
# backward recomputes the gradient from them in one pass (read the logits, write the gradient):
# forward + backward move 3 N C elements. (The autograd.Function this replaced also let the
# forward write the gradient for grad_output = 1 and scaled it in place in the backward, 2 N C in
# the loss.backward() case; as a custom op that buffer is an output the backward would mutate,
# which AOT autograd rejects (opcheck's test_aot_dispatch_dynamic: "Node ... was invalid, but is
# output"), and an out-of-place scale would move 4 N C.)


@custom_op("cross_entropy")
def cross_entropy_op(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, row_stats, totals) of cross_entropy on arguments ``cross_entropy`` checked: row_stats
    (rows, 3) and totals (summed target weight, bad-target count), in the accumulation dtype, are
    what the backward recomputes the gradient from; only the loss is differentiable. An
    out-of-range target raises IndexError."""
    loss, _, stats, totals = _ce_forward(input, target, weight, ignore_index, reduction, label_smoothing, False)
    return loss, stats, totals


@cross_entropy_op.register_fake
def _(input, target, weight, ignore_index, reduction, label_smoothing):
    acc = acc_dtype(input.dtype)
    loss = input.new_empty(target.shape if reduction == "none" else ())
    return loss, input.new_empty((target.numel(), 3), dtype=acc), input.new_empty((2,), dtype=acc)


@custom_op("cross_entropy_backward")
def cross_entropy_backward_op(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    row_stats: torch.Tensor,
    totals: torch.Tensor,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
) -> torch.Tensor:
    """The input's gradient recomputed from the logits and the forward's row statistics (one pass)."""
    return _ce_backward(input, target, weight, ignore_index, reduction, label_smoothing, row_stats, totals, grad_output)


@cross_entropy_backward_op.register_fake
def _(grad_output, input, target, weight, row_stats, totals, ignore_index, reduction, label_smoothing):
    return input.new_empty(input.shape)


def _setup_context(ctx, inputs, output) -> None:
    x, target, weight, ignore_index, reduction, label_smoothing = inputs
    _, stats, totals = output
    ctx.mark_non_differentiable(stats, totals)
    ctx.save_for_backward(x, target, weight, stats, totals)
    ctx.options = (ignore_index, reduction, label_smoothing)


def _ce_autograd_backward(ctx, g, _g_stats, _g_totals):
    x, target, weight, stats, totals = ctx.saved_tensors
    dx = None
    if ctx.needs_input_grad[0]:
        dx = cross_entropy_backward_op(g, x, target, weight, stats, totals, *ctx.options)
    return dx, None, None, None, None, None


cross_entropy_op.register_autograd(_ce_autograd_backward, setup_context=_setup_context)


def cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """``torch.nn.functional.cross_entropy`` in Triton for int64 class targets: input (N, C),
    (N, C, d1, ...) or (C,); an out-of-range target (other than ``ignore_index``) raises IndexError;
    all targets ignored gives NaN for 'mean', as torch. ``weight`` gets no gradient (as in torch)."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    _check_cross_entropy(input, target, weight, ignore_index, reduction, label_smoothing)
    loss, _, _ = cross_entropy_op(input, target, weight, ignore_index, reduction, float(label_smoothing))
    return loss
