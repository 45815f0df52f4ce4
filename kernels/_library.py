"""The ``torch.library`` namespace our kernels register their custom ops under, and the one
helper that registers them (``torch.ops.blitz.<name>``).

Why ``torch.library.custom_op`` and not ``torch.library.triton_op``: measured with torch 2.13 and
triton 3.9 under the Triton interpreter (CPU, no GPU), a Triton kernel wrapped in ``custom_op``
with a ``register_fake`` passes ``torch.library.opcheck`` and runs under
``torch.compile(fullgraph=True)``; the same kernel as a ``triton_op`` fails opcheck's fake-tensor
and AOT-dispatch tests there, because the interpreter runs the kernel on the fake tensors.
``triton_op`` (which lets inductor see and fuse the kernels) could only be measured on a GPU,
which this change did not have. Every op is registered through :func:`custom_op` below, so
switching is local: this function, plus wrapping the launches in ``torch.library.wrap_triton``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

__all__ = ["NAMESPACE", "custom_op"]

NAMESPACE = "blitz"


def custom_op(name: str, *, mutates_args: Sequence[str] = ()) -> Callable:
    """Decorator: ``torch.library.custom_op("blitz::<name>", mutates_args=...)``; the schema is
    inferred from the function's type annotations. Our ops mutate no input unless they say so."""
    return torch.library.custom_op(f"{NAMESPACE}::{name}", mutates_args=tuple(mutates_args))
