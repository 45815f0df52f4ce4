"""Property-tested verification of custom kernels against NumPy float64 references, forward and backward."""

from gradcheck import strategies
from gradcheck.catalog import OpSpec, catalog
from gradcheck.engine import check_gradients, verify
from gradcheck.report import Report, VerificationError
from gradcheck.runner import verify_op

__all__ = [
    "OpSpec",
    "Report",
    "VerificationError",
    "catalog",
    "check_gradients",
    "strategies",
    "verify",
    "verify_op",
]
