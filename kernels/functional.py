"""Every op in one place, under ``torch.nn.functional``'s (or ``torch``'s) names and signatures, so
``import kernels.functional as F`` swaps for ``import torch.nn.functional as F``; ``linear_relu``
is ours (relu fused into linear's epilogue)."""

from kernels.attention import scaled_dot_product_attention
from kernels.cat import cat, contiguous
from kernels.conv import conv2d
from kernels.cross_entropy import cross_entropy
from kernels.elementwise import add, div, exp, log, mul, neg, pow, sigmoid, sqrt, sub, tanh
from kernels.matmul import linear, linear_relu, matmul
from kernels.mse import mse_loss
from kernels.pool import max_pool2d
from kernels.reduction import amax, amin, max, mean, min, sum
from kernels.relu import relu
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
    "exp",
    "linear",
    "linear_relu",
    "log",
    "log_softmax",
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
    "scaled_dot_product_attention",
    "sigmoid",
    "softmax",
    "sqrt",
    "sub",
    "sum",
    "tanh",
]
