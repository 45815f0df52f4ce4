"""relu in NumPy float64: forward and VJP."""

import numpy as np

__all__ = ["relu", "relu_vjp"]


def relu(x: np.ndarray) -> np.ndarray:
    return np.where(x < 0, 0.0, x)  # NaN stays NaN


def relu_vjp(x: np.ndarray, g: np.ndarray) -> tuple[np.ndarray]:
    return (np.where(x > 0, g, 0.0),)
