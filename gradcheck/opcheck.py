"""Property-based opcheck: ``torch.library.opcheck`` on the custom ops an implementation calls,
with the arguments it called them with, on every drawn example.

While the implementation runs, :class:`CustomOpRecorder` (a ``torch.overrides.TorchFunctionMode``)
sees every torch call; an ``OpOverload`` or ``OpOverloadPacket`` whose namespace is not one of
torch's own (:data:`TORCH_NAMESPACES`) is a custom op (``torch.library.custom_op``,
``torch.library.define``, a C++ ``TORCH_LIBRARY``). The first call of each op in a call of the
implementation is recorded as a snapshot of its arguments, taken before the op runs: fresh,
detached copies with the same sizes, strides, storage offset and ``requires_grad`` (an op that
mutates its input still leaves the snapshot as it was called). Only outermost custom-op calls
are seen: a custom op called inside another one's kernel runs with the mode off, and the outer
op's opcheck runs it anyway. An implementation that *is* a custom op (a ``CustomOpDef``, an
``OpOverload`` or ``torch.ops.ns.op``) is recorded the same way.

:func:`run_tests` runs opcheck's tests (:data:`TESTS`, torch's default ``test_utils``) on fresh
copies of a snapshot and returns the failures. Nothing here imports a kernel library.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

__all__ = [
    "AUTOGRAD_TESTS",
    "FORWARD_TESTS",
    "MAX_NUMEL",
    "NAN_BLIND_TESTS",
    "TESTS",
    "TORCH_NAMESPACES",
    "CustomOpRecorder",
    "OpCall",
    "custom_op_name",
    "describe_call",
    "op_expression",
    "run_tests",
    "untestable",
]

#: Namespaces of the operators torch itself registers: calls of these are not custom ops.
TORCH_NAMESPACES = frozenset(
    {
        "aten",
        "prim",
        "prims",
        "rngprims",
        "debugprims",
        "inductor_prims",
        "higher_order",
        "quantized",
        "_quantized",
        "quantized_decomposed",
        "quantization",
        "c10d",
        "c10d_functional",
        "_c10d_functional",
        "_c10d_functional_autograd",
        "_dtensor",
        "symm_mem",
        "fsdp",
        "streams",
        "mkl",
        "mkldnn",
        "mkldnn_prepacked",
        "onednn",
        "sparse",
        "static_runtime",
        "profiler",
        "inductor",
        "_inductor_test",
        "_native",
        "_test",
        "debug_mode_ops",
        "export",
        "flex_lib",
        "onnx",
        "onnx_symbolic",
    }
)

#: ``torch.library.opcheck``'s tests (its default ``test_utils``), in the order it runs them.
TESTS = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
#: Run on the first call of the implementation (no input requires grad yet), before the forward
#: is judged: a schema that hides a mutation, a fake kernel of the wrong shape or dtype.
FORWARD_TESTS = ("test_schema", "test_faketensor")
#: Run on the call with the differentiable inputs requiring grad, before the backward: a missing
#: or misregistered autograd formula, and eager vs AOT-compiled forward and backward.
AUTOGRAD_TESTS = ("test_autograd_registration", "test_aot_dispatch_dynamic")

#: Tests that compare eager and compiled outputs with ``torch.testing.assert_close`` (NaN unequal to
#: NaN): on a call that returns NaN (log of a negative, a mean over nothing, a NaN input) they fail
#: for torch's own ops too (measured: aten.log, aten.relu, aten.mean), so such a call skips them.
NAN_BLIND_TESTS = ("test_aot_dispatch_dynamic",)

#: Copy a tensor's whole storage (its layout and guard band exactly) up to this many elements
#: beyond its own; a view into a much larger buffer (an allocator's pool) is copied compactly.
_STORAGE_SLACK = 1 << 16


def custom_op_name(func: Any) -> str | None:
    """``"ns::op"`` when ``func`` is a custom op's ``OpOverload`` / ``OpOverloadPacket``, else None."""
    if isinstance(func, torch._ops.OpOverload):
        namespace, qualified = func.namespace, func.name()
    elif isinstance(func, torch._ops.OpOverloadPacket):
        qualified = func._qualified_op_name
        namespace = qualified.split("::", 1)[0]
    else:
        return None
    return None if namespace in TORCH_NAMESPACES else qualified


def _fresh_tensor(t: torch.Tensor) -> torch.Tensor:
    """A detached copy of ``t`` at a new address: same sizes, strides and storage offset (the
    storage around it copied too, so a guard band stays), same ``requires_grad``. An empty tensor
    becomes contiguous: opcheck's own machinery fails on some empty strided tensors (torch 2.13:
    shape (0, 2049), strides (4098, 1) gives "Trying to create tensor with negative dimension"
    in three of its four tests, for any op), and an empty tensor has no layout to test."""
    with torch.no_grad():
        d = t.detach()
        if d.numel() == 0:
            c = torch.empty(d.shape, dtype=d.dtype, device=d.device)
            return c.requires_grad_(True) if t.requires_grad else c
        strided = d.layout == torch.strided
        span = (
            d.storage_offset() + 1 + sum((s - 1) * st for s, st in zip(d.shape, d.stride(), strict=True))
            if strided
            else 0
        )
        if not strided or span > d.numel() + _STORAGE_SLACK:
            c = d.clone()  # dense strides are kept (preserve_format); others become contiguous
        else:
            c = d.as_strided((span,), (1,), 0).clone().as_strided(d.shape, d.stride(), d.storage_offset())
    if t.requires_grad:
        c.requires_grad_(True)
    return c


