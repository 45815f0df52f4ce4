"""Draw sizes and value mixes shared by the catalog's spec files."""

from __future__ import annotations

from hypothesis import strategies as st

__all__ = ["MAX_NUMEL", "REDUCTIONS", "VALUES", "as_arg"]

#: Elements per drawn input: sizes reach 2049 and 4097 along a dim (past a block multiple) while an
#: interpreted example stays in the milliseconds.
MAX_NUMEL = 1 << 13
#: Values for sums and products: small integers now and then make every sum exact, so a wrong
#: element cannot hide in rounding.
VALUES = st.sampled_from(("normal", "normal", "uniform", "integers"))
#: The three loss reductions.
REDUCTIONS = st.sampled_from(("mean", "sum", "none"))


def as_arg(pair: tuple[int, int], draw) -> int | tuple[int, int]:
    """A pair as torch accepts it: the int when both are equal (sometimes), else the tuple."""
    return pair[0] if pair[0] == pair[1] and draw(st.booleans()) else pair
