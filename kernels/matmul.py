"""matmul, linear and linear_relu in Triton: one tiled tensor-core kernel with fused epilogues, forward and backward."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels import _runtime as rt
from kernels._library import custom_op
from kernels._strided import collapse

__all__ = ["linear", "linear_relu", "matmul"]

# tl.dot on fp64 operands (fp64 accumulation) compiles from triton 3.5 on (triton-lang/triton#7310)
# and always runs in the interpreter; older compilers take the broadcast-multiply-sum fallback.
_TRITON_VERSION = tuple(int(p) for p in triton.__version__.split(".")[:2])
_FP64_DOT = rt.INTERPRET or _TRITON_VERSION >= (3, 5)


def _config(bm: int, bn: int, bk: int, warps: int, stages: int) -> triton.Config:
    return triton.Config(
        {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8}, num_warps=warps, num_stages=stages
    )


# The first config is the only one under the interpreter: 64x64 output tiles fit the test shapes
# (a few dozen rows) with little padding, and a K step of 128 takes a K of 1000 in 8 steps (measured
# fastest of 64/128/256-wide tiles on the property tests' shapes). The rest follow the shapes that
# reach cuBLAS on H100-class parts with wgmma (128x256 and 256x128 tiles, 8 warps, 3-4 stages fit
# 228 KiB of shared memory at 2 bytes per element), plus smaller tiles for small or skinny problems
# and for fp32/fp64, whose larger elements halve or quarter what fits; a config that does not fit
# is skipped by the autotuner.
_CONFIGS = [
    _config(64, 64, 128, 4, 3),
    _config(128, 128, 64, 8, 3),
    _config(128, 256, 64, 8, 3),
    _config(256, 128, 64, 8, 3),
    _config(128, 256, 64, 8, 4),
    _config(256, 128, 64, 8, 4),
    _config(128, 128, 64, 8, 4),
    _config(128, 128, 64, 4, 4),
    _config(128, 128, 32, 4, 4),
    _config(64, 128, 64, 4, 4),
    _config(128, 64, 64, 4, 4),
    _config(64, 64, 64, 4, 4),
    _config(64, 64, 32, 4, 5),
    _config(32, 64, 32, 4, 4),
]


@triton.jit
def _accumulate(
    acc,  # (BLOCK_M, BLOCK_N) running sum of A @ B
    rowsum,  # (BLOCK_M,) running row sums of A (ROWSUM_A), else unused
    a_tile_ptr,  # A at (batch, this program's first row, 0)
    b_tile_ptr,  # B at (batch, 0, this program's first column)
    keep_tile_ptr,  # keep at (batch, first row, 0) (MASK_A), else unused
    m_left,
    n_left,  # rows / columns of this tile inside the matrix
    K,
    stride_am,
    stride_ak,
    stride_bk,
    stride_bn,
    stride_km,
    stride_kk,
    do_rowsum,  # this program adds to rowsum (only the first column of tiles does)
    MASK_A: tl.constexpr,
    ROWSUM_A: tl.constexpr,
    UPCAST: tl.constexpr,  # interpreter: dot on fp32 copies of fp16/bf16 operands
    PRECISION: tl.constexpr,  # tl.dot input_precision for fp32 operands ("ieee" or "tf32")
    DOT_FALLBACK: tl.constexpr,  # fp64 on a compiler without fp64 tl.dot: multiply and sum
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """acc += A[tile, :] @ B[:, tile] over the whole K dimension of one batch."""
    # int64 offsets: a row stride times BLOCK_M (a K of 2^25) can pass 2^31
    rm = tl.arange(0, BLOCK_M).to(tl.int64)
    rn = tl.arange(0, BLOCK_N).to(tl.int64)
    rk = tl.arange(0, BLOCK_K).to(tl.int64)
    a_ptrs = a_tile_ptr + rm[:, None] * stride_am + rk[None, :] * stride_ak
    b_ptrs = b_tile_ptr + rk[:, None] * stride_bk + rn[None, :] * stride_bn
    keep_ptrs = keep_tile_ptr + rm[:, None] * stride_km + rk[None, :] * stride_kk
    m_ok = rm[:, None] < m_left
    n_ok = rn[None, :] < n_left
    for k0 in range(0, K, BLOCK_K):
        k_left = K - k0
        a_mask = m_ok & (rk[None, :] < k_left)
        a = tl.load(a_ptrs, mask=a_mask, other=0.0)
        b = tl.load(b_ptrs, mask=(rk[:, None] < k_left) & n_ok, other=0.0)
        if MASK_A:  # relu backward: the gradient passes where the forward output was positive
            keep = tl.load(keep_ptrs, mask=a_mask, other=0.0).to(acc.dtype)
            a = tl.where(keep > 0, a, 0.0).to(a.dtype)
            keep_ptrs += BLOCK_K * stride_kk
        if ROWSUM_A:  # noqa: SIM102  (a constexpr, then a runtime condition: Triton wants two ifs)
            if do_rowsum:
                rowsum += tl.sum(a.to(acc.dtype), axis=1)
        if UPCAST:  # interpreter: bf16 dot is wrong there; fp32 copies give the exact products
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        if DOT_FALLBACK:
            acc += tl.sum(a[:, :, None] * b[None, :, :], axis=1)
        else:
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk
    return acc, rowsum


@rt.autotune(_CONFIGS, key=["M", "N", "K"])
@triton.jit
def _matmul_kernel(
    a_ptr,  # A (batch, M, K), any strides (0 along a broadcast batch)
    b_ptr,  # B (batch, K, N), any strides
    c_ptr,  # C (batch, M, N), or (1, M, N) with REDUCE_BATCH
    bias_ptr,  # (N,) added to every row of C (HAS_BIAS), else unused
    keep_ptr,  # (batch, M, K): A counts only where keep > 0 (MASK_A), else unused
    rowsum_ptr,  # (M,) sums of (masked) A over batch and K (ROWSUM_A), else unused
    M,
    N,
    K,
    n_batch,  # with REDUCE_BATCH: batches summed into the one output; else unused (the grid has them)
    stride_ab,
    stride_am,
    stride_ak,  # A strides, in elements
    stride_bb,
    stride_bk,
    stride_bn,  # B strides
    stride_cb,
    stride_cm,
    stride_cn,  # C strides
    stride_kb,
    stride_km,
    stride_kk,  # keep strides
    stride_bias,  # bias stride
    HAS_BIAS: tl.constexpr,
    RELU: tl.constexpr,  # store max(C, 0)
    MASK_A: tl.constexpr,
    ROWSUM_A: tl.constexpr,
    REDUCE_BATCH: tl.constexpr,  # C = sum over the batch of A_b @ B_b, in a fixed order
    UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
    DOT_FALLBACK: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,  # tiles of GROUP_M rows run together so B's columns stay in L2
):
    # program -> (batch, tile row, tile column), tile rows grouped for L2 reuse
    pid = tl.program_id(0)
    num_m = (M + BLOCK_M - 1) // BLOCK_M  # (tl.cdiv is a device-function call: slow in the interpreter)
    num_n = (N + BLOCK_N - 1) // BLOCK_N
    tiles = num_m * num_n
    pid_b = pid // tiles
    t = pid % tiles
    per_group = GROUP_M * num_n
    first_m = (t // per_group) * GROUP_M
    group_m = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (t % per_group) % group_m
    pid_n = (t % per_group) // group_m

    m0 = (pid_m * BLOCK_M).to(tl.int64)
    n0 = (pid_n * BLOCK_N).to(tl.int64)
    m_left = M - pid_m * BLOCK_M
    n_left = N - pid_n * BLOCK_N
    acc_ty = tl.float64 if c_ptr.dtype.element_ty == tl.float64 else tl.float32
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=acc_ty)
    rowsum = tl.zeros((BLOCK_M,), dtype=acc_ty)
    do_rowsum = pid_n == 0
    if REDUCE_BATCH:
        a_batch = a_ptr + m0 * stride_am  # pointers advance one batch per iteration (64-bit)
        b_batch = b_ptr + n0 * stride_bn
        keep_batch = keep_ptr + m0 * stride_km
        for _ in range(0, n_batch):
            acc, rowsum = _accumulate(
                acc,
                rowsum,
                a_batch,
                b_batch,
                keep_batch,
                m_left,
                n_left,
                K,
                stride_am,
                stride_ak,
                stride_bk,
                stride_bn,
                stride_km,
                stride_kk,
                do_rowsum,
                MASK_A,
                ROWSUM_A,
                UPCAST,
                PRECISION,
                DOT_FALLBACK,
                BLOCK_M,
                BLOCK_N,
                BLOCK_K,
            )
            a_batch += stride_ab
            b_batch += stride_bb
            keep_batch += stride_kb
    else:
        bb = pid_b.to(tl.int64)
        acc, rowsum = _accumulate(
            acc,
            rowsum,
            a_ptr + bb * stride_ab + m0 * stride_am,
            b_ptr + bb * stride_bb + n0 * stride_bn,
            keep_ptr + bb * stride_kb + m0 * stride_km,
            m_left,
            n_left,
            K,
            stride_am,
            stride_ak,
            stride_bk,
            stride_bn,
            stride_km,
            stride_kk,
            do_rowsum,
            MASK_A,
            ROWSUM_A,
            UPCAST,
            PRECISION,
            DOT_FALLBACK,
            BLOCK_M,
            BLOCK_N,
            BLOCK_K,
        )

    rm = tl.arange(0, BLOCK_M).to(tl.int64)
    rn = tl.arange(0, BLOCK_N).to(tl.int64)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + (n0 + rn) * stride_bias, mask=rn < n_left, other=0.0)
        acc += bias.to(acc_ty)[None, :]
    if RELU:
        acc = tl.where(acc < 0, 0.0, acc)  # NaN stays NaN, as in torch
    c_ptrs = c_ptr + pid_b.to(tl.int64) * stride_cb + m0 * stride_cm + n0 * stride_cn
    c_ptrs = c_ptrs + rm[:, None] * stride_cm + rn[None, :] * stride_cn
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=(rm[:, None] < m_left) & (rn[None, :] < n_left))
    if ROWSUM_A:  # noqa: SIM102  (as above)
        if do_rowsum:
            tl.store(rowsum_ptr + m0 + rm, rowsum.to(rowsum_ptr.dtype.element_ty), mask=rm < m_left)


def _mm(
    a: torch.Tensor,
    b: torch.Tensor,
    out: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    relu: bool = False,
    keep: torch.Tensor | None = None,
    rowsum: torch.Tensor | None = None,
) -> torch.Tensor:
    """out = a @ b (+ bias, relu) for a (B, M, K), b (B, K, N) of one batch size B (stride 0 where
    broadcast). out is (B, M, N), or (1, M, N) to sum over the batch. With ``keep`` (B, M, K), a
    counts only where keep > 0; ``rowsum`` (M,) receives the row sums of that (masked) a."""
    batch, m, k = a.shape
    n = b.shape[2]
    reduce = out.shape[0] == 1 and batch != 1  # (batch 0 sums nothing: zeros)
    if out.numel() == 0:
        return out
    keep_t = keep if keep is not None else a

    def grid(meta):
        return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]) * (1 if reduce else batch),)

    _matmul_kernel[grid](
        a,
        b,
        out,
        bias if bias is not None else out,
        keep_t,
        rowsum if rowsum is not None else out,
        m,
        n,
        k,
        batch,
        *a.stride(),
        *b.stride(),
        *out.stride(),
        *keep_t.stride(),
        bias.stride(0) if bias is not None else 0,
        HAS_BIAS=bias is not None,
        RELU=relu,
        MASK_A=keep is not None,
        ROWSUM_A=rowsum is not None,
        REDUCE_BATCH=reduce,
        UPCAST=rt.INTERPRET and a.dtype in (torch.float16, torch.bfloat16),
        # fp32 follows torch's matmul precision; "tf32" is tl.dot's default, the one fp16/bf16/fp64 take
        PRECISION=rt.dot_precision(a.dtype) if a.dtype == torch.float32 else "tf32",
        DOT_FALLBACK=a.dtype == torch.float64 and not _FP64_DOT,
    )
    return out


# ---------------------------------------------------------------------------------------------
# matmul
# ---------------------------------------------------------------------------------------------


def _as_batched(x: torch.Tensor, batch: int) -> torch.Tensor:
    """A 2-D or 3-D operand as (batch, rows, cols), broadcast (stride 0) along a batch it lacks."""
    x3 = x.unsqueeze(0) if x.dim() == 2 else x
    return x3.expand(batch, -1, -1)


def _check_matmul(a: torch.Tensor, b: torch.Tensor) -> int:
    """Validate matmul operands; returns the broadcast batch size (1 for 2-D @ 2-D)."""
    rt.check_float(a, "input")
    rt.check_float(b, "other")
    rt.check_same_dtype(input=a, other=b)
    rt.check_device(a, b)
    for name, x in (("input", a), ("other", b)):
        if x.dim() not in (2, 3):
            raise ValueError(f"matmul supports 2-D and 3-D operands; {name} has shape {tuple(x.shape)}")
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(
            f"matmul inner dimensions differ: input {tuple(a.shape)} has {a.shape[-1]} columns, "
            f"other {tuple(b.shape)} has {b.shape[-2]} rows"
        )
    ba = a.shape[0] if a.dim() == 3 else 1
    bb = b.shape[0] if b.dim() == 3 else 1
    if ba != bb and 1 not in (ba, bb):
        raise ValueError(f"matmul batch sizes do not broadcast: input {tuple(a.shape)}, other {tuple(b.shape)}")
    return _batch_size(a, b)


def _batch_size(a: torch.Tensor, b: torch.Tensor) -> int:
    """The broadcast batch size of two checked matmul operands (1 for 2-D @ 2-D)."""
    ba = a.shape[0] if a.dim() == 3 else 1
    bb = b.shape[0] if b.dim() == 3 else 1
    return bb if ba == 1 else ba


def _grad_view(grad: torch.Tensor) -> torch.Tensor:
    """A 2-D or 3-D gradient output as (batch or 1, rows, cols); batch 1 under a larger batch
    makes the kernel sum over the batch the operand was broadcast along."""
    return grad.unsqueeze(0) if grad.dim() == 2 else grad


def _placeholder(like: torch.Tensor) -> torch.Tensor:
    """What a backward op returns for a gradient its output_mask did not ask for (a schema cannot
    return None): an empty tensor, never read."""
    return like.new_empty((0,))


@custom_op("matmul")
def _matmul_op(input: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """input @ other for operands ``matmul`` checked (2-D or 3-D, batches that broadcast)."""
    batch = _batch_size(input, other)
    m, n = input.shape[-2], other.shape[-1]
    three_d = input.dim() == 3 or other.dim() == 3
    out = rt.empty((batch, m, n) if three_d else (m, n), dtype=input.dtype, device=input.device)
    _mm(_as_batched(input, batch), _as_batched(other, batch), out.view(batch, m, n))
    return out


@_matmul_op.register_fake
def _(input: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    m, n = input.shape[-2], other.shape[-1]
    if input.dim() == 3 or other.dim() == 3:
        return input.new_empty((_batch_size(input, other), m, n))
    return input.new_empty((m, n))


@custom_op("matmul_backward")
def _matmul_backward_op(
    grad: torch.Tensor, input: torch.Tensor, other: torch.Tensor, output_mask: list[bool]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_input, grad_other) of ``blitz::matmul``, each only where ``output_mask`` asks (else an
    empty placeholder); a gradient of an operand broadcast along the batch is summed over it."""
    batch = _batch_size(input, other)
    g3 = _as_batched(grad, batch)  # (batch, M, N)
    da = db = None
    if output_mask[0]:  # dA = dC @ B^T
        da = rt.empty_like(input)
        _mm(g3, _as_batched(other, batch).transpose(1, 2), _grad_view(da))
    if output_mask[1]:  # dB = A^T @ dC
        db = rt.empty_like(other)
        _mm(_as_batched(input, batch).transpose(1, 2), g3, _grad_view(db))
    return (da if da is not None else _placeholder(input), db if db is not None else _placeholder(other))


