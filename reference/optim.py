"""torch.optim.SGD's update rule in NumPy float64, one step of one parameter."""

from __future__ import annotations

import numpy as np

__all__ = ["sgd_step"]


def sgd_step(
    param: np.ndarray,
    grad: np.ndarray,
    momentum_buffer: np.ndarray | None,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
    first_step: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(new_param, new_buffer), following torch/optim/sgd.py: the buffer is None without momentum
    and starts as the update direction on the first step."""
    d = -grad if maximize else grad
    if weight_decay != 0:
        d = d + weight_decay * param
    buf = None
    if momentum != 0:
        buf = d.copy() if first_step else momentum * momentum_buffer + (1 - dampening) * d
        d = d + momentum * buf if nesterov else buf
    return param - lr * d, buf
