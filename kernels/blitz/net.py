"""The classifier of the PyTorch 60-minute blitz ("Training a classifier") on our kernels, and its
plain torch.nn twin with identical ``state_dict`` keys, the reference that ``kernels.blitz.train``
trains side by side."""

from __future__ import annotations

import torch
from torch import nn

from kernels import _runtime as rt
from kernels.nn import Conv2d, Flatten, Linear, MaxPool2d, ReLU

__all__ = ["BlitzNet", "TorchBlitzNet", "blitznet_torch"]


class BlitzNet(nn.Module):
    """The 60-minute blitz CNN (conv 3->6 5x5, max-pool 2, conv 6->16 5x5, max-pool 2, linear
    400->120->84->10, relu between) on our kernels, for (N, 3, 32, 32) inputs.

    Attribute and parameter names are the tutorial's (``conv1``, ``pool``, ``conv2``, ``fc1``, ``fc2``,
    ``fc3``), so its ``state_dict`` loads into :class:`TorchBlitzNet` and back. ``fused=True`` runs
    fc1 + relu and fc2 + relu as single fused matmul kernels (``linear_relu``).
    """

    def __init__(self, num_classes: int = 10, *, fused: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.fused = fused
        self.conv1 = Conv2d(3, 6, 5, **factory)
        self.pool = MaxPool2d(2, 2)
        self.conv2 = Conv2d(6, 16, 5, **factory)
        self.relu = ReLU()
        self.flatten = Flatten(1)
        self.fc1 = Linear(16 * 5 * 5, 120, **factory)
        self.fc2 = Linear(120, 84, **factory)
        self.fc3 = Linear(84, rt.check_positive_int(num_classes, "num_classes"), **factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != (3, 32, 32):
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"BlitzNet takes a batch of 3x32x32 images, shape (N, 3, 32, 32); got {shape}")
        x = self.pool(self.relu(self.conv1(x)))  # (N, 6, 14, 14)
        x = self.pool(self.relu(self.conv2(x)))  # (N, 16, 5, 5)
        x = self.flatten(x)  # (N, 400)
        if self.fused:
            x = self.fc1.forward_relu(x)  # (N, 120)
            x = self.fc2.forward_relu(x)  # (N, 84)
        else:
            x = self.relu(self.fc1(x))
            x = self.relu(self.fc2(x))
        return self.fc3(x)  # (N, num_classes) logits


class TorchBlitzNet(nn.Module):
    """:class:`BlitzNet` in plain torch.nn (the tutorial's ``Net``): the reference, with identical
    ``state_dict`` keys and, under the same seed, identical initial weights."""

    def __init__(self, num_classes: int = 10, *, device=None, dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.conv1 = nn.Conv2d(3, 6, 5, **factory)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5, **factory)
        self.relu = nn.ReLU()
        self.flatten = nn.Flatten(1)
        self.fc1 = nn.Linear(16 * 5 * 5, 120, **factory)
        self.fc2 = nn.Linear(120, 84, **factory)
        self.fc3 = nn.Linear(84, num_classes, **factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.conv1(x)))
        x = self.pool(self.relu(self.conv2(x)))
        x = self.flatten(x)
        x = self.relu(self.fc1(x))
        x = self.relu(self.fc2(x))
        return self.fc3(x)


def blitznet_torch(num_classes: int = 10, *, device=None, dtype=None) -> TorchBlitzNet:
    """The plain torch.nn twin of :class:`BlitzNet`."""
    return TorchBlitzNet(num_classes, device=device, dtype=dtype)