def _fresh(value: Any) -> Any:
    """``value`` with every tensor in it (in tuples, lists, dicts) replaced by :func:`_fresh_tensor`."""
    if isinstance(value, torch.Tensor):
        return _fresh_tensor(value)
    if isinstance(value, tuple | list):
        return type(value)(_fresh(v) for v in value)
    if isinstance(value, dict):
        return {k: _fresh(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class OpCall:
    """One custom-op call as recorded: the op and a snapshot of its arguments as it was called."""

    name: str  # "ns::op"
    op: Any  # the OpOverload or OpOverloadPacket called
    args: tuple
    kwargs: dict
    nan_outputs: bool = False  # the call returned NaN somewhere (see NAN_BLIND_TESTS)


class CustomOpRecorder(TorchFunctionMode):
    """Records the first call of each custom op made while it is active, in ``calls``."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[str, OpCall] = {}

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        name = custom_op_name(func)
        first = name is not None and name not in self.calls
        if first:
            snapshot = (_fresh(tuple(args)), _fresh(dict(kwargs)))
        out = func(*args, **kwargs)
        if first:
            self.calls[name] = OpCall(name, func, *snapshot, nan_outputs=_has_nan(out))
        return out


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, tuple | list):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


#: A call whose tensor arguments hold more elements than this is not opchecked: opcheck tests the
#: registration (schema, mutations, fake shapes and dtypes, autograd wiring), which small calls show
#: as well as big ones, and it runs the op about ten times (under the Triton interpreter a matmul of
#: a few thousand elements takes about a second a call, measured in this project's CI).
MAX_NUMEL = 1 << 12


def untestable(call: OpCall) -> bool:
    """opcheck is not run on this call: more than :data:`MAX_NUMEL` elements in its tensors, every
    tensor argument empty (no data to compare), or one
    has two or more zero-length dims, where torch 2.13's opcheck fails three of its four tests on
    torch's own ``aten.neg`` ("Trying to create tensor with negative dimension", shape (0, 0, 33))."""
    tensors = _tensors((call.args, call.kwargs))
    if tensors and all(t.numel() == 0 for t in tensors):
        return True
    if sum(t.numel() for t in tensors) > MAX_NUMEL:
        return True
    return any(sum(n == 0 for n in t.shape) >= 2 for t in tensors)


def _has_nan(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.is_floating_point() and bool(torch.isnan(value.detach()).any())
    if isinstance(value, tuple | list):
        return any(_has_nan(v) for v in value)
    return False


def op_expression(op: Any) -> str:
    """How to name ``op`` in Python: ``torch.ops.ns.name.overload`` (or ``torch.ops.ns.name``)."""
    if isinstance(op, torch._ops.OpOverload):
        return f"torch.ops.{op.namespace}.{op._opname}.{op._overloadname}"
    if isinstance(op, torch._ops.OpOverloadPacket):
        return "torch.ops." + op._qualified_op_name.replace("::", ".")
    return repr(op)


def _describe_value(v: Any) -> str:
    if isinstance(v, torch.Tensor):
        dt = str(v.dtype).removeprefix("torch.")
        grad = ", requires_grad" if v.requires_grad else ""
        return f"{dt}{list(v.shape)} strides {tuple(v.stride())} offset {v.storage_offset()}{grad}"
    if isinstance(v, tuple | list):
        return "[" + ", ".join(_describe_value(x) for x in v) + "]"
    return repr(v)


def describe_call(call: OpCall) -> str:
    """The arguments of a recorded call, one line: dtype, shape, strides, offset, requires_grad."""
    parts = [f"arg{i}: {_describe_value(a)}" for i, a in enumerate(call.args)]
    parts += [f"{k}={_describe_value(v)}" for k, v in call.kwargs.items()]
    return "; ".join(parts) or "no arguments"


def run_tests(call: OpCall, tests: Sequence[str]) -> list[tuple[str, BaseException]]:
    """``torch.library.opcheck(op, args, kwargs, test_utils=tests)`` on fresh copies of the
    recorded arguments: the tests that did not succeed, each with its exception (an exception of
    opcheck itself is reported as test ``"opcheck"``)."""
    if call.nan_outputs:
        tests = [t for t in tests if t not in NAN_BLIND_TESTS]
    if not tests:
        return []
    args, kwargs = _fresh(call.args), _fresh(call.kwargs)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # anomaly-mode tracebacks of a failing backward
            results = torch.library.opcheck(call.op, args, kwargs, test_utils=tuple(tests), raise_exception=False)
    except Exception as e:
        return [("opcheck", e)]
    return [
        (test, r if isinstance(r, BaseException) else RuntimeError(str(r)))
        for test, r in results.items()
        if not (isinstance(r, str) and r == "SUCCESS")
    ]
