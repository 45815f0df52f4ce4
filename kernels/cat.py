"""cat along any dim (backward: slices of grad_output) and a strided-copy ``contiguous`` in Triton."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from kernels import _runtime as rt
from kernels._library import custom_op
from kernels._strided import collapse, int64_indexing, strided_offsets

__all__ = ["cat", "cat_op", "contiguous", "contiguous_op", "copy_into"]

#: Elements per program; the first config is the interpreter's (it runs that one alone: few, big
#: programs). A copy reaches bandwidth on a GPU anywhere in 1024-8192; the timing picks.
_CONFIGS = [
    triton.Config({"BLOCK": 4096}, num_warps=8),
    triton.Config({"BLOCK": 1024}, num_warps=4),
    triton.Config({"BLOCK": 2048}, num_warps=8),
    triton.Config({"BLOCK": 8192}, num_warps=16),
]


@rt.autotune(configs=_CONFIGS, key=["size_class", "SRC_RANK", "DST_RANK"])
@triton.jit(do_not_specialize=["size_class"])
def _copy_kernel(
    src_ptr,  # source, any layout
    dst_ptr,  # destination, any non-overlapping layout (a slice of cat's output, or a fresh tensor)
    n,  # number of elements
    size_class,  # autotune key only: bit length of n
    S1, S2, S3,  # collapsed sizes (S0 is implied by n)
    s_s0, s_s1, s_s2, s_s3,  # source strides
    d_s0, d_s1, d_s2, d_s3,  # destination strides
    SRC_RANK: tl.constexpr,  # collapsed dims the source offsets use (0: contiguous, offset = index)
    DST_RANK: tl.constexpr,  # collapsed dims the destination offsets use (0: contiguous)
    INT64: tl.constexpr,  # indices and offsets need 64 bits
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    if INT64:
        pid = pid.to(tl.int64)
    ids = pid * BLOCK + tl.arange(0, BLOCK)
    mask = ids < n
    src = ids if SRC_RANK == 0 else strided_offsets(ids, S1, S2, S3, s_s0, s_s1, s_s2, s_s3, SRC_RANK)
    dst = ids if DST_RANK == 0 else strided_offsets(ids, S1, S2, S3, d_s0, d_s1, d_s2, d_s3, DST_RANK)
    # a copy: no arithmetic, so no upcast is needed (the bits move unchanged, NaN payloads included)
    tl.store(dst_ptr + dst, tl.load(src_ptr + src, mask=mask), mask=mask)


def _rank(sizes: Sequence[int], strides: Sequence[int]) -> int:
    """0 when ``strides`` are the contiguous strides of ``sizes`` (skipping size-1 dims), else the
    collapsed dims in use."""
    expected = 1
    dense = True
    for s, st in zip(reversed(sizes), reversed(strides), strict=True):
        if s != 1 and st != expected:
            dense = False
        expected *= s
    if dense:
        return 0
    rank = len(sizes)
    while rank > 1 and sizes[len(sizes) - rank] == 1:
        rank -= 1
    return rank


def copy_into(dst: torch.Tensor, src: torch.Tensor) -> None:
    """``dst.copy_(src)`` in Triton for tensors of one shape and dtype at any strides (``dst`` must
    not overlap itself). Layouts that do not collapse to 4 dims (five or more dims that cannot
    merge: rare) are copied one slice of the outermost dim at a time."""
    if dst.shape != src.shape or dst.dtype != src.dtype:
        raise ValueError(f"copy of {tuple(src.shape)} {src.dtype} into {tuple(dst.shape)} {dst.dtype}")
    n = src.numel()
    if n == 0:
        return
    try:
        sizes, (s_s, d_s) = collapse(src.shape, [src.stride(), dst.stride()])
    except ValueError:
        for i in range(src.shape[0]):
            copy_into(dst[i], src[i])
        return
    _copy_kernel[lambda meta: (rt.cdiv(n, meta["BLOCK"]),)](
        src, dst, n, n.bit_length(), *sizes[1:], *s_s, *d_s,
        SRC_RANK=_rank(sizes, s_s), DST_RANK=_rank(sizes, d_s), INT64=int64_indexing(src, dst, n=n),
    )  # fmt: skip


@custom_op("contiguous")
def contiguous_op(input: torch.Tensor) -> torch.Tensor:
    """A contiguous copy of ``input`` (always a copy: a custom op's output never aliases its input)."""
    out = rt.empty_like(input)
    copy_into(out, input)
    return out


@contiguous_op.register_fake
def _(input):
    return input.new_empty(input.shape)


def _contiguous_backward(ctx, g: torch.Tensor) -> torch.Tensor:
    return g  # a copy's gradient is grad_output itself


contiguous_op.register_autograd(_contiguous_backward)


def contiguous(x: torch.Tensor) -> torch.Tensor:
    """``x.contiguous()`` in Triton: ``x`` itself when already contiguous, else a copy (one pass:
    read at ``x``'s strides, write in order). For the places where a dense copy is really what the
    next kernel wants; elementwise kernels here read any strides directly."""
    rt.check_float(x, "input")
    return x if x.is_contiguous() else contiguous_op(x)


def _check_cat(tensors: Sequence[torch.Tensor], dim: int) -> tuple[list[int], int, list[int]]:
    """(output shape, canonical dim, positions of the tensors taking part) for ``cat``. As torch,
    1-d empty tensors (shape (0,)) are skipped when the others have more dims."""
    if isinstance(tensors, torch.Tensor) or not isinstance(tensors, Sequence):
        raise TypeError(f"tensors must be a sequence of tensors, got {type(tensors).__name__}")
    if not tensors:
        raise ValueError("cat needs at least one tensor")
    for i, t in enumerate(tensors):
        rt.check_float(t, f"tensors[{i}]")
    rt.check_same_dtype(**{f"tensors[{i}]": t for i, t in enumerate(tensors)})
    rt.check_device(*tensors)
    for i, t in enumerate(tensors):
        if t.dim() == 0:
            raise ValueError(f"tensors[{i}] is zero-dimensional and cannot be concatenated")
    used = [i for i, t in enumerate(tensors) if not (t.dim() == 1 and t.shape[0] == 0)]
    if not used:  # only (0,)-shaped tensors: the result is one of them
        used = [0]
    ref = tensors[used[0]]
    d = rt.canonical_dim(dim, ref.dim())
    shape = list(ref.shape)
    shape[d] = 0
    for i in used:
        t = tensors[i]
        same = t.dim() == ref.dim() and all(t.shape[k] == ref.shape[k] for k in range(ref.dim()) if k != d)
        if not same:
            raise ValueError(
                f"tensors[{i}] has shape {tuple(t.shape)} but tensors[{used[0]}] has {tuple(ref.shape)}: "
                f"sizes must match except along dim {d}"
            )
        shape[d] += t.shape[d]
    return shape, d, used


def _plan_cat(tensors: Sequence[torch.Tensor], d: int) -> tuple[list[int], list[int]]:
    """(output shape, positions of the tensors taking part) of a cat along the non-negative ``d``
    of tensors ``_check_cat`` accepted: 1-d empty tensors are skipped when others have more dims."""
    used = [i for i, t in enumerate(tensors) if not (t.dim() == 1 and t.shape[0] == 0)] or [0]
    shape = list(tensors[used[0]].shape)
    shape[d] = sum(tensors[i].shape[d] for i in used)
    return shape, used


@custom_op("cat")
def cat_op(tensors: list[torch.Tensor], dim: int) -> torch.Tensor:
    """cat of ``tensors`` (as ``cat`` checked them) along the non-negative ``dim``: one strided copy
    per tensor into its slice of a new contiguous result."""
    shape, used = _plan_cat(tensors, dim)
    out = rt.empty(shape, dtype=tensors[0].dtype, device=tensors[0].device)
    offset = 0
    for i in used:
        size = tensors[i].shape[dim]
        copy_into(out.narrow(dim, offset, size), tensors[i])
        offset += size
    return out


@cat_op.register_fake
def _(tensors, dim):
    shape, _ = _plan_cat(tensors, dim)
    return tensors[0].new_empty(shape)


def _cat_setup_context(ctx, inputs, output) -> None:
    tensors, dim = inputs
    _, used = _plan_cat(tensors, dim)
    ctx.dim, ctx.used, ctx.shapes = dim, used, [t.shape for t in tensors]


def _cat_backward(ctx, g: torch.Tensor):
    """Each gradient is a slice of grad_output (a view, as torch's); a skipped (0,)-shaped tensor
    gets an empty one."""
    grads: list[torch.Tensor | None] = [None] * len(ctx.shapes)
    offset = 0
    for i in ctx.used:
        size = ctx.shapes[i][ctx.dim]
        grads[i] = g.narrow(ctx.dim, offset, size)
        offset += size
    for i, shape in enumerate(ctx.shapes):
        if grads[i] is None:
            grads[i] = g.new_zeros(shape)
    return grads, None


cat_op.register_autograd(_cat_backward, setup_context=_cat_setup_context)


def cat(tensors: Sequence[torch.Tensor], dim: int = 0) -> torch.Tensor:
    """``torch.cat(tensors, dim)``: one strided copy per input into its slice of the result."""
    _, d, _ = _check_cat(tensors, dim)
    return cat_op(list(tensors), d)
