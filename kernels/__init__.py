"""Triton kernels for the core tensor ops of the PyTorch 60-minute blitz, each a
``torch.autograd.Function`` with forward and backward in Triton."""

from kernels import _runtime  # noqa: F401  (decides compile vs. interpreter before any kernel)
from kernels.relu import relu

__all__ = ["relu"]
