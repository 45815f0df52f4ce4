"""Our implementations under the catalog's op names, in the catalog's calling conventions.

The engine finds this module through the ``gradcheck.implementations`` entry point group
(``kernels = "kernels.registry"``) and reads two names: ``IMPLEMENTATIONS`` (op name -> callable
taking the positional arguments the catalog's input strategy draws) and ``device()`` (where the
kernels run). Nothing here imports the engine.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from kernels import (
    _runtime,
    activations,
    attention,
    cat,
    conv,
    cross_entropy,
    elementwise,
    embedding,
    linear_cross_entropy,
    logsumexp,
    matmul,
    mse,
    norms,
    optim,
    pool,
    reduction,
    relu,
    rotary,
    softmax,
)

__all__ = ["IMPLEMENTATIONS", "device"]


def _cat(*args: torch.Tensor | int) -> torch.Tensor:
    """``kernels.cat.cat`` with the tensors as positional arguments and the dim last."""
    *tensors, dim = args
    return cat.cat(tensors, dim)


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, is_causal: bool, scale: float | None) -> torch.Tensor:
    """``kernels.attention.scaled_dot_product_attention`` with ``is_causal`` and ``scale`` positional
    (torch's signature has ``attn_mask`` and ``dropout_p`` before them)."""
    return attention.scaled_dot_product_attention(q, k, v, is_causal=is_causal, scale=scale)


def _linear_cross_entropy(hidden, weight, target, bias, ignore_index, reduction):
    """``kernels.linear_cross_entropy.linear_cross_entropy`` (torch's keyword-only signature) in
    the catalog's positional convention (hidden, weight, target, bias, ignore_index, reduction)."""
    return linear_cross_entropy.linear_cross_entropy(
        hidden, weight, target, linear_bias=bias, ignore_index=ignore_index, reduction=reduction
    )


def _sgd(param, grad, buf, lr, momentum, dampening, weight_decay, nesterov, maximize, first_step):
    """``kernels.optim.sgd_step`` with positional hyperparameters; the new buffer only with momentum."""
    new_param, new_buf = optim.sgd_step(
        param, grad, buf, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
        nesterov=nesterov, maximize=maximize, first_step=first_step,
    )  # fmt: skip
    return new_param if new_buf is None else (new_param, new_buf)


IMPLEMENTATIONS: dict[str, Callable] = {
    # elementwise: torch's signatures (pow's exponent a plain float)
    **{name: getattr(elementwise, name) for name in ("add", "sub", "mul", "div", "neg", "exp", "log", "sqrt")},
    **{name: getattr(elementwise, name) for name in ("tanh", "sigmoid", "pow")},
    "relu": relu.relu,
    # reductions: (input, dim, keepdim)
    **{name: getattr(reduction, name) for name in ("sum", "mean", "amax", "amin", "max", "min")},
    "cat": _cat,
    "matmul": matmul.matmul,
    "linear": matmul.linear,
    "linear_relu": matmul.linear_relu,
    "softmax": softmax.softmax,
    "log_softmax": softmax.log_softmax,
    # torch.nn.functional's signatures (normalized_shape, optional weight and bias, eps)
    "layer_norm": norms.layer_norm,
    "rms_norm": norms.rms_norm,
    "group_norm": norms.group_norm,
    # torch.nn.functional's full positional signatures (size_average, reduce included)
    "cross_entropy": cross_entropy.cross_entropy,
    "mse_loss": mse.mse_loss,
    "conv2d": conv.conv2d,
    "max_pool2d": pool.max_pool2d,
    "sgd": _sgd,
    # activations: gelu's approximate positional; the gated ones split the last dim in halves [a, b]
    **{name: getattr(activations, name) for name in ("gelu", "silu", "swiglu", "geglu")},
    "embedding": embedding.embedding,
    "logsumexp": logsumexp.logsumexp,
    "rotary_embedding": rotary.rotary_embedding,
    "linear_cross_entropy": _linear_cross_entropy,
    "scaled_dot_product_attention": _attention,
}


def device() -> torch.device:
    """The device our kernels run on: CUDA when there is one, else the CPU under the Triton interpreter."""
    return _runtime.device()
