"""Triton kernels for the core tensor ops of the PyTorch 60-minute blitz, each a
``torch.autograd.Function`` with forward and backward in Triton.

Import ops from their modules (``kernels.relu.relu``) or all at once from ``kernels.functional``,
which mirrors ``torch.nn.functional``; the modules keep their names free of function re-exports.
"""

from kernels import _runtime  # noqa: F401  (decides compile vs. interpreter before any kernel)
