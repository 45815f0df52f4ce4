"""Triton kernels for the core tensor ops of the PyTorch 60-minute blitz, each a ``torch.library``
custom op (``torch.ops.blitz.<name>``: schema, fake implementation, autograd registration whose
backward is a custom op too) with forward and backward in Triton.

One op family per module: ``cat``, ``conv``, ``cross_entropy``, ``elementwise``, ``matmul``,
``mse``, ``pool``, ``reduction``, ``relu``, ``softmax``; ``optim`` (SGD) and ``nn`` (torch.nn
modules on these ops). Import ops from their modules (``kernels.relu.relu``) or all at once from
``kernels.functional``, which mirrors ``torch.nn.functional``. ``kernels.registry`` binds the ops
to the gradcheck catalog's names; ``kernels.blitz`` is the blitz classifier (data, network,
training) built on them.
"""

from kernels import _runtime  # noqa: F401  (decides compile vs. interpreter before any kernel)
