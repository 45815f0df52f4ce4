"""The reference a verification compares with: NumPy float64 code, or a torch callable run in
float64 on the CPU with its VJP from torch.autograd (a "torch oracle").

``verify(fn, inputs, reference=F.layer_norm)`` needs no NumPy code: a reference that is a torch
callable is recognised (an ``nn.Module``, a ``torch.ops`` overload, a function of a ``torch``
module, or any callable that rejects NumPy arrays and accepts tensors) and wrapped here. The
engine then ties the oracle's autograd VJP to finite differences of its forward (check
'reference_fd'), as it does for a hand-written NumPy VJP. NumPy references stay the catalog's
independent oracle.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

from gradcheck.compare import as_tuple

__all__ = ["Reference", "TorchOracle", "is_torch_callable", "reference_name"]


def reference_name(fn: Callable[..., Any]) -> str:
    """How reports name a reference: its qualified name where it has one."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__


def is_torch_callable(fn: Any) -> bool:
    """A callable that is torch's own (recognised without calling it): an ``nn.Module``, a
    ``torch.ops`` op, or a function defined in a ``torch`` module (``torch.softmax``,
    ``F.layer_norm``), also behind ``functools.partial``."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if isinstance(fn, torch.nn.Module | torch._ops.OpOverload | torch._ops.OpOverloadPacket):
        return True
    module = getattr(fn, "__module__", None) or ""
    return module == "torch" or module.startswith("torch.")


def _to_torch(a: Any, *, grad: bool = False) -> Any:
    if isinstance(a, np.ndarray):
        t = torch.from_numpy(np.array(a, copy=True))
        if t.is_floating_point():
            t = t.to(torch.float64).requires_grad_(grad)
        return t
    return a


def _to_numpy(o: Any) -> Any:
    if isinstance(o, torch.Tensor):
        o = o.detach()
        return o.to(torch.float64).numpy() if o.is_floating_point() else o.numpy()
    return np.asarray(o)


@functools.cache
def _decompositions() -> dict:
    """torch's registered decompositions (built once: building the table costs ~0.5 s)."""
    from torch._decomp import core_aten_decompositions, decomposition_table

    return {**decomposition_table, **core_aten_decompositions()}


class SimulatedRounding(TorchDispatchMode):
    """Every aten op's floating result multiplied by ``1 + eta * r``, ``r`` uniform in [-1, 1] per
    element (seeded): a rounding error of relative size up to ``eta`` after each operation (Monte
    Carlo arithmetic; uniform rather than +-1, so two successive perturbations do not cancel
    exactly, as they would half the time with signs), which shows the cancellation inside an
    algorithm (a norm backward at hidden size 1, the rows of an attention's dS summing to 0) that
    perturbing its inputs cannot.

    Fused ops with a registered decomposition (``torch._decomp``: layer norm, its backward, ...)
    run decomposed, so their inner steps are perturbed too; views, in-place ops and random ops
    pass unperturbed."""

    def __init__(self, eta: float, seed: int) -> None:
        super().__init__()
        self.eta = eta
        self.generator = torch.Generator().manual_seed(seed)
        self.table = _decompositions()

    def _perturb(self, t: Any) -> Any:
        if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel() and t.device.type == "cpu":
            r = torch.rand(t.shape, generator=self.generator, dtype=t.dtype) * 2 - 1
            return t * (1 + self.eta * r)
        return t

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        exact = func.is_view or func._schema.is_mutable or torch.Tag.nondeterministic_seeded in func.tags
        if not exact and func in self.table:
            with self:
                out = self.table[func](*args, **kwargs)
            if out is not NotImplemented:
                return out
        out = func(*args, **kwargs)
        return out if exact else tree_map(self._perturb, out)


