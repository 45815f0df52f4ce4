"""layer_norm, rms_norm and group_norm in NumPy float64: forward and VJP, with torch.nn.functional's signatures."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "group_norm",
    "group_norm_vjp",
    "layer_norm",
    "layer_norm_vjp",
    "rms_norm",
    "rms_norm_vjp",
]


def _f64(a) -> np.ndarray | None:
    return None if a is None else np.asarray(a, dtype=np.float64)


def _axes(x: np.ndarray, normalized_shape: Sequence[int] | int) -> tuple[int, ...]:
    """The trailing axes of ``x`` that ``normalized_shape`` names (checked against x's shape)."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    k = len(shape)
    if k == 0 or x.ndim < k or tuple(x.shape[x.ndim - k :]) != shape:
        raise ValueError(f"normalized_shape {shape} does not match the trailing dims of an input of shape {x.shape}")
    return tuple(range(x.ndim - k, x.ndim))


def _standardized(x: np.ndarray, axes: tuple[int, ...], eps: float) -> tuple[np.ndarray, np.ndarray]:
    """(xhat, rstd): (x - mean) * rstd with rstd = 1 / sqrt(var + eps), the biased variance taken
    in two passes (mean first, then the mean of squared deviations) over ``axes``."""
    if x.size == 0:
        return x.copy(), np.zeros([1 if a in axes else s for a, s in enumerate(x.shape)])
    mean = x.mean(axis=axes, keepdims=True)
    d = x - mean
    rstd = 1.0 / np.sqrt((d * d).mean(axis=axes, keepdims=True) + eps)
    return d * rstd, rstd


def _lead_sum(t: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """``t`` summed over every axis not in ``axes`` (the rows): the shape of a weight."""
    return t.sum(axis=tuple(a for a in range(t.ndim) if a not in axes))


def _standardized_vjp(xhat: np.ndarray, rstd: np.ndarray, wg: np.ndarray, axes, *, centred: bool) -> np.ndarray:
    """dx of xhat = (x - mean) * rstd (``centred``; else x * rstd, RMS) against wg = g * weight:
    rstd * (wg - mean(wg) - xhat * mean(wg * xhat)), without the mean(wg) term for RMS."""
    if xhat.size == 0:
        return np.zeros(xhat.shape)
    inner = wg - xhat * (wg * xhat).mean(axis=axes, keepdims=True)
    if centred:
        inner = inner - wg.mean(axis=axes, keepdims=True)
    return rstd * inner


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5) -> np.ndarray:
    """(x - mean) / sqrt(var + eps) * weight + bias over the trailing ``normalized_shape`` dims
    (biased variance; weight and bias optional, each of shape ``normalized_shape``)."""
    x = _f64(x)
    axes = _axes(x, normalized_shape)
    y, _ = _standardized(x, axes, float(eps))
    if weight is not None:
        y = y * _f64(weight)
    if bias is not None:
        y = y + _f64(bias)
    return y


def layer_norm_vjp(x, normalized_shape, weight, bias, eps, g):
    """(dx, None, dweight, dbias, None): dx = rstd (wg - mean(wg) - xhat mean(wg xhat)) with
    wg = g * weight; dweight = sum over rows of g * xhat; dbias = sum over rows of g."""
    x, g = _f64(x), _f64(g)
    axes = _axes(x, normalized_shape)
    xhat, rstd = _standardized(x, axes, float(eps))
    wg = g if weight is None else g * _f64(weight)
    dx = _standardized_vjp(xhat, rstd, wg, axes, centred=True)
    dw = None if weight is None else _lead_sum(g * xhat, axes)
    db = None if bias is None else _lead_sum(g, axes)
    return dx, None, dw, db, None


def _rms_parts(x: np.ndarray, axes: tuple[int, ...], eps: float) -> tuple[np.ndarray, np.ndarray]:
    """(xhat, r): x * r with r = 1 / sqrt(mean(x^2) + eps) over ``axes``."""
    if x.size == 0:
        return x.copy(), np.zeros([1 if a in axes else s for a, s in enumerate(x.shape)])
    r = 1.0 / np.sqrt((x * x).mean(axis=axes, keepdims=True) + eps)
    return x * r, r


def rms_norm(x, normalized_shape, weight=None, eps=1e-6) -> np.ndarray:
    """x / sqrt(mean(x^2) + eps) * weight over the trailing ``normalized_shape`` dims. ``eps`` must be
    given (torch's default, None, means the input dtype's machine epsilon, which a float64
    reference cannot know)."""
    if eps is None:
        raise ValueError("rms_norm's reference needs an explicit eps (torch's None depends on the input dtype)")
    x = _f64(x)
    axes = _axes(x, normalized_shape)
    y, _ = _rms_parts(x, axes, float(eps))
    return y if weight is None else y * _f64(weight)


def rms_norm_vjp(x, normalized_shape, weight, eps, g):
    """(dx, None, dweight, None): dx = r (wg - xhat mean(wg xhat)) with wg = g * weight;
    dweight = sum over rows of g * xhat."""
    if eps is None:
        raise ValueError("rms_norm's reference needs an explicit eps")
    x, g = _f64(x), _f64(g)
    axes = _axes(x, normalized_shape)
    xhat, r = _rms_parts(x, axes, float(eps))
    wg = g if weight is None else g * _f64(weight)
    dx = _standardized_vjp(xhat, r, wg, axes, centred=False)
    dw = None if weight is None else _lead_sum(g * xhat, axes)
    return dx, None, dw, None


def _groups(x: np.ndarray, num_groups: int) -> np.ndarray:
    """(N, C, *spatial) as (N, G, C/G * prod(spatial)): one row per (sample, group)."""
    n, c = x.shape[0], x.shape[1]
    if num_groups < 1 or c % num_groups:
        raise ValueError(f"num_groups={num_groups} must divide the {c} channels")
    return x.reshape(n, num_groups, (c // num_groups) * int(np.prod(x.shape[2:])))


def _per_channel(p: np.ndarray, ndim: int) -> np.ndarray:
    """A (C,) parameter shaped to broadcast against (N, C, *spatial)."""
    return p.reshape((1, -1) + (1,) * (ndim - 2))


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5) -> np.ndarray:
    """Each sample's channels split into ``num_groups`` groups, each standardized over its channels
    and spatial positions (biased variance), then a per-channel weight and bias (each optional)."""
    x = _f64(x)
    xhat, _ = _standardized(_groups(x, num_groups), (2,), float(eps))
    y = xhat.reshape(x.shape)
    if weight is not None:
        y = y * _per_channel(_f64(weight), x.ndim)
    if bias is not None:
        y = y + _per_channel(_f64(bias), x.ndim)
    return y


def group_norm_vjp(x, num_groups, weight, bias, eps, g):
    """(dx, None, dweight, dbias, None): layer norm's dx per group (wg = g * weight[channel]);
    dweight[c] = sum over samples and positions of g * xhat, dbias[c] = sum of g."""
    x, g = _f64(x), _f64(g)
    xhat_g, rstd = _standardized(_groups(x, num_groups), (2,), float(eps))
    wg = g if weight is None else g * _per_channel(_f64(weight), x.ndim)
    dx = _standardized_vjp(xhat_g, rstd, _groups(wg, num_groups), (2,), centred=True).reshape(x.shape)
    xhat = xhat_g.reshape(x.shape)
    spatial = tuple(a for a in range(x.ndim) if a != 1)
    dw = None if weight is None else (g * xhat).sum(axis=spatial)
    db = None if bias is None else g.sum(axis=spatial)
    return dx, None, dw, db, None