@_matmul_backward_op.register_fake
def _(grad, input, other, output_mask):
    return (
        input.new_empty(input.shape) if output_mask[0] else _placeholder(input),
        other.new_empty(other.shape) if output_mask[1] else _placeholder(other),
    )


def _matmul_setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)


def _matmul_backward(ctx, grad: torch.Tensor):
    a, b = ctx.saved_tensors
    need = [bool(n) for n in ctx.needs_input_grad[:2]]
    if not any(need):
        return None, None
    da, db = _matmul_backward_op(grad, a, b, need)
    return (da if need[0] else None), (db if need[1] else None)


_matmul_op.register_autograd(_matmul_backward, setup_context=_matmul_setup_context)


def matmul(input: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``torch.matmul`` in Triton for 2-D and 3-D operands: (M, K) @ (K, N), and batched
    (B, M, K) @ (B, K, N) with either side 2-D or of batch 1 broadcast along the batch."""
    _check_matmul(input, other)
    return _matmul_op(input, other)


# ---------------------------------------------------------------------------------------------
# linear
# ---------------------------------------------------------------------------------------------


def _rows(lead: tuple[int, ...], *tensors: torch.Tensor) -> list[torch.Tensor]:
    """(B, M, last) views of tensors whose leading dims are ``lead``, splitting the leading dims
    the same way for all of them (so row i of one is row i of every other); a tensor whose leading
    dims do not merge into two is copied (contiguous leading dims merge into one)."""
    strides = [list(t.stride()[: len(lead)]) for t in tensors]
    try:
        sizes, merged = collapse(lead, strides)
    except ValueError:
        sizes = None
    if sizes is None or sizes[0] * sizes[1] != 1:
        tensors = tuple(t if t.is_contiguous() else t.contiguous() for t in tensors)
        sizes, merged = collapse(lead, [list(t.stride()[: len(lead)]) for t in tensors])
    return [
        t.as_strided((sizes[2], sizes[3], t.shape[-1]), (st[2], st[3], t.stride(-1)))
        for t, st in zip(tensors, merged, strict=True)
    ]


def _check_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    rt.check_float(x, "input")
    rt.check_float(weight, "weight")
    if bias is not None:
        rt.check_float(bias, "bias")
    rt.check_same_dtype(input=x, weight=weight, bias=bias)
    rt.check_device(x, weight, bias)
    if weight.dim() != 2:
        raise ValueError(f"linear weight must be 2-D (out_features, in_features); got shape {tuple(weight.shape)}")
    if x.dim() < 1:
        raise ValueError("linear input must have at least 1 dimension (..., in_features); got a 0-d tensor")
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"linear input has {x.shape[-1]} features (shape {tuple(x.shape)}) but weight "
            f"{tuple(weight.shape)} expects in_features={weight.shape[1]}"
        )
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != weight.shape[0]):
        raise ValueError(f"linear bias must have shape ({weight.shape[0]},); got {tuple(bias.shape)}")


def _linear_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, relu: bool) -> torch.Tensor:
    """x @ weight.T + bias (then relu when ``relu``) for operands ``linear`` checked."""
    lead = tuple(x.shape[:-1])
    y = rt.empty((*lead, weight.shape[0]), dtype=x.dtype, device=x.device)
    x3, y3 = _rows(lead, x, y)  # (B, M, K), (B, M, N)
    w3 = weight.t().unsqueeze(0).expand(x3.shape[0], -1, -1)  # (B, K, N), stride 0 along B
    _mm(x3, w3, y3, bias=bias, relu=relu)
    return y


@custom_op("linear")
def _linear_op(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """input @ weight.T + bias for operands ``linear`` checked."""
    return _linear_forward(input, weight, bias, relu=False)


@custom_op("linear_relu")
def _linear_relu_op(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """relu(input @ weight.T + bias), the relu in the matmul's epilogue."""
    return _linear_forward(input, weight, bias, relu=True)


def _linear_fake(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return input.new_empty((*input.shape[:-1], weight.shape[0]))


_linear_op.register_fake(_linear_fake)
_linear_relu_op.register_fake(_linear_fake)


@custom_op("linear_backward")
def _linear_backward_op(
    grad: torch.Tensor,
    input: torch.Tensor,
    weight: torch.Tensor,
    output: torch.Tensor | None,
    output_mask: list[bool],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad_input, grad_weight, grad_bias) of ``blitz::linear`` (``output`` None) or of
    ``blitz::linear_relu`` (``output`` its result: the gradient passes where it is positive), each
    only where ``output_mask`` asks (else an empty placeholder). dW and db come from one pass."""
    need_x, need_w, need_b = output_mask
    lead = tuple(input.shape[:-1])
    dx = rt.empty_like(input) if need_x else None
    # one split of the leading dims into (B, M) rows for every tensor that walks them
    views = iter(_rows(lead, grad, input, *(t for t in (output, dx) if t is not None)))
    g3, x3 = next(views), next(views)  # (B, M, N), (B, M, K)
    y3 = next(views) if output is not None else None  # (B, M, N)
    batch = g3.shape[0]
    dw = db = None
    if need_x:  # dx = g' @ W, g' = g masked where the relu output was not positive
        w3 = weight.unsqueeze(0).expand(batch, -1, -1)  # (B, N, K)
        _mm(g3, w3, next(views), keep=y3)
    if need_w or need_b:  # dW = g'^T @ x over every row; db = column sums of g', in the same pass
        dw = rt.empty_like(weight)
        db = rt.empty((weight.shape[0],), dtype=weight.dtype, device=weight.device) if need_b else None
        _mm(
            g3.transpose(1, 2),
            x3,
            dw.unsqueeze(0),
            keep=y3.transpose(1, 2) if y3 is not None else None,
            rowsum=db,
        )
    return (
        dx if dx is not None else _placeholder(input),
        dw if need_w else _placeholder(weight),
        db if db is not None else _placeholder(weight),
    )


@_linear_backward_op.register_fake
def _(grad, input, weight, output, output_mask):
    need_x, need_w, need_b = output_mask
    return (
        input.new_empty(input.shape) if need_x else _placeholder(input),
        weight.new_empty(weight.shape) if need_w else _placeholder(weight),
        weight.new_empty((weight.shape[0],)) if need_b else _placeholder(weight),
    )


def _linear_setup_context(ctx, inputs, output) -> None:
    x, weight, bias = inputs
    ctx.has_bias = bias is not None
    ctx.save_for_backward(x, weight)


def _linear_relu_setup_context(ctx, inputs, output) -> None:
    x, weight, bias = inputs
    ctx.has_bias = bias is not None
    ctx.save_for_backward(x, weight, output)


def _linear_backward(ctx, grad: torch.Tensor):
    x, weight, *rest = ctx.saved_tensors
    need = [bool(ctx.needs_input_grad[0]), bool(ctx.needs_input_grad[1]), bool(ctx.needs_input_grad[2])]
    need[2] = need[2] and ctx.has_bias
    if not any(need):
        return None, None, None
    grads = _linear_backward_op(grad, x, weight, rest[0] if rest else None, need)
    return tuple(g if n else None for g, n in zip(grads, need, strict=True))


_linear_op.register_autograd(_linear_backward, setup_context=_linear_setup_context)
_linear_relu_op.register_autograd(_linear_backward, setup_context=_linear_relu_setup_context)


def linear(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``torch.nn.functional.linear`` in Triton: input (..., in) @ weight.T (in, out) + bias."""
    _check_linear(input, weight, bias)
    return _linear_op(input, weight, bias)


def linear_relu(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """relu(linear(input, weight, bias)) with the relu fused into the matmul's epilogue (and its
    mask into the backward matmuls' operand loads)."""
    _check_linear(input, weight, bias)
    return _linear_relu_op(input, weight, bias)
