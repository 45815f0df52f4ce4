"""Catalog entry for conv2d."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import strategies as st

import reference.conv
from gradcheck import strategies as gs
from gradcheck.ops import OpSpec
from gradcheck.specs._common import as_arg

__all__ = ["SPECS"]


# ---------------------------------------------------------------------------------------------
# conv2d
# ---------------------------------------------------------------------------------------------


def _conv_geometries() -> st.SearchStrategy[gs.ConvGeometry]:
    """Mostly the blitz regime (up to 6 channels, the flat-K kernels), sometimes 16-40 channels
    per group on small images (the taps-outer kernels, a K block of channels)."""
    few = gs.conv2d_geometries(max_batch=4, max_channels=6, max_hw=12, max_kernel=5)
    many = gs.conv2d_geometries(max_batch=2, max_channels=40, max_hw=6, max_kernel=3, groups=False)
    return st.one_of(few, few, few, many)


@st.composite
def _conv_inputs(draw, dtype: torch.dtype):
    geo = draw(_conv_geometries())
    x = draw(gs.tensors(geo.input_shape, elements="normal"))
    w = draw(gs.tensors(geo.weight_shape, elements="normal"))
    b = draw(st.one_of(st.none(), gs.tensors((geo.c_out,), elements="normal")))
    padding: object = as_arg(geo.padding, draw)
    if geo.stride == (1, 1) and draw(st.integers(0, 7)) == 0:
        padding = "same"  # torch's asymmetric padding when the dilated kernel span is even
    elif geo.padding == (0, 0) and draw(st.integers(0, 7)) == 0:
        padding = "valid"
    return x, w, b, as_arg(geo.stride, draw), padding, as_arg(geo.dilation, draw), geo.groups


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (v[0], v[-1])


def _conv_depth(x, w, b, stride, padding, dilation, groups) -> int:
    """Longest sum: the forward's C/G * KH * KW, the input gradient's OC/G * KH * KW, or the
    weight and bias gradients' N * OH * OW."""
    (sh, sw), (dh, dw) = _pair(stride), _pair(dilation)
    kh, kw = w.shape[2], w.shape[3]
    if padding == "same":
        out_h, out_w = x.shape[-2], x.shape[-1]
    else:
        ph, pw = (0, 0) if padding == "valid" else _pair(padding)
        out_h = (x.shape[-2] + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        out_w = (x.shape[-1] + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    batch = x.shape[0] if x.ndim == 4 else 1
    return max(w.shape[1] * kh * kw, (w.shape[0] // groups) * kh * kw, batch * out_h * out_w)



SPECS = [
    OpSpec(
        name="conv2d",
        reference=reference.conv.conv2d,
        reference_vjp=reference.conv.conv2d_vjp,
        inputs=_conv_inputs,
        depth=_conv_depth,
        multilinear=True,
        torch_fn=F.conv2d,
        tags=("dot",),
        doc="2-D cross-correlation (NCHW), stride/padding/dilation/groups; implicit-GEMM forward and backward",
    ),
]
