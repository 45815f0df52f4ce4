"""Catalog entry for relu."""

import numpy as np
import torch

import reference.relu
from gradcheck import strategies as gs
from gradcheck.ops import OpSpec

__all__ = ["SPECS"]


def _inputs(dtype):
    return gs.tensors(gs.shapes(max_numel=1 << 13), elements="separated").map(lambda x: (x,))


def _kink_distance(x: np.ndarray) -> float:
    """relu bends at 0: the smallest |x| is how far a perturbation may go."""
    return float(np.min(np.abs(x))) if x.size else np.inf


SPECS = [
    OpSpec(
        name="relu",
        reference=reference.relu.relu,
        reference_vjp=reference.relu.relu_vjp,
        inputs=_inputs,
        kinks=_kink_distance,
        torch_fn=torch.nn.functional.relu,
        doc="max(x, 0); the gradient at 0 is 0, as torch",
    )
]
