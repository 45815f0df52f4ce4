"""Hypothesis strategies for kernel inputs: tensors, shapes, broadcastable pairs, matmul, conv and
pool geometries, class targets.

Every strategy yields float64 CPU tensors (or int64 targets); the engine casts them to the dtype
under test, lays them out (transposed, sliced, expanded, channels_last) and wraps them in guard
bands. Keyword-only options after ``*``; each option is a value (validated eagerly) unless said.

Sizes are drawn mostly small, sometimes awkward (17, 33, 127, 1000) and now and then past
2048 (2049, 4097): reductions and grids that only break past a block multiple or at scale are
reached, while ``max_numel`` keeps interpreter runs quick.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from hypothesis import strategies as st

__all__ = [
    "AWKWARD_SIZES",
    "LARGE_SIZES",
    "ConvGeometry",
    "PoolGeometry",
    "attention_inputs",
    "broadcastable_shapes",
    "class_targets",
    "conv2d_geometries",
    "directions",
    "matmul_shapes",
    "pool2d_geometries",
    "rotary_inputs",
    "rotary_tables",
    "rows_with_params",
    "shapes",
    "sides",
    "tensors",
    "values",
]

#: Sizes that sit just past a power of two or are prime: where masks and last blocks break.
AWKWARD_SIZES = (3, 5, 7, 17, 31, 33, 65, 127, 129, 255, 257, 1000, 1025)
#: Sizes past 2048 along one dim (attorch's cross-entropy lost its last block at batch >= 2048).
LARGE_SIZES = (2049, 4097)
ELEMENTS = ("normal", "uniform", "positive", "separated", "logits", "integers")


def _check_int(name: str, value: object, lo: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < lo:
        raise ValueError(f"{name} must be >= {lo}, got {value}")
    return int(value)


def _check_shape(shape: object) -> None:
    if shape is None or isinstance(shape, st.SearchStrategy):
        return
    if not isinstance(shape, Sequence) or isinstance(shape, str):
        raise TypeError(f"shape must be a tuple of ints or a strategy, got {shape!r}")
    for i, s in enumerate(shape):
        _check_int(f"shape[{i}]", s)


def _eager(check):
    """Validate a strategy's arguments when it is built, not when it first draws (Hypothesis'
    own convention), so a wrong argument fails at the line that wrote it."""

    def wrap(composite):
        @functools.wraps(composite)
        def build(*args, **kwargs):
            check(*args, **kwargs)
            return composite(*args, **kwargs)

        return build

    return wrap


def _check_shapes_args(*, min_dims=0, max_dims=4, min_side=0, max_side=8, max_numel=1 << 14, **_):
    _check_int("min_dims", min_dims)
    _check_int("max_dims", max_dims)
    _check_int("min_side", min_side)
    _check_int("max_side", max_side)
    _check_int("max_numel", max_numel, 1)
    if max_dims < min_dims:
        raise ValueError(f"max_dims={max_dims} < min_dims={min_dims}")
    if max_side < min_side:
        raise ValueError(f"max_side={max_side} < min_side={min_side}")


def _check_tensors_args(shape=None, *, elements="normal", scale=1.0, min_value=None, max_value=None, **_):
    _check_shape(shape)
    if not isinstance(elements, st.SearchStrategy):
        _validate_elements(elements, min_value, max_value)
    if not isinstance(scale, st.SearchStrategy) and not (isinstance(scale, int | float) and scale > 0):
        raise ValueError(f"scale must be a positive number or a strategy, got {scale!r}")


def _check_positive(**kwargs):
    for name, value in kwargs.items():
        if name in ("groups", "batch"):
            continue
        _check_int(name, value, 1)


def _check_matmul_args(*, batch=False, **kwargs):
    if batch not in (True, False, None):
        raise TypeError(f"batch must be True, False or None, got {batch!r}")
    _check_positive(**kwargs)


def _check_targets_args(shape, num_classes, *, ignore_index=-100, p_ignore=0.2):
    _check_shape(shape)
    _check_int("num_classes", num_classes, 1)
    if not 0.0 <= p_ignore <= 1.0:
        raise ValueError(f"p_ignore={p_ignore} must be in [0, 1]")
    if ignore_index is not None and 0 <= ignore_index < num_classes:
        raise ValueError(f"ignore_index={ignore_index} is a valid class in [0, {num_classes}); pick one outside")


def sides(*, min_side: int = 1, max_side: int = 8, awkward: bool = True, large: bool = True) -> st.SearchStrategy[int]:
    """One dim's size: usually in [min_side, max_side]; if ``awkward``, sometimes one of
    ``AWKWARD_SIZES``; if ``large``, now and then one of ``LARGE_SIZES``."""
    min_side = _check_int("min_side", min_side)
    max_side = _check_int("max_side", max_side)
    if max_side < min_side:
        raise ValueError(f"max_side={max_side} < min_side={min_side}")
    choices = [(12, st.integers(min_side, max_side))]
    if awkward:
        odd = [s for s in AWKWARD_SIZES if s >= min_side]
        if odd:
            choices.append((3, st.sampled_from(odd)))
    if large:
        choices.append((1, st.sampled_from(LARGE_SIZES)))
    weighted = [s for w, s in choices for _ in range(w)]
    return st.one_of(*weighted)


@_eager(_check_shapes_args)
@st.composite
def shapes(
    draw,
    *,
    min_dims: int = 0,
    max_dims: int = 4,
    min_side: int = 0,
    max_side: int = 8,
    max_numel: int = 1 << 14,
    awkward: bool = True,
    large: bool = True,
) -> tuple[int, ...]:
    """A shape with ``min_dims..max_dims`` dims; at most one dim is awkward or large, and the
    product stays within ``max_numel`` (a large dim shrinks the others to 1)."""
    min_dims = _check_int("min_dims", min_dims)
    max_dims = _check_int("max_dims", max_dims)
    if max_dims < min_dims:
        raise ValueError(f"max_dims={max_dims} < min_dims={min_dims}")
    _check_int("max_numel", max_numel, 1)
    ndim = draw(st.integers(min_dims, max_dims))
    dims = [draw(st.integers(min_side, max_side)) for _ in range(ndim)]
    if ndim and (awkward or large):
        pick = draw(st.integers(0, ndim - 1))
        dims[pick] = max(
            min_side, draw(sides(min_side=max(min_side, 1), max_side=max(max_side, 1), awkward=awkward, large=large))
        )
    # keep within the element budget: shrink the other dims, then the big one
    while math.prod(dims) > max_numel:
        j = max(range(ndim), key=lambda i: dims[i])
        others = [i for i in range(ndim) if i != j and dims[i] > max(min_side, 1)]
        if others:
            k = max(others, key=lambda i: dims[i])
            dims[k] = max(min_side, 1, dims[k] // 2)
        else:
            dims[j] = max(min_side, max_numel // max(1, math.prod(dims) // max(dims[j], 1)))
            if math.prod(dims) > max_numel:
                dims[j] = max(min_side, 1)
                break
    return tuple(dims)


def _validate_elements(elements: str, min_value: float | None, max_value: float | None) -> None:
    if elements not in ELEMENTS:
        raise ValueError(f"elements={elements!r}; expected one of {', '.join(ELEMENTS)}")
    if min_value is not None and max_value is not None and not min_value < max_value:
        raise ValueError(f"min_value={min_value} must be < max_value={max_value}")
    if elements == "positive" and min_value is not None and min_value <= 0:
        raise ValueError(f"elements='positive' needs min_value > 0, got {min_value}")


def values(
    rng: np.random.Generator,
    shape: Sequence[int],
    *,
    elements: str = "normal",
    scale: float = 1.0,
    min_value: float | None = None,
    max_value: float | None = None,
) -> np.ndarray:
    """Float64 values of ``shape`` from ``rng``.

    normal: N(0, scale^2); uniform: U(min_value or -scale, max_value or scale); positive: log-uniform
    in [min_value or 0.1*scale, max_value or 10*scale]; separated: distinct values at least
    ``scale/16`` apart and at least ``scale/32`` from 0, in random order (no ties, no value at a
    relu/abs kink, so finite differences are valid; see the comment for sizes past 256); logits:
    N(0, (3 scale)^2) with now and then a dominant entry; integers: small integers in [-4, 4] * scale
    (sums are exact in every dtype)."""
    n = int(math.prod(shape))
    if elements == "normal":
        v = rng.standard_normal(n) * scale
    elif elements == "uniform":
        lo = -scale if min_value is None else min_value
        hi = scale if max_value is None else max_value
        v = rng.uniform(lo, hi, n)
    elif elements == "positive":
        lo = 0.1 * scale if min_value is None else min_value
        hi = 10.0 * scale if max_value is None else max_value
        v = np.exp(rng.uniform(math.log(lo), math.log(hi), n))
    elif elements == "separated":
        # magnitudes on a grid of 256 levels spaced scale/16 (>= one bf16 ulp below 16 * scale,
        # so casting keeps them apart), starting at scale/32, random signs; all distinct up to
        # 256 elements, and past that a window of w elements ties with chance ~ w^2/1024
        levels = (rng.permutation(n) % 256 + 0.5) * (scale / 16)
        v = levels * rng.choice([-1.0, 1.0], n)
    elif elements == "logits":
        v = rng.standard_normal(n) * 3 * scale
        if n and rng.random() < 0.3:
            v[rng.integers(n)] += 20 * scale
    elif elements == "integers":
        v = rng.integers(-4, 5, n).astype(np.float64) * scale
    else:  # pragma: no cover - validated before
        raise ValueError(elements)
    if min_value is not None or max_value is not None:
        v = np.clip(v, min_value, max_value)
    return v.reshape(tuple(shape))


@_eager(_check_tensors_args)
@st.composite
def tensors(
    draw,
    shape: Sequence[int] | st.SearchStrategy = None,
    *,
    elements: str | st.SearchStrategy[str] = "normal",
    scale: float | st.SearchStrategy[float] = 1.0,
    min_value: float | None = None,
    max_value: float | None = None,
    expand: bool = True,
) -> torch.Tensor:
    """A float64 CPU tensor.

    ``shape`` is a tuple or a strategy of tuples (default ``shapes()``); ``elements`` picks the
    value distribution (see :func:`values`). Values come from a NumPy generator seeded by the draw,
    so an example replays and shrinks (toward seed 0, the shape first). With ``expand``, now and
    then a dim of size > 1 is returned as a stride-0 broadcast of size-1 data (values constant
    along it): the layout FlagGems' linear backward broke on."""
    _validate_elements(elements if isinstance(elements, str) else "normal", min_value, max_value)
    if shape is None:
        shape = shapes()
    shp = tuple(draw(shape)) if isinstance(shape, st.SearchStrategy) else tuple(int(s) for s in shape)
    if any(s < 0 for s in shp):
        raise ValueError(f"shape {shp} has a negative size")
    el = draw(elements) if isinstance(elements, st.SearchStrategy) else elements
    _validate_elements(el, min_value, max_value)
    sc = draw(scale) if isinstance(scale, st.SearchStrategy) else float(scale)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    expand_dim = None
    if expand and el != "separated" and any(s > 1 for s in shp) and draw(st.integers(0, 7)) == 0:
        expand_dim = draw(st.sampled_from([d for d, s in enumerate(shp) if s > 1]))
    if expand_dim is None:
        return torch.from_numpy(values(rng, shp, elements=el, scale=sc, min_value=min_value, max_value=max_value))
    small = list(shp)
    small[expand_dim] = 1
    base = torch.from_numpy(values(rng, small, elements=el, scale=sc, min_value=min_value, max_value=max_value))
    return base.expand(shp)


