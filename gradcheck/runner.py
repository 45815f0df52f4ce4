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
    name: str,
    impl: Callable[..., Any] | None = None,
    dtypes: Sequence[torch.dtype] | None = None,
    *,
    max_examples: int | None = None,
    device: torch.device | str | None = None,
    opcheck: str = "auto",
    opcheck_examples: int | str | None = "profile",
) -> Report:
    """Verify the catalog op ``name`` at the spec's dtypes (or ``dtypes``): any callable with the
    op's signature (``impl``; e.g. ``torch_fn``, or your kernel), or, with ``impl=None``, the
    implementation registered for ``name`` (this project's Triton kernels, through their entry
    point). ``device`` defaults to the registered implementation's device, else the engine's
    default (CUDA when available). ``opcheck``/``opcheck_examples`` are ``verify``'s: a custom op
    the implementation calls is opchecked on the first N examples (the active profile's bound by
    default; None: every example). Raises
    VerificationError on a failure."""
    spec = get_spec(name)
    chosen = tuple(dtypes) if dtypes is not None else spec.dtypes
    unsupported = [d for d in chosen if d not in spec.dtypes]
    if unsupported:
        raise ValueError(
            f"{name} is specified for {[str(d) for d in spec.dtypes]}, not {[str(d) for d in unsupported]}"
        )
    fn = impl
    if fn is None:
        fn, registered_device = implementation(name)
        device = device if device is not None else registered_device
    return verify(
        fn,
        spec.inputs,
        reference=spec.reference,
        reference_vjp=spec.reference_vjp if spec.differentiable else None,
        dtypes=chosen,
        name=name,
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
    )
