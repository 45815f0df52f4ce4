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

__all__ = ["NAMESPACE", "custom_op", "unary_op_pair"]

NAMESPACE = "blitz"


def custom_op(name: str, *, mutates_args: Sequence[str] = ()) -> Callable:
    """Decorator: ``torch.library.custom_op("blitz::<name>", mutates_args=...)``; the schema is
    inferred from the function's type annotations. Our ops mutate no input unless they say so."""
    return torch.library.custom_op(f"{NAMESPACE}::{name}", mutates_args=tuple(mutates_args))


def _save_input(ctx, inputs, output) -> None:
    ctx.save_for_backward(inputs[0])


def unary_op_pair(
    name: str,
    forward: Callable[[torch.Tensor], torch.Tensor],
    backward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    doc: str,
    out_shape: Callable[[torch.Size], Sequence[int]] = tuple,
) -> tuple[Callable, Callable]:
    """``blitz::<name>(input)`` and ``blitz::<name>_backward(input, grad_output)`` from two launch
    functions: the custom ops with their fake kernels (the output of shape ``out_shape(input.shape)``,
    the gradient of the input's shape) and the autograd registration, which saves the input and
    calls the backward op. Returns ``(op, backward_op)``."""

    def forward_op(input: torch.Tensor) -> torch.Tensor:
        return forward(input)

    def backward_op(input: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
        return backward(input, grad_output)

    forward_op.__name__ = forward_op.__qualname__ = f"{name}_op"
    forward_op.__doc__ = doc
    backward_op.__name__ = backward_op.__qualname__ = f"{name}_backward_op"
    backward_op.__doc__ = f"grad_input of {name} from its saved input and grad_output."
    op = custom_op(name)(forward_op)
    bwd_op = custom_op(f"{name}_backward")(backward_op)

    @op.register_fake
    def _(input):
        return input.new_empty(out_shape(input.shape))

    @bwd_op.register_fake
    def _(input, grad_output):
        return input.new_empty(input.shape)

    def autograd_backward(ctx, g: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return bwd_op(x, g)

    op.register_autograd(autograd_backward, setup_context=_save_input)
    return op, bwd_op