@_eager(_check_positive)
@st.composite
def broadcastable_shapes(
    draw, *, max_dims: int = 4, max_side: int = 8, max_numel: int = 1 << 14
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Two shapes that broadcast together (dims dropped on the left or set to 1 on either side)."""
    out = draw(shapes(min_dims=0, max_dims=max_dims, max_side=max_side, max_numel=max_numel))
    a, b = list(out), list(out)
    for d in range(len(out)):
        which = draw(st.integers(0, 5))
        if which == 0:
            a[d] = 1
        elif which == 1:
            b[d] = 1
    drop_a = draw(st.integers(0, len(a)))
    drop_b = draw(st.integers(0, len(b))) if drop_a == 0 else 0
    return tuple(a[drop_a:]), tuple(b[drop_b:])


@_eager(_check_matmul_args)
@st.composite
def matmul_shapes(
    draw,
    *,
    batch: bool | None = False,
    max_side: int = 48,
    max_k: int = 1000,
    max_numel: int = 1 << 15,
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Shapes (M, K) @ (K, N), or with ``batch`` (B, M, K) @ (B|1, K, N) with a broadcast batch
    now and then (``batch=None`` draws either). K reaches 1, 17 and ``max_k``."""
    if batch is None:
        batch = draw(st.booleans())
    m = draw(sides(min_side=1, max_side=max_side, large=False))
    n = draw(sides(min_side=1, max_side=max_side, large=False))
    k = draw(st.one_of(st.integers(1, max_side), st.sampled_from((1, 17, 33, max_k))))
    while m * k > max_numel and m > 1:
        m = max(1, m // 2)
    while k * n > max_numel and n > 1:
        n = max(1, n // 2)
    if not batch:
        return (m, k), (k, n)
    b = draw(st.integers(1, 4))
    b_b = draw(st.sampled_from((b, b, 1)))
    b_a = draw(st.sampled_from((b, b, 1))) if b_b == b else b
    return (b_a, m, k), (b_b, k, n)


@dataclass(frozen=True)
class ConvGeometry:
    """A consistent conv2d problem: input (n, c_in, h, w), weight (c_out, c_in/groups, kh, kw)."""

    n: int
    c_in: int
    c_out: int
    h: int
    w: int
    kh: int
    kw: int
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.n, self.c_in, self.h, self.w)

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.c_out, self.c_in // self.groups, self.kh, self.kw)

    @property
    def output_hw(self) -> tuple[int, int]:
        return _out_size(self.h, self.kh, self.stride[0], self.padding[0], self.dilation[0]), _out_size(
            self.w, self.kw, self.stride[1], self.padding[1], self.dilation[1]
        )


def _out_size(size: int, k: int, s: int, p: int, d: int, ceil: bool = False) -> int:
    span = size + 2 * p - d * (k - 1) - 1
    return (-(-span // s) if ceil else span // s) + 1


@_eager(_check_positive)
@st.composite
def conv2d_geometries(
    draw, *, max_batch: int = 4, max_channels: int = 6, max_hw: int = 12, max_kernel: int = 5, groups: bool = True
) -> ConvGeometry:
    """Non-square inputs and kernels, stride with rounding-down output sizes, padding (up to half
    the dilated kernel, as torch allows), dilation and groups; the output is never empty."""
    g = draw(st.sampled_from((1, 1, 2, 3))) if groups else 1
    c_in = g * draw(st.integers(1, max(1, max_channels // g)))
    c_out = g * draw(st.integers(1, max(1, max_channels // g)))
    kh, kw = draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel))
    dh, dw = draw(st.sampled_from((1, 1, 2))), draw(st.sampled_from((1, 1, 2)))
    sh, sw = draw(st.sampled_from((1, 1, 2, 3))), draw(st.sampled_from((1, 1, 2, 3)))
    ph = draw(st.integers(0, dh * (kh - 1) // 2))
    pw = draw(st.integers(0, dw * (kw - 1) // 2))
    min_h = max(1, dh * (kh - 1) + 1 - 2 * ph)
    min_w = max(1, dw * (kw - 1) + 1 - 2 * pw)
    h = draw(st.integers(min_h, max(min_h, max_hw)))
    w = draw(st.integers(min_w, max(min_w, max_hw)))
    n = draw(st.one_of(st.integers(1, max_batch), st.just(17)))
    return ConvGeometry(n, c_in, c_out, h, w, kh, kw, (sh, sw), (ph, pw), (dh, dw), g)


@dataclass(frozen=True)
class PoolGeometry:
    """A consistent max_pool2d problem on an (n, c, h, w) input."""

    n: int
    c: int
    h: int
    w: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    ceil_mode: bool

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.n, self.c, self.h, self.w)

    @property
    def output_hw(self) -> tuple[int, int]:
        return tuple(
            _pool_out(size, k, s, p, d, self.ceil_mode)
            for size, k, s, p, d in zip(
                (self.h, self.w), self.kernel, self.stride, self.padding, self.dilation, strict=True
            )
        )


def _pool_out(size: int, k: int, s: int, p: int, d: int, ceil: bool) -> int:
    out = _out_size(size, k, s, p, d, ceil)
    if ceil and (out - 1) * s >= size + p:  # torch: the last window must start inside the input
        out -= 1
    return out


@_eager(_check_positive)
@st.composite
def pool2d_geometries(
    draw, *, max_batch: int = 3, max_channels: int = 4, max_hw: int = 12, max_kernel: int = 3
) -> PoolGeometry:
    """Kernel, stride (default = kernel, as torch), padding <= kernel/2, dilation, ceil_mode;
    the output is never empty."""
    kh, kw = draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel))
    sh = draw(st.one_of(st.just(kh), st.integers(1, max_kernel)))
    sw = draw(st.one_of(st.just(kw), st.integers(1, max_kernel)))
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    dh, dw = draw(st.sampled_from((1, 1, 2))), draw(st.sampled_from((1, 1, 2)))
    min_h = max(1, dh * (kh - 1) + 1 - 2 * ph)
    min_w = max(1, dw * (kw - 1) + 1 - 2 * pw)
    h = draw(st.integers(min_h, max(min_h, max_hw)))
    w = draw(st.integers(min_w, max(min_w, max_hw)))
    n = draw(st.integers(1, max_batch))
    c = draw(st.one_of(st.integers(1, max_channels), st.just(17)))
    return PoolGeometry(n, c, h, w, (kh, kw), (sh, sw), (ph, pw), (dh, dw), draw(st.booleans()))


@_eager(_check_targets_args)
@st.composite
def class_targets(
    draw,
    shape: Sequence[int] | st.SearchStrategy,
    num_classes: int,
    *,
    ignore_index: int | None = -100,
    p_ignore: float = 0.2,
) -> torch.Tensor:
    """int64 class indices in [0, num_classes) of ``shape``; with ``ignore_index`` set, each
    position is that index with probability about ``p_ignore`` (sometimes all of them)."""
    _check_int("num_classes", num_classes, 1)
    if not 0.0 <= p_ignore <= 1.0:
        raise ValueError(f"p_ignore={p_ignore} must be in [0, 1]")
    shp = tuple(draw(shape)) if isinstance(shape, st.SearchStrategy) else tuple(shape)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    t = rng.integers(0, num_classes, shp)
    if ignore_index is not None and p_ignore > 0:
        p = draw(st.sampled_from((0.0, p_ignore, p_ignore, 1.0)))
        t = np.where(rng.random(shp) < p, ignore_index, t)
    return torch.from_numpy(np.asarray(t, dtype=np.int64))


def _check_rows_args(*, params=0, max_hidden=64, max_rows=300, max_numel=1 << 14, **_):
    _check_int("params", params)
    _check_int("max_hidden", max_hidden, 1)
    _check_int("max_rows", max_rows, 1)
    _check_int("max_numel", max_numel, 1)


@_eager(_check_rows_args)
@st.composite
def rows_with_params(
    draw,
    *,
    params: int = 0,
    max_hidden: int = 64,
    max_rows: int = 300,
    max_numel: int = 1 << 14,
    large: bool = True,
    elements: str | st.SearchStrategy[str] = "normal",
) -> tuple[torch.Tensor, ...]:
    """``(x, *p)``: ``x`` of shape ``(*lead, D)`` with 0 to 2 leading dims, and ``params`` tensors
    of shape ``(D,)`` (a norm's weight and bias, per-feature parameters of the last dim).

    ``D`` is usually in [1, ``max_hidden``], sometimes awkward (not a power of two: 17, 127, 1000)
    and, with ``large``, now and then past 2048. The row count crosses multiples of the usual block
    sizes (16 to 256: 17, 33, 65, 129, 257 rows, up to ``max_rows``), where a partial-sum buffer
    sized with floor drops the last block. ``max_numel`` bounds ``x``'s size (rows shrink first)."""
    d = draw(sides(min_side=1, max_side=max_hidden, awkward=True, large=large))
    rows_cap = max(1, min(max_rows, max_numel // d))
    block_tails = [r for r in (17, 33, 65, 129, 257) if r <= rows_cap]
    tails = [st.sampled_from(block_tails)] if block_tails else []
    n_rows = draw(st.one_of(st.integers(1, min(rows_cap, 8)), *tails))
    if n_rows == 1:
        lead: tuple[int, ...] = draw(st.sampled_from([(), (1,)]))
    elif draw(st.booleans()):
        lead = (n_rows,)
    else:
        first = draw(st.sampled_from([f for f in (1, 2, 3) if n_rows % f == 0]))
        lead = (first, n_rows // first)
    x = draw(tensors((*lead, d), elements=elements))
    ps = tuple(draw(tensors((d,), expand=False)) for _ in range(params))
    return (x, *ps)


def _check_attention_args(*, max_batch=2, max_heads=3, max_seq=64, max_head_dim=64, **_):
    for name, value in (("max_batch", max_batch), ("max_heads", max_heads), ("max_seq", max_seq)):
        _check_int(name, value, 1)
    _check_int("max_head_dim", max_head_dim, 1)


@_eager(_check_attention_args)
@st.composite
def attention_inputs(
    draw, *, max_batch: int = 2, max_heads: int = 3, max_seq: int = 64, max_head_dim: int = 64
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(q, k, v)`` of shape ``(B, H, T, D)``: T and D usually small, sometimes awkward (not powers
    of two: 17, 33, 65 ...) up to ``max_seq`` / ``max_head_dim``, odd head dims included."""
    b = draw(st.integers(1, max_batch))
    h = draw(st.integers(1, max_heads))
    t = draw(sides(min_side=1, max_side=min(max_seq, 9), awkward=True, large=False).filter(lambda n: n <= max_seq))
    d = draw(
        sides(min_side=1, max_side=min(max_head_dim, 9), awkward=True, large=False).filter(lambda n: n <= max_head_dim)
    )
    return tuple(draw(tensors((b, h, t, d))) for _ in range(3))


def directions(rng: np.random.Generator, shape: Sequence[int]) -> np.ndarray:
    """A signed random direction (independent N(0, 1) entries) for directional derivatives."""
    return rng.standard_normal(tuple(shape))


def _check_rotary_args(*, max_batch=2, max_heads=3, max_seq=64, max_head_dim=64, base=10000.0, max_numel=1 << 14, **_):
    for name, value in (("max_batch", max_batch), ("max_heads", max_heads), ("max_seq", max_seq)):
        _check_int(name, value, 1)
    _check_int("max_head_dim", max_head_dim, 2)
    _check_int("max_numel", max_numel, 1)
    if isinstance(base, bool) or not isinstance(base, int | float) or not base > 1:
        raise ValueError(f"base must be a number > 1, got {base!r}")


def rotary_tables(positions: np.ndarray, head_dim: int, *, base: float = 10000.0) -> tuple[np.ndarray, np.ndarray]:
    """Float64 ``(cos, sin)`` tables of shape ``(len(positions), head_dim)`` in the half-rotation
    layout: angle[t, i] = positions[t] * base^(-2 (i mod D/2) / D), the two halves equal."""
    if head_dim % 2:
        raise ValueError(f"head_dim must be even for the half-rotation layout, got {head_dim}")
    inv_freq = base ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)  # (D/2,)
    angles = np.outer(np.asarray(positions, dtype=np.float64), inv_freq)  # (T, D/2)
    angles = np.concatenate([angles, angles], axis=-1)  # (T, D)
    return np.cos(angles), np.sin(angles)


@_eager(_check_rotary_args)
@st.composite
def rotary_inputs(
    draw,
    *,
    max_batch: int = 2,
    max_heads: int = 3,
    max_seq: int = 64,
    max_head_dim: int = 64,
    base: float = 10000.0,
    max_numel: int = 1 << 14,
    large: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x, cos, sin)`` for a rotary position embedding in the half-rotation layout (Llama-style
    models): ``x`` of shape ``(B, H, T, D)``, ``cos`` and ``sin`` of shape ``(T, D)``, genuine
    tables of positions ``start .. start + T - 1`` (``start`` is 0, or past 0 as when decoding
    with a KV cache) at frequencies ``base^(-2i/D)`` (see :func:`rotary_tables`).

    ``D`` is even (the layout needs halves), usually small, sometimes with an odd or awkward half
    (34, 66, 130: D/2 = 17, 33, 65) up to ``max_head_dim``; ``T`` is usually small, sometimes
    awkward up to ``max_seq`` and, with ``large``, now and then past 2048 whatever ``max_seq``
    (batch and heads shrink first to fit ``max_numel`` elements of ``x``, then ``D``, then ``T``)."""
    half = draw(
        sides(min_side=1, max_side=max(1, min(max_head_dim // 2, 8)), awkward=True, large=False).filter(
            lambda n: 2 * n <= max_head_dim
        )
    )
    d = 2 * half
    # 1 in 16 past 2048 (with ``large``), 3 in 16 awkward; the rare cases sit mid-range, where
    # Hypothesis does not favour them as it favours the ends
    kind = draw(st.integers(0, 15))
    awkward_seq = [n for n in AWKWARD_SIZES if n <= max_seq]
    if large and kind == 8:
        t = draw(st.sampled_from(LARGE_SIZES))
    elif 9 <= kind <= 11 and awkward_seq:
        t = draw(st.sampled_from(awkward_seq))
    else:
        t = draw(st.integers(1, min(max_seq, 9)))
    b = draw(st.integers(1, max_batch))
    h = draw(st.integers(1, max_heads))
    while b * h * t * d > max_numel and b * h > 1:
        if h > 1:
            h = max(1, h // 2)
        else:
            b = max(1, b // 2)
    # then the head dim (a T past 2048 stays past it), then T
    d = max(2, min(d, 2 * (max_numel // (2 * t))))
    while t * d > max_numel and t > 1:
        t = max(1, t // 2)
    start = draw(st.sampled_from((0, 0, 0, 1, 4093)))
    cos, sin = rotary_tables(np.arange(start, start + t), d, base=base)
    x = draw(tensors((b, h, t, d)))
    return x, torch.from_numpy(cos), torch.from_numpy(sin)
