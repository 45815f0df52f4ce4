"""Deterministic final sums of per-program partials, shared by the losses (one program per sum, fixed order)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels import _runtime as rt

__all__ = ["acc_dtype", "finish_sum"]

# Elements per step of the single-program final sums: 16 KiB of fp32 in flight per program; the
# interpreter runs fastest with few, big steps.
BLOCK = 16384 if rt.INTERPRET else 4096


@triton.jit
def _sum_rows_kernel(
    src_ptr,  # (n_sums, n) partial sums, row j at src_ptr + j * src_stride
    n,  # partials per sum
    src_stride,
    out_ptr,  # (n_sums,) results
    den_ptr,  # divisor in memory (DEN_FROM_PTR), else unused
    den_int,  # integer divisor (otherwise): 1 for a plain sum, the element count for a mean
    DEN_FROM_PTR: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # one program per sum, in a fixed order: the same bits on every run
    j = tl.program_id(0)
    acc_ty = src_ptr.dtype.element_ty
    total = tl.zeros((BLOCK,), acc_ty)
    for start in range(0, n, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        total += tl.load(src_ptr + j * src_stride + offs, mask=offs < n, other=0.0)
    if DEN_FROM_PTR:
        den = tl.load(den_ptr).to(acc_ty)
    else:
        den = tl.cast(den_int, acc_ty)
    tl.store(out_ptr + j, (tl.sum(total, axis=0) / den).to(out_ptr.dtype.element_ty))


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The accumulator type: fp64 for fp64, fp32 for everything else."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def finish_sum(partials: torch.Tensor, out: torch.Tensor, *, den: torch.Tensor | None = None, den_int: int = 1) -> None:
    """out[j] = sum(partials[j]) / den (den in memory, else den_int), one program per row."""
    parts = partials.view(out.numel(), partials.numel() // out.numel())
    _sum_rows_kernel[(out.numel(),)](
        parts,
        parts.shape[1],
        parts.stride(0),
        out,
        den if den is not None else parts,
        den_int,
        DEN_FROM_PTR=den is not None,
        BLOCK=BLOCK,
    )
