"""Device decision, output allocation, autotune policy and input validation for every kernel.

With CUDA the kernels compile for the GPU; without it they run under the Triton interpreter on
CPU tensors. The interpreter is switched on here, before any ``@triton.jit`` in this package is
decorated, which is why every kernel module imports this one first.

Interpreter traps the kernels are written around (measured with triton 3.9 on CPU):

- bf16 arithmetic on loaded values is wrong (``tl.maximum`` of raw bf16 returns its input):
  upcast to fp32 right after ``tl.load`` and cast back with ``.to(ptr.dtype.element_ty)`` on store.
- ``tl.dot`` on bf16 operands is wrong; fp32 operands are exact there (bf16 products are exact in
  fp32, so upcasting before the dot does not change the result).
- ``@triton.autotune`` with several configs needs a GPU to benchmark: use :func:`autotune`.
- ``tl.device_assert`` never fires and loads are not bounds checked: validate here, in Python.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Sequence

import torch

__all__ = [
    "FLOAT_DTYPES",
    "INTERPRET",
    "allocation_fill",
    "autotune",
    "canonical_dim",
    "cdiv",
    "check_device",
    "check_float",
    "check_positive_int",
    "check_same_dtype",
    "device",
    "dot_precision",
    "empty",
    "empty_like",
    "next_pow2",
]


def _decide_interpret() -> bool:
    forced = os.environ.get("GRADCHECK_INTERPRET")
    if forced is not None:
        return forced.strip() not in ("", "0", "false", "False")
    if os.environ.get("TRITON_INTERPRET", "") not in ("", "0"):
        return True
    return not torch.cuda.is_available()


#: True when kernels run under the Triton interpreter (no CUDA, or forced with GRADCHECK_INTERPRET=1).
INTERPRET: bool = _decide_interpret()
if INTERPRET:
    os.environ["TRITON_INTERPRET"] = "1"

import triton  # noqa: E402  (must come after TRITON_INTERPRET is set)

if INTERPRET:  # triton >= 3.4 reads its knobs lazily; older ones only the environment
    with contextlib.suppress(Exception):
        triton.knobs.runtime.interpret = True

#: Floating dtypes every kernel accepts.
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def device() -> torch.device:
    """The device kernels run on: ``cuda`` when compiling, ``cpu`` under the interpreter."""
    return torch.device("cpu") if INTERPRET else torch.device("cuda", torch.cuda.current_device())


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def next_pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


# ---------------------------------------------------------------------------------------------
# Output allocation
# ---------------------------------------------------------------------------------------------

_FILL: float | None = None


@contextlib.contextmanager
def allocation_fill(value: float | None) -> Iterator[None]:
    """Fill every output that kernels allocate through :func:`empty` with ``value`` (NaN, or a
    huge finite sentinel) while the block runs, so an element a kernel never writes shows."""
    global _FILL
    previous, _FILL = _FILL, value
    try:
        yield
    finally:
        _FILL = previous


def empty(shape: Sequence[int] | torch.Size, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The one way kernels allocate outputs: ``torch.empty``, poisoned while verifying."""
    out = torch.empty(tuple(shape), dtype=dtype, device=device)
    if _FILL is not None and out.numel():
        if out.is_floating_point():
            fill = _FILL
            if not math.isnan(fill):
                fill = min(fill, torch.finfo(dtype).max)
            out.fill_(fill)
        else:
            out.fill_(torch.iinfo(dtype).min if dtype != torch.bool else True)
    return out


def empty_like(x: torch.Tensor, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Contiguous output of ``x``'s shape (not its strides), through :func:`empty`."""
    return empty(x.shape, dtype=dtype or x.dtype, device=x.device)


# ---------------------------------------------------------------------------------------------
# Autotuning
# ---------------------------------------------------------------------------------------------


def autotune(configs: Sequence[triton.Config], key: Sequence[str], **kwargs):
    """``triton.autotune`` on a GPU; under the interpreter the first config alone (several
    configs crash there, since tuning needs a GPU to time them). Put the config that suits the
    interpreter (big blocks run fastest there) first."""
    configs = list(configs)
    if INTERPRET:
        configs = configs[:1]
    return triton.autotune(configs=configs, key=list(key), **kwargs)


def dot_precision(dtype: torch.dtype) -> str:
    """``input_precision`` for ``tl.dot`` on operands of ``dtype``: fp32 follows
    ``torch.get_float32_matmul_precision()`` ("highest": IEEE, else TF32)."""
    if dtype == torch.float32 and torch.get_float32_matmul_precision() != "highest":
        return "tf32"
    return "ieee"


# ---------------------------------------------------------------------------------------------
# Validation: clear Python errors before launch, never a wrong result or a crash inside Triton
# ---------------------------------------------------------------------------------------------


def check_float(x: object, name: str, *, dtypes: Sequence[torch.dtype] = FLOAT_DTYPES) -> torch.Tensor:
    """``x`` must be a tensor of one of ``dtypes`` on a device the kernels can run on."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in dtypes:
        names = ", ".join(str(d).removeprefix("torch.") for d in dtypes)
        raise TypeError(f"{name} has dtype {str(x.dtype).removeprefix('torch.')}; expected one of {names}")
    check_device(x, name=name)
    return x


def check_device(*tensors: torch.Tensor | None, name: str | None = None) -> torch.device:
    """All tensors on one device, and that device usable by the kernels (CUDA when compiling,
    CPU under the interpreter)."""
    present = [t for t in tensors if t is not None]
    devices = {t.device for t in present}
    if len(devices) > 1:
        raise ValueError(f"tensors are on different devices: {sorted(str(d) for d in devices)}")
    dev = present[0].device
    want = "cpu" if INTERPRET else "cuda"
    if dev.type != want:
        what = f"{name} is" if name else "tensors are"
        mode = "the Triton interpreter (no CUDA) runs on CPU tensors" if INTERPRET else "kernels compile for CUDA"
        raise ValueError(f"{what} on {dev}, but {mode}; move them to {want}")
    return dev


def check_same_dtype(**tensors: torch.Tensor | None) -> torch.dtype:
    """All named tensors share one dtype (no silent promotion inside a kernel)."""
    present = {k: v for k, v in tensors.items() if v is not None}
    dtypes = {v.dtype for v in present.values()}
    if len(dtypes) > 1:
        detail = ", ".join(f"{k}: {str(v.dtype).removeprefix('torch.')}" for k, v in present.items())
        raise TypeError(f"mixed dtypes ({detail}); cast them to one dtype first")
    return dtypes.pop()


def canonical_dim(dim: int, ndim: int, name: str = "dim") -> int:
    """``dim`` in ``[-ndim, ndim)`` (a 0-d tensor accepts -1 and 0), returned non-negative."""
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"{name} must be an int, got {type(dim).__name__}")
    lo, hi = (-1, 0) if ndim == 0 else (-ndim, ndim - 1)
    if not lo <= dim <= hi:
        raise IndexError(f"{name}={dim} is out of range for a tensor of {ndim} dimensions (expected {lo}..{hi})")
    return dim % max(ndim, 1)


def check_positive_int(value: object, name: str) -> int:
    """``value`` must be an int (not a bool) and at least 1."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value
