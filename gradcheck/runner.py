"""verify_op: run the catalog's battery for one named op, on a registered implementation or any drop-in."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from gradcheck.engine import verify
from gradcheck.ops import get_spec, implementation
from gradcheck.report import Report

__all__ = ["verify_op"]


def verify_op(
    op_name: str,
    /,
    impl: Callable[..., Any] | None = None,
    dtypes: Sequence[torch.dtype] | None = None,
    *,
    max_examples: int | None = None,
    device: torch.device | str | None = None,
    opcheck: str = "auto",
    opcheck_examples: int | str | None = "profile",
    inputs: Any = None,
    supports: Callable[..., bool] | None = None,
    name: str | None = None,
    baseline: Callable[..., Any] | str | None = "torch",
    baseline_factor: float = 2.0,
    layouts: dict[int | str, Any] | None = None,
    budget: float | str | None = "profile",
    shrink_budget: float | str | None = "profile",
    max_findings: int = 3,
    isolate: bool = False,
) -> Report:
    """Verify the catalog op ``op_name`` at the spec's dtypes (or ``dtypes``): any callable with the
    op's signature (``impl``; e.g. ``torch_fn``, or your kernel), or, with ``impl=None``, the
    implementation registered for ``op_name`` (this project's Triton kernels, through their entry
    point). ``device`` defaults to the registered implementation's device, else the engine's
    default (CUDA when available). ``opcheck``/``opcheck_examples`` are ``verify``'s: a custom op
    the implementation calls is opchecked on the first N examples (the active profile's bound by
    default; None: every example).

    ``inputs`` replaces the catalog's draws (a strategy, or dtype -> strategy); ``supports(*drawn)``
    restricts them to what the implementation supports (no label smoothing, no string padding):
    draws it refuses are not run and the report counts them, never sent elsewhere. ``name`` names
    the verification in reports (default: the op's). ``baseline`` is the measuring stick: "torch"
    (the default) is the catalog's ``torch_fn`` at the same dtype, None none, or any callable (see
    ``verify``). ``layouts``, ``budget``, ``shrink_budget``, ``max_findings`` and ``isolate`` are ``verify``'s.
    A gradient torch does not define (cross-entropy's class weight) is checked when the
    implementation gives one and never demanded (the spec's ``optional_grads``). Raises
    VerificationError on a failure."""
    spec = get_spec(op_name)
    chosen = tuple(dtypes) if dtypes is not None else spec.dtypes
    unsupported = [d for d in chosen if d not in spec.dtypes]
    if unsupported:
        raise ValueError(
            f"{op_name} is specified for {[str(d) for d in spec.dtypes]}, not {[str(d) for d in unsupported]}"
        )
    fn = impl
    if fn is None:
        fn, registered_device = implementation(op_name)
        device = device if device is not None else registered_device
    if baseline == "torch":
        baseline = spec.torch_fn if fn is not spec.torch_fn and spec.torch_baseline else None
    return verify(
        fn,
        inputs if inputs is not None else spec.inputs,
        reference=spec.reference,
        reference_vjp=spec.reference_vjp if spec.differentiable else None,
        dtypes=chosen,
        name=name if name is not None else op_name,
        max_examples=max_examples,
        depth=spec.depth,
        multilinear=spec.multilinear,
        ulps=spec.ulps,
        kinks=spec.kinks,
        backward=spec.differentiable,
        deterministic=spec.deterministic,
        tf32=None if "dot" in spec.tags else False,
        device=device,
        terms=spec.terms,
        vjp_terms=spec.vjp_terms,
        opcheck=opcheck,
        opcheck_examples=opcheck_examples,
        rounding_model=spec.torch_fn,
        layouts=layouts,
        supports=supports,
        optional_grads=spec.optional_grads,
        baseline=baseline,
        baseline_factor=baseline_factor,
        budget=budget,
        shrink_budget=shrink_budget,
        max_findings=max_findings,
        isolate=isolate,
    )
