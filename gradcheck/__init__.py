"""Property-tested verification of custom kernels against NumPy float64 references, forward and backward.

Importing this package imports torch, numpy and hypothesis, sets no environment variable, loads no
Hypothesis profile and imports no kernels: implementations reach it as arguments, or through
:func:`register_implementations` and the ``gradcheck.implementations`` entry point.
"""

from gradcheck import strategies
from gradcheck.engine import check_gradients, verify
from gradcheck.hooks import default_device, register_poison_hook, unregister_poison_hook
from gradcheck.ops import OpSpec, catalog, implementations, register_implementations
from gradcheck.report import Report, VerificationError
from gradcheck.runner import verify_op

__all__ = [
    "OpSpec",
    "Report",
    "VerificationError",
    "catalog",
    "check_gradients",
    "default_device",
    "implementations",
    "register_implementations",
    "register_poison_hook",
    "strategies",
    "unregister_poison_hook",
    "verify",
    "verify_op",
]