class TorchOracle:
    """A torch callable as a float64 CPU reference: :meth:`forward` and :meth:`vjp` with the
    signatures of a NumPy reference (arrays in, arrays out; ``vjp(*arrays, *grad_outputs)``).

    A float argument whose derivative torch does not implement (cross-entropy's class weight) gets
    ``None`` from :meth:`vjp`: no gradient is demanded for it, one the implementation gives is
    still checked against finite differences."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.name = reference_name(fn)
        self._no_derivative: set[int] = set()
        self._n_args: dict[int, int] = {}  # len(vjp arguments) -> number of forward arguments
        self._mode: SimulatedRounding | None = None

    def __repr__(self) -> str:
        return f"TorchOracle({self.name})"

    @contextlib.contextmanager
    def rounding(self, eta: float, seed: int) -> Iterator[None]:
        """While the block runs, :meth:`forward` and :meth:`vjp` run under :class:`SimulatedRounding`."""
        self._mode = SimulatedRounding(eta, seed)
        try:
            yield
        finally:
            self._mode = None

    def _rounded(self) -> contextlib.AbstractContextManager:
        """The simulated rounding while :meth:`rounding` is active, with attention on torch's
        composite math path (its fused CPU kernels have no decomposition)."""
        if self._mode is None:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
        stack.enter_context(self._mode)
        return stack

    def _call(self, tensors: Sequence[Any]) -> tuple:
        with torch.random.fork_rng(devices=[]):
            return as_tuple(self.fn(*tensors))

    def forward(self, *arrays: Any) -> tuple:
        with torch.no_grad(), self._rounded():
            outs = self._call([_to_torch(a) for a in arrays])
        return tuple(_to_numpy(o) for o in outs)

    def _split(self, flat: Sequence[Any]) -> int:
        """How many of ``flat`` are forward arguments: the rest are one grad_output per output."""
        n = self._n_args.get(len(flat))
        if n is None:
            for k in range(1, len(flat)):
                with torch.no_grad():
                    if len(self._call([_to_torch(a) for a in flat[: len(flat) - k]])) == k:
                        n = len(flat) - k
                        break
            else:
                raise TypeError(f"torch oracle {self.name}: cannot split {len(flat)} VJP arguments into inputs, grads")
            self._n_args[len(flat)] = n
        return n

    def vjp(self, *flat: Any) -> tuple:
        n = self._split(flat)
        with self._rounded():
            return self._vjp(flat, n)

    def _vjp(self, flat: Sequence[Any], n: int) -> tuple:
        arrays, grads = flat[:n], flat[n:]
        floats = [
            i
            for i, a in enumerate(arrays)
            if isinstance(a, np.ndarray) and np.issubdtype(a.dtype, np.floating) and i not in self._no_derivative
        ]
        while True:
            try:
                _, got = self._grads(arrays, grads, floats)
                break
            except (RuntimeError, NotImplementedError) as e:
                culprit = self._without_derivative(arrays, grads, floats, e)
                floats.remove(culprit)
                self._no_derivative.add(culprit)
        result: list[Any] = [None] * len(arrays)
        for i, g in zip(floats, got, strict=True):
            result[i] = np.zeros(np.shape(arrays[i])) if g is None else g.numpy()
        return tuple(result)

    def _grads(self, arrays: Sequence[Any], grads: Sequence[Any], wrt: list[int]) -> tuple[list[Any], Sequence[Any]]:
        """The forward with ``wrt`` requiring grad, and torch.autograd's gradients for them."""
        tensors = [_to_torch(a, grad=i in wrt) for i, a in enumerate(arrays)]
        outs = self._call(tensors)
        pairs = [
            (o, torch.from_numpy(np.asarray(g, dtype=np.float64)))
            for o, g in zip(outs, grads, strict=False)
            if g is not None and isinstance(o, torch.Tensor) and o.requires_grad
        ]
        if not pairs or not wrt:
            return tensors, [None] * len(wrt)
        got = torch.autograd.grad(
            [o for o, _ in pairs], [tensors[i] for i in wrt], [g for _, g in pairs], allow_unused=True
        )
        return tensors, got

    def _without_derivative(
        self, arrays: Sequence[Any], grads: Sequence[Any], floats: list[int], error: Exception
    ) -> int:
        """The argument whose derivative torch does not implement (found by asking for one at a
        time): torch raises "not differentiable with respect to argument 'weight'" (cross-entropy's
        class weight) or "derivative ... not implemented"."""
        text = str(error).lower()
        if not any(k in text for k in ("not differentiable", "not implemented", "derivative")):
            raise error
        for i in floats:
            try:
                self._grads(arrays, grads, [i])
            except (RuntimeError, NotImplementedError):
                return i
        raise error


