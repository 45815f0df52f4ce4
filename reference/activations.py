"""gelu (exact and tanh), silu, and the gated swiglu and geglu in NumPy float64: forward and VJP.

Every form avoids the cancellation of the textbook formulas: gelu(x) = x * Phi(x) with
Phi(x) = erfc(-x / sqrt 2) / 2 (not 1 + erf, which cancels for x < 0), the tanh form as
x * sigmoid(2u) (0.5 (1 + tanh u) = sigmoid(2u)), and sigmoid through exp(-|x|).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "GELU_TANH_CUBIC",
    "GELU_TANH_SCALE",
    "geglu",
    "geglu_vjp",
    "gelu",
    "gelu_vjp",
    "silu",
    "silu_vjp",
    "swiglu",
    "swiglu_vjp",
]

#: The tanh approximation: gelu(x) ~ 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
GELU_TANH_SCALE = math.sqrt(2.0 / math.pi)
GELU_TANH_CUBIC = 0.044715

_erfc = np.frompyfunc(math.erfc, 1, 1)


def _phi_cdf(x: np.ndarray) -> np.ndarray:
    """The standard normal CDF, erfc(-x / sqrt 2) / 2, accurate in both tails."""
    return 0.5 * np.asarray(_erfc(-np.asarray(x, dtype=np.float64) / math.sqrt(2.0)), dtype=np.float64)


def _sigmoid_pair(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sigmoid(z), sigmoid(-z)), each without cancellation or overflow (e = exp(-|z|) <= 1)."""
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(-np.abs(z))
        big = 1.0 / (1.0 + e)
        small = e / (1.0 + e)
    return np.where(z >= 0, big, small), np.where(z >= 0, small, big)


def _gelu_tanh_parts(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(s, 1 - s, du/dx) for u = sqrt(2/pi) (x + 0.044715 x^3) and s = sigmoid(2u)."""
    with np.errstate(over="ignore", invalid="ignore"):
        u = GELU_TANH_SCALE * (x + GELU_TANH_CUBIC * x**3)
        du = GELU_TANH_SCALE * (1.0 + 3.0 * GELU_TANH_CUBIC * x * x)
    s, s_neg = _sigmoid_pair(2.0 * u)
    return s, s_neg, du


def _gelu(x: np.ndarray, approximate: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        if approximate == "tanh":
            s, _, _ = _gelu_tanh_parts(x)
            return x * s
        return x * _phi_cdf(x)


def _gelu_grad(x: np.ndarray, approximate: str) -> np.ndarray:
    """d gelu / dx: Phi(x) + x phi(x) exactly; s + 2 x s (1 - s) du/dx for the tanh form
    (0.5 (1 - tanh^2 u) = 2 s (1 - s))."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        if approximate == "tanh":
            s, s_neg, du = _gelu_tanh_parts(x)
            return s + 2.0 * x * (s * s_neg) * du
        return _phi_cdf(x) + x * np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def _check_approximate(approximate: str) -> None:
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")


def gelu(x: np.ndarray, approximate: str = "none") -> np.ndarray:
    """x * Phi(x) (``approximate='none'``) or the tanh approximation (``'tanh'``), as torch."""
    _check_approximate(approximate)
    return _gelu(x, approximate)


def gelu_vjp(x: np.ndarray, approximate: str, g: np.ndarray) -> tuple[np.ndarray, None]:
    _check_approximate(approximate)
    with np.errstate(invalid="ignore"):
        return np.asarray(g, dtype=np.float64) * _gelu_grad(x, approximate), None


def silu(x: np.ndarray) -> np.ndarray:
    """x * sigmoid(x)."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return x * _sigmoid_pair(x)[0]


def _silu_grad(x: np.ndarray) -> np.ndarray:
    """s (1 + x (1 - s)), s = sigmoid(x)."""
    s, s_neg = _sigmoid_pair(x)
    with np.errstate(invalid="ignore"):
        return s * (1.0 + x * s_neg)


def silu_vjp(x: np.ndarray, g: np.ndarray) -> tuple[np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return (np.asarray(g, dtype=np.float64) * _silu_grad(x),)


def _halves(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(a, b): the first and second halves of the last dim (of even size 2H)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 0 or x.shape[-1] % 2:
        raise ValueError(f"a gated activation needs a last dim of even size, got shape {x.shape}")
    h = x.shape[-1] // 2
    return x[..., :h], x[..., h:]


def swiglu(x: np.ndarray) -> np.ndarray:
    """silu(a) * b for x = [a, b] split in halves along the last dim (Llama's MLP gate)."""
    a, b = _halves(x)
    return silu(a) * b


def swiglu_vjp(x: np.ndarray, g: np.ndarray) -> tuple[np.ndarray]:
    """[g b silu'(a), g silu(a)] concatenated along the last dim."""
    a, b = _halves(x)
    g = np.asarray(g, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return (np.concatenate([g * b * _silu_grad(a), g * silu(a)], axis=-1),)


def geglu(x: np.ndarray) -> np.ndarray:
    """gelu_tanh(a) * b for x = [a, b] split in halves along the last dim (the tanh approximation,
    as Gemma's MLP and Liger's GeGLU use it)."""
    a, b = _halves(x)
    return _gelu(a, "tanh") * b


def geglu_vjp(x: np.ndarray, g: np.ndarray) -> tuple[np.ndarray]:
    """[g b gelu_tanh'(a), g gelu_tanh(a)] concatenated along the last dim."""
    a, b = _halves(x)
    g = np.asarray(g, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return (np.concatenate([g * b * _gelu_grad(a, "tanh"), g * _gelu(a, "tanh")], axis=-1),)
