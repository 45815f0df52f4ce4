"""The op catalog: one :class:`OpSpec` per op, collected from the modules in ``gradcheck.specs``."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["ALL_FLOATS", "OpSpec", "catalog", "get_spec"]

#: Every floating dtype, in the order tables list them.
ALL_FLOATS: tuple[torch.dtype, ...] = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


@dataclass(frozen=True)
class OpSpec:
    """Everything the engine needs to verify one op.

    ``inputs(dtype)`` returns a Hypothesis strategy of positional-argument tuples: float64 CPU
    tensors (the engine casts, lays out and moves them), integer tensors and plain values (passed
    through). ``reference``/``reference_vjp`` take NumPy arrays and the plain values in the same
    positions; ``reference_vjp(*args, *grad_outputs)`` returns one entry per argument, ``None`` for
    arguments that get no gradient (a float tensor whose entry is ``None`` is not differentiated).

    Tolerance inputs (see ``gradcheck.tolerances``): ``depth(*args)`` is the longest accumulation
    (sum or dot length K) in the forward or the backward; ``multilinear`` says the reference
    evaluated on absolute values bounds the sum of |terms| elementwise (sums, matmul, conv);
    ``ulps`` adds a few units of the compute precision for transcendental functions.

    ``kinks(*args)`` returns how far (max-norm, in input units) the inputs are from the nearest
    point where the op is not differentiable (relu at 0, a tie for a max); finite differences are
    skipped for an example closer than the engine's step allows. ``None``: smooth everywhere.

    ``terms``/``vjp_terms`` give the sum of |terms| per element for ops whose terms cancel (see
    ``gradcheck.verify``). ``differentiable=False`` (an optimizer step) checks the forward only. ``deterministic=False``
    compares a rerun within tolerance instead of bitwise.
    """

    name: str
    impl: Callable[..., Any]
    reference: Callable[..., Any]
    reference_vjp: Callable[..., Any] | None
    inputs: Callable[[torch.dtype], Any]
    dtypes: tuple[torch.dtype, ...] = ALL_FLOATS
    depth: Callable[..., int] | int = 1
    multilinear: bool = False
    ulps: float = 0.0
    kinks: Callable[..., float] | None = None
    torch_fn: Callable[..., Any] | None = None
    deterministic: bool = True
    differentiable: bool = True
    terms: Callable[..., Any] | None = None
    vjp_terms: Callable[..., Any] | None = None
    doc: str = ""
    tags: Sequence[str] = field(default_factory=tuple)

    def replace(self, **changes: Any) -> OpSpec:
        import dataclasses

        return dataclasses.replace(self, **changes)


_CATALOG: dict[str, OpSpec] | None = None


def catalog() -> dict[str, OpSpec]:
    """Name -> :class:`OpSpec` for every op, gathered from each module in ``gradcheck.specs``
    (each exports ``SPECS``, a list of OpSpec)."""
    global _CATALOG
    if _CATALOG is None:
        import gradcheck.specs as pkg

        found: dict[str, OpSpec] = {}
        for mod in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
            module = importlib.import_module(f"gradcheck.specs.{mod.name}")
            for spec in getattr(module, "SPECS", ()):
                if spec.name in found:
                    raise RuntimeError(f"op {spec.name!r} is specified twice (second in gradcheck.specs.{mod.name})")
                found[spec.name] = spec
        _CATALOG = found
    return dict(_CATALOG)


def get_spec(name: str) -> OpSpec:
    specs = catalog()
    if name not in specs:
        raise KeyError(f"no op named {name!r} in the catalog; known: {', '.join(sorted(specs))}")
    return specs[name]