class Reference:
    """The reference of one verification: a NumPy forward (and VJP), or a torch oracle.

    ``rounding_model``: a torch callable of the same function, run under
    :class:`SimulatedRounding` to scale what a correct kernel may cancel (see :attr:`model`).

    ``kind`` is "numpy", "torch", or None until the first call decides it: without a VJP, a callable
    not recognised as torch's is called with NumPy arrays; if it rejects them (and accepts float64
    tensors) or answers in tensors, it is a torch oracle (its VJP then comes from autograd). A
    callable that works on both (``lambda x: x.sum(0)``) is taken as NumPy code without a VJP
    (finite differences judge the backward): pass ``functools.partial(torch.sum, dim=0)`` or a
    function calling ``torch.*`` to get the oracle's VJP. An exception inside the reference is re-raised naming it."""

    def __init__(
        self,
        forward: Callable[..., Any],
        vjp: Callable[..., Any] | None = None,
        *,
        rounding_model: Callable[..., Any] | None = None,
    ) -> None:
        self.name = reference_name(forward)
        self._forward = forward
        self._vjp = vjp
        self.oracle: TorchOracle | None = None
        self._model = TorchOracle(rounding_model) if rounding_model is not None else None
        self.kind: str | None = "numpy" if vjp is not None else None
        if vjp is None and is_torch_callable(forward):
            self._become_torch()

    @property
    def model(self) -> TorchOracle | None:
        """The torch computation whose simulated rounding scales the cancellation term: the
        ``rounding_model`` given (``verify_op`` gives the catalog's ``torch_fn``), else the
        reference itself when it is a torch oracle."""
        return self._model if self._model is not None else self.oracle

    def _become_torch(self) -> None:
        self.oracle = TorchOracle(self._forward)
        self.kind = "torch"

    def forward(self, *arrays: Any) -> tuple:
        if self.kind == "torch":
            return self._guarded(self.oracle.forward, arrays)
        if self.kind == "numpy":
            return self._guarded(lambda *a: as_tuple(self._forward(*a)), arrays)
        try:
            outs = as_tuple(self._forward(*arrays))
        except (TypeError, AttributeError) as numpy_error:
            try:
                outs = TorchOracle(self._forward).forward(*arrays)
            except Exception:
                raise _reference_error(self.name, arrays, numpy_error) from numpy_error
            self._become_torch()
            return outs
        except Exception as e:
            raise _reference_error(self.name, arrays, e) from e
        if any(isinstance(o, torch.Tensor) for o in outs):  # took arrays but answers in tensors
            self._become_torch()
            return self._guarded(self.oracle.forward, arrays)
        self.kind = "numpy"
        return outs

    @property
    def vjp_known(self) -> bool:
        """A VJP exists: one was given, or the reference is a torch oracle (settled by the first
        forward call when the callable was not recognised up front)."""
        return self._vjp is not None or self.kind == "torch"

    def vjp(self, *flat: Any) -> tuple | None:
        if self.kind == "torch":
            return self._guarded(self.oracle.vjp, flat, what="VJP")
        if self._vjp is None:
            return None
        return self._guarded(lambda *a: as_tuple(self._vjp(*a)), flat, what="VJP")

    def _guarded(self, call: Callable[..., tuple], arrays: Sequence[Any], what: str = "forward") -> tuple:
        try:
            return call(*arrays)
        except Exception as e:
            raise _reference_error(self.name, arrays, e, what=what) from e


class ReferenceFailure(RuntimeError):
    """The reference itself raised: not a verdict on the implementation."""


def _reference_error(name: str, arrays: Sequence[Any], error: Exception, what: str = "forward") -> ReferenceFailure:
    shapes = ", ".join(f"{a.dtype}{list(a.shape)}" if isinstance(a, np.ndarray) else repr(a) for a in arrays)
    return ReferenceFailure(
        f"the reference's {what} ({name}) raised {type(error).__name__}: {error}\n  on arguments ({shapes}); "
        "a NumPy reference gets float64 arrays and plain values, a torch callable float64 CPU tensors"
    )
