"""Every op in one place, under ``torch.nn.functional``'s (or ``torch``'s) names and signatures, so
``import kernels.functional as F`` swaps for ``import torch.nn.functional as F``; ``linear_relu``
(relu fused into linear's epilogue), ``swiglu``/``geglu`` (gated halves of the last dim),
``rotary_embedding`` and ``linear_cross_entropy`` (the fused LLM head) are ours."""

from kernels.activations import geglu, gelu, silu, swiglu
from kernels.attention import scaled_dot_product_attention
from kernels.cat import cat, contiguous
from kernels.conv import conv2d
from kernels.cross_entropy import cross_entropy
from kernels.elementwise import add, div, exp, log, mul, neg, pow, sigmoid, sqrt, sub, tanh
from kernels.embedding import embedding
from kernels.linear_cross_entropy import linear_cross_entropy
from kernels.logsumexp import logsumexp
from kernels.matmul import linear, linear_relu, matmul
from kernels.mse import mse_loss
from kernels.norms import group_norm, layer_norm, rms_norm
from kernels.pool import max_pool2d
from kernels.reduction import amax, amin, max, mean, min, sum
from kernels.relu import relu
from kernels.rotary import rotary_embedding
from kernels.softmax import log_softmax, softmax

__all__ = [
    "add",
    "amax",
    "amin",
    "cat",
    "contiguous",
    "conv2d",
    "cross_entropy",
    "div",
    "embedding",
    "exp",
    "geglu",
    "gelu",
    "group_norm",
    "layer_norm",
    "linear",
    "linear_cross_entropy",
    "linear_relu",
    "log",
    "log_softmax",
    "logsumexp",
    "matmul",
    "max",
    "max_pool2d",
    "mean",
    "min",
    "mse_loss",
    "mul",
    "neg",
    "pow",
    "relu",
    "rms_norm",
    "rotary_embedding",
    "scaled_dot_product_attention",
    "sigmoid",
    "silu",
    "softmax",
    "sqrt",
    "sub",
    "sum",
    "swiglu",
    "tanh",
]
