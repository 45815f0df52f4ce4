"""add, sub, mul, div (broadcasting) and neg, exp, log, sqrt, sigmoid, tanh, pow in NumPy float64: forward and VJP."""

from __future__ import annotations

import numpy as np

__all__ = [
    "add",
    "add_vjp",
    "div",
    "div_vjp",
    "exp",
    "exp_vjp",
    "log",
    "log_vjp",
    "mul",
    "mul_vjp",
    "neg",
    "neg_vjp",
    "pow",
    "pow_vjp",
    "sigmoid",
    "sigmoid_vjp",
    "sqrt",
    "sqrt_vjp",
    "sub",
    "sub_vjp",
    "tanh",
    "tanh_vjp",
    "unbroadcast",
]


def unbroadcast(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``g`` over the dims an operand of ``shape`` was broadcast along, giving ``shape``."""
    g = np.asarray(g, dtype=np.float64)
    lead = g.ndim - len(shape)
    if lead:
        g = g.sum(axis=tuple(range(lead)))
    axes = tuple(d for d, s in enumerate(shape) if s == 1 and g.shape[d] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)


def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray(a + b)


def add_vjp(a: np.ndarray, b: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return unbroadcast(g, a.shape), unbroadcast(g, b.shape)


def sub(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray(a - b)


def sub_vjp(a: np.ndarray, b: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return unbroadcast(g, a.shape), unbroadcast(-g, b.shape)


def mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray(a * b)


def mul_vjp(a: np.ndarray, b: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return unbroadcast(g * b, a.shape), unbroadcast(g * a, b.shape)


def div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(a / b)


def div_vjp(a: np.ndarray, b: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """d(a/b)/da = 1/b, d(a/b)/db = -a/b^2."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return unbroadcast(g / b, a.shape), unbroadcast(-g * ((a / b) / b), b.shape)


def neg(x: np.ndarray) -> np.ndarray:
    return np.asarray(-x)


def neg_vjp(x: np.ndarray, g: np.ndarray) -> tuple[np.ndarray]:
    return (np.asarray(-g),)


def exp(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.exp(x)


def exp_vjp(x: np.ndarray, g: np.ndarray) -> tuple[np.ndarray]:
    with np.errstate(over="ignore", invalid="ignore"):
        return (g * np.exp(x),)


def log(x: np.ndarray) -> np.ndarray:
    """log(0) = -inf, log of a negative number NaN."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(x)


def log_vjp(x: np.ndarray, g: np.ndarray) -> tuple[np.ndarray]:
    with np.errstate(divide="ignore", invalid="ignore"):
        return (g / x,)


def sqrt(x: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.sqrt(x)


def sqrt_vjp(x: np.ndarray, g: np.ndarray) -> tuple[np.ndarray]:
    with np.errstate(divide="ignore", invalid="ignore"):
        return (g / (2.0 * np.sqrt(x)),)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)), evaluated through exp(-|x|) so that it never overflows."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0, e) / (1.0 + e)


def sigmoid_vjp(x: np.ndarray, g: np.ndarray) -> tuple[np.ndarray]:
    """sigmoid(x) * (1 - sigmoid(x)) = e / (1 + e)^2 with e = exp(-|x|)."""
    e = np.exp(-np.abs(x))
    return (g * e / ((1.0 + e) * (1.0 + e)),)


def tanh(x: np.ndarray) -> np.ndarray:
    return np.tanh(x)


def tanh_vjp(x: np.ndarray, g: np.ndarray) -> tuple[np.ndarray]:
    """1 - tanh(x)^2 = 1 / cosh(x)^2 (no cancellation where tanh saturates)."""
    with np.errstate(over="ignore"):
        return (g / np.cosh(x) ** 2,)


def pow(x: np.ndarray, exponent: float) -> np.ndarray:
    """x ** exponent (NaN for a negative base and a non-integer exponent)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return np.power(x, float(exponent))


def pow_vjp(x: np.ndarray, exponent: float, g: np.ndarray) -> tuple[np.ndarray, None]:
    """exponent * x ** (exponent - 1), and 0 for exponent 0 (torch's convention)."""
    p = float(exponent)
    if p == 0.0:
        return np.zeros_like(np.asarray(x, dtype=np.float64)), None
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return np.asarray(g * (p * np.power(x, p - 1.0))), None
