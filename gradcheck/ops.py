"""The op catalog: one :class:`OpSpec` per op (reference, VJP, input strategy, tolerance inputs,
``torch_fn``), and the implementations registered for catalog names.

The spec files under ``gradcheck/specs/`` mirror ``kernels/``, ``reference/`` and ``tests/kernels/``
and are listed in :data:`SPEC_MODULES`. No spec names an implementation: implementations are bound
to op names by providers (:func:`register_implementations`, or a module advertised through the
``gradcheck.implementations`` entry-point group, loaded only when an implementation is asked for).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = [
    "ALL_FLOATS",
    "ENTRY_POINT_GROUP",
    "SPEC_MODULES",
    "OpSpec",
    "Provider",
    "catalog",
    "get_spec",
    "implementation",
    "implementations",
    "register_implementations",
]

#: Every floating dtype, in the order tables list them.
ALL_FLOATS: tuple[torch.dtype, ...] = (torch.float32, torch.float16, torch.bfloat16, torch.float64)

#: The spec files, one per op family, in the order the catalog lists them.
SPEC_MODULES: tuple[str, ...] = (
    "relu",
    "elementwise",
    "reduction",
    "cat",
    "matmul",
    "softmax",
    "norms",
    "cross_entropy",
    "mse",
    "conv",
    "pool",
    "optim",
    "activations",
    "logsumexp",
    "embedding",
    "losses",
    "rotary",
    "attention",
    "linear_cross_entropy",
)

#: Entry-point group through which an installed package binds its implementations to op names: each
#: entry point names a module with ``IMPLEMENTATIONS`` (op name -> callable) and, optionally,
#: ``device()`` (the device those implementations run on).
ENTRY_POINT_GROUP = "gradcheck.implementations"


@dataclass(frozen=True)
class OpSpec:
    """Everything the engine needs to verify one op, whoever implements it.

    ``inputs(dtype)`` returns a Hypothesis strategy of positional-argument tuples: float64 CPU
    tensors (the engine casts, lays out and moves them), integer tensors and plain values (passed
    through). ``reference``/``reference_vjp`` take NumPy arrays and the plain values in the same
    positions; ``reference_vjp(*args, *grad_outputs)`` returns one entry per argument, ``None`` for
    arguments that get no gradient (a float tensor whose entry is ``None`` is not differentiated).
    ``torch_fn`` is torch's own op with the same calling convention: the measuring stick, and the
    implementation that must pass the catalog's battery (no false positives).

    Tolerance inputs (see ``gradcheck.tolerances``): ``depth(*args)`` is the longest accumulation
    (sum or dot length K) in the forward or the backward; ``multilinear`` says the reference
    evaluated on absolute values bounds the sum of |terms| elementwise (sums, matmul, conv);
    ``ulps`` adds a few units of the compute precision for transcendental functions.

    ``kinks(*args)`` returns how far (max-norm, in input units) the inputs are from the nearest
    point where the op is not differentiable (relu at 0, a tie for a max); finite differences are
    skipped for an example closer than the engine's step allows. ``None``: smooth everywhere.

    ``terms``/``vjp_terms`` give the sum of |terms| per element for ops whose terms cancel (see
    ``gradcheck.verify``). ``differentiable=False`` (an optimizer step) checks the forward only.
    ``deterministic=False`` compares a rerun within tolerance instead of bitwise.
    ``optional_grads`` are argument positions whose gradient torch does not define (cross-entropy's
    class weight): checked when an implementation gives one, never demanded.
    ``torch_baseline=False`` keeps ``torch_fn`` from serving as ``verify_op``'s measuring stick
    (where torch's op is unsafe to run on the drawn inputs). The ``dot`` tag
    marks ops whose fp32 products may run in TF32.
    """

    name: str
    reference: Callable[..., Any]
    reference_vjp: Callable[..., Any] | None
    inputs: Callable[[torch.dtype], Any]
    torch_fn: Callable[..., Any]
    dtypes: tuple[torch.dtype, ...] = ALL_FLOATS
    depth: Callable[..., int] | int = 1
    multilinear: bool = False
    ulps: float = 0.0
    kinks: Callable[..., float] | None = None
    deterministic: bool = True
    differentiable: bool = True
    terms: Callable[..., Any] | None = None
    vjp_terms: Callable[..., Any] | None = None
    optional_grads: tuple[int, ...] = ()
    torch_baseline: bool = True
    doc: str = ""
    tags: Sequence[str] = field(default_factory=tuple)

    def replace(self, **changes: Any) -> OpSpec:
        return dataclasses.replace(self, **changes)


_CATALOG: dict[str, OpSpec] | None = None


def catalog() -> dict[str, OpSpec]:
    """Name -> :class:`OpSpec` for every op, gathered from the modules in :data:`SPEC_MODULES`
    (each exports ``SPECS``, a list of OpSpec)."""
    global _CATALOG
    if _CATALOG is None:
        found: dict[str, OpSpec] = {}
        for mod in SPEC_MODULES:
            module = importlib.import_module(f"gradcheck.specs.{mod}")
            for spec in module.SPECS:
                if spec.name in found:
                    raise RuntimeError(f"op {spec.name!r} is specified twice (second in gradcheck.specs.{mod})")
                found[spec.name] = spec
        _CATALOG = found
    return dict(_CATALOG)


def get_spec(name: str) -> OpSpec:
    specs = catalog()
    if name not in specs:
        raise KeyError(f"no op named {name!r} in the catalog; known: {', '.join(sorted(specs))}")
    return specs[name]


# ---------------------------------------------------------------------------------------------
# implementations bound to op names
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Provider:
    """A set of implementations for catalog names, and the device they run on (None: the
    engine's default device)."""

    name: str
    implementations: Mapping[str, Callable[..., Any]]
    device: Callable[[], torch.device] | None = None


_REGISTERED: list[Provider] = []
_DISCOVERED: list[Provider] | None = None


def register_implementations(
    implementations: Mapping[str, Callable[..., Any]],
    *,
    name: str = "registered",
    device: Callable[[], torch.device] | None = None,
) -> Provider:
    """Bind callables to catalog op names (``verify_op(name)`` and ``python -m gradcheck`` then
    verify them). Registered providers take precedence over entry points, the latest first."""
    unknown = sorted(set(implementations) - set(catalog()))
    if unknown:
        raise KeyError(f"not catalog ops: {', '.join(unknown)}; known: {', '.join(sorted(catalog()))}")
    for op, fn in implementations.items():
        if not callable(fn):
            raise TypeError(f"the implementation of {op!r} is a {type(fn).__name__}, not a callable")
    provider = Provider(name, dict(implementations), device)
    _REGISTERED.insert(0, provider)
    return provider


def _discovered() -> list[Provider]:
    """Providers advertised through :data:`ENTRY_POINT_GROUP`, imported on first use."""
    global _DISCOVERED
    if _DISCOVERED is None:
        found = []
        for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            module = ep.load()
            impls = getattr(module, "IMPLEMENTATIONS", None)
            if not isinstance(impls, Mapping):
                raise TypeError(f"entry point {ep.name!r} ({ep.value}) has no IMPLEMENTATIONS mapping")
            found.append(Provider(ep.name, impls, getattr(module, "device", None)))
        _DISCOVERED = found
    return _DISCOVERED


def _providers() -> list[Provider]:
    return [*_REGISTERED, *_discovered()]


def implementations() -> dict[str, Callable[..., Any]]:
    """Op name -> the registered implementation (the first provider that has one)."""
    found: dict[str, Callable[..., Any]] = {}
    for provider in reversed(_providers()):
        found.update(provider.implementations)
    return found


def implementation(name: str) -> tuple[Callable[..., Any], torch.device | None]:
    """The registered implementation of op ``name`` and the device it runs on (None: the
    engine's default)."""
    get_spec(name)
    for provider in _providers():
        if name in provider.implementations:
            device = provider.device() if provider.device is not None else None
            return provider.implementations[name], device
    raise LookupError(
        f"no implementation is registered for {name!r}: pass impl= (any callable with the op's signature), "
        f"call gradcheck.ops.register_implementations, or install a package that provides the "
        f"{ENTRY_POINT_GROUP!r} entry point (this project's kernels do: pip install -e .)"
    )
