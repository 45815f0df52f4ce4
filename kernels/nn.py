"""torch.nn-compatible modules whose forward (and so backward) runs on our Triton kernels.

Each module has torch.nn's constructor signature, parameter names, shapes and initialisation
(``reset_parameters`` consumes the random stream exactly as torch.nn does), so under the same seed
both build identical weights and a ``state_dict`` loads into either one. Only the compute differs:
conv2d, max_pool2d, linear (+ fused relu), relu and cross_entropy come from ``kernels.*``.
Flatten is a view (no arithmetic), as in torch.

The blitz classifier built from these modules is ``kernels.blitz.net.BlitzNet``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from kernels import _runtime as rt
from kernels._nchw import pair
from kernels._reductions import REDUCTIONS, legacy_reduction
from kernels.functional import conv2d, cross_entropy, linear, linear_relu, max_pool2d, relu

__all__ = [
    "Conv2d",
    "CrossEntropyLoss",
    "Flatten",
    "Linear",
    "MaxPool2d",
    "ReLU",
]


def _check_input(module: nn.Module, x: object, ndims: Sequence[int], what: str) -> torch.Tensor:
    """Common input checks: a floating tensor of an accepted rank, with the parameters' dtype and device."""
    name = type(module).__name__
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: input must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in ndims:
        raise ValueError(f"{name}: expected {what}, got an input of shape {tuple(x.shape)}")
    rt.check_float(x, f"{name} input")
    param = next(module.parameters(), None)
    if param is not None:
        if x.dtype != param.dtype:
            raise TypeError(
                f"{name}: input has dtype {str(x.dtype).removeprefix('torch.')} but the parameters are "
                f"{str(param.dtype).removeprefix('torch.')}; cast one of them (module.to(dtype) or input.to(dtype))"
            )
        if x.device != param.device:
            raise ValueError(f"{name}: input is on {x.device} but the parameters are on {param.device}")
    return x


class Linear(nn.Module):
    """``torch.nn.Linear`` on our matmul kernel: ``y = x @ weight.T + bias``."""

    __constants__ = ("in_features", "out_features")

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.in_features = rt.check_positive_int(in_features, "in_features")
        self.out_features = rt.check_positive_int(out_features, "out_features")
        self.weight = nn.Parameter(torch.empty((out_features, in_features), **factory))  # (out, in)
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features, **factory))  # (out,)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # torch.nn.Linear's rule, same order of draws: kaiming-uniform with a=sqrt(5), i.e. U(-1/sqrt(fan_in),
        # 1/sqrt(fan_in)) for the weight, then the bias from the same bound.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features)
            nn.init.uniform_(self.bias, -bound, bound)

    def _check(self, x: object) -> torch.Tensor:
        x = _check_input(self, x, range(1, 64), "an input of shape (*, in_features)")
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"Linear: input of shape {tuple(x.shape)} has {x.shape[-1]} features in its last dimension; "
                f"this layer takes in_features={self.in_features}"
            )
        return x

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return linear(self._check(input), self.weight, self.bias)

    def forward_relu(self, input: torch.Tensor) -> torch.Tensor:
        """``relu(self(input))`` in one fused kernel (the bias add and relu happen in the matmul's epilogue)."""
        return linear_relu(self._check(input), self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Conv2d(nn.Module):
    """``torch.nn.Conv2d`` on our conv2d kernel (``padding_mode='zeros'`` only)."""

    __constants__ = ("stride", "padding", "dilation", "groups", "padding_mode", "in_channels", "out_channels")

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: str | int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.in_channels = rt.check_positive_int(in_channels, "in_channels")
        self.out_channels = rt.check_positive_int(out_channels, "out_channels")
        self.groups = rt.check_positive_int(groups, "groups")
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"in_channels ({in_channels}) and out_channels ({out_channels}) must both be divisible by "
                f"groups ({groups})"
            )
        self.kernel_size = pair(kernel_size, "kernel_size", minimum=1)
        self.stride = pair(stride, "stride", minimum=1)
        self.dilation = pair(dilation, "dilation", minimum=1)
        if padding_mode != "zeros":
            if padding_mode in ("reflect", "replicate", "circular"):
                raise NotImplementedError(f"padding_mode={padding_mode!r} is not supported; only 'zeros'")
            raise ValueError(
                f"padding_mode must be one of 'zeros', 'reflect', 'replicate', 'circular', got {padding_mode!r}"
            )
        self.padding_mode = padding_mode
        self.padding = self._resolve_padding(padding)
        self.weight = nn.Parameter(
            torch.empty((out_channels, in_channels // groups, *self.kernel_size), **factory)
        )  # (C_out, C_in / groups, kH, kW)
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels, **factory))  # (C_out,)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def _resolve_padding(self, padding: str | int | tuple[int, int]) -> tuple[int, int]:
        """torch accepts 'valid' and 'same' too; 'same' needs a symmetric padding here (our kernel pads both sides
        equally), which holds when every dilation * (kernel - 1) is even."""
        if isinstance(padding, str):
            if padding == "valid":
                return (0, 0)
            if padding == "same":
                if self.stride != (1, 1):
                    raise ValueError("padding='same' is not supported for strided convolutions")
                total = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size, strict=True)]
                if any(t % 2 for t in total):
                    raise NotImplementedError(
                        f"padding='same' with kernel_size={self.kernel_size} and dilation={self.dilation} needs "
                        "asymmetric padding, which this module does not support; pass an explicit padding"
                    )
                return (total[0] // 2, total[1] // 2)
            raise ValueError(f"padding must be 'valid', 'same', an int or a pair of ints, got {padding!r}")
        return pair(padding, "padding", minimum=0)

    def reset_parameters(self) -> None:
        # torch.nn.Conv2d's rule (_ConvNd.reset_parameters), same order of draws as torch.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.kernel_size[0] * self.kernel_size[1]
            if fan_in != 0:
                bound = 1 / math.sqrt(fan_in)
                nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        x = _check_input(self, input, (3, 4), "a (N, C, H, W) or unbatched (C, H, W) input")
        unbatched = x.dim() == 3
        if unbatched:
            x = x.unsqueeze(0)  # (1, C, H, W), a view
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"Conv2d: input of shape {tuple(input.shape)} has {x.shape[1]} channels; "
                f"this layer takes in_channels={self.in_channels}"
            )
        for axis, size in enumerate(x.shape[2:]):
            span = self.dilation[axis] * (self.kernel_size[axis] - 1) + 1
            if size + 2 * self.padding[axis] < span:
                raise ValueError(
                    f"Conv2d: input of shape {tuple(input.shape)} is smaller than the kernel: padded "
                    f"{'HW'[axis]} = {size + 2 * self.padding[axis]} < dilated kernel size {span}"
                )
        y = conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        return y.squeeze(0) if unbatched else y

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class MaxPool2d(nn.Module):
    """``torch.nn.MaxPool2d`` on our max-pool kernel."""

    __constants__ = ("kernel_size", "stride", "padding", "dilation", "return_indices", "ceil_mode")

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        return_indices: bool = False,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__()
        kernel = pair(kernel_size, "kernel_size", minimum=1)
        pair(stride if stride is not None else kernel_size, "stride", minimum=1)
        pad = pair(padding, "padding", minimum=0)
        dil = pair(dilation, "dilation", minimum=1)
        # torch's rule: padding at most half of the effective (dilated) kernel size.
        if any(p > (d * (k - 1) + 1) // 2 for p, d, k in zip(pad, dil, kernel, strict=True)):
            raise ValueError(
                f"padding should be at most half of the effective kernel size, got padding={padding!r} for "
                f"kernel_size={kernel_size!r} and dilation={dilation!r}"
            )
        # Stored as given, like torch (its repr and state round-trip show the user's values).
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.dilation = dilation
        self.return_indices = return_indices
        self.ceil_mode = ceil_mode

    def forward(self, input: torch.Tensor):
        x = _check_input(self, input, (3, 4), "a (N, C, H, W) or unbatched (C, H, W) input")
        unbatched = x.dim() == 3
        if unbatched:
            x = x.unsqueeze(0)  # (1, C, H, W), a view
        out = max_pool2d(
            x,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            ceil_mode=self.ceil_mode,
            return_indices=self.return_indices,
        )
        if not unbatched:
            return out
        return tuple(t.squeeze(0) for t in out) if self.return_indices else out.squeeze(0)

    def extra_repr(self) -> str:
        return (
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, ceil_mode={self.ceil_mode}"
        )


class ReLU(nn.Module):
    """``torch.nn.ReLU`` on our relu kernel (out of place only)."""

    __constants__ = ("inplace",)

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        if inplace:
            raise NotImplementedError("ReLU(inplace=True) is not supported: it would overwrite a tensor autograd needs")
        self.inplace = False

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not isinstance(input, torch.Tensor):
            raise TypeError(f"ReLU: input must be a torch.Tensor, got {type(input).__name__}")
        return relu(input)


class Flatten(nn.Module):
    """``torch.nn.Flatten``: merges dims ``start_dim..end_dim`` (a view when the layout allows, as in torch)."""

    __constants__ = ("start_dim", "end_dim")

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = start_dim
        self.end_dim = end_dim

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not isinstance(input, torch.Tensor):
            raise TypeError(f"Flatten: input must be a torch.Tensor, got {type(input).__name__}")
        start = rt.canonical_dim(self.start_dim, input.dim(), "start_dim")
        end = rt.canonical_dim(self.end_dim, input.dim(), "end_dim")
        if start > end:
            raise ValueError(
                f"Flatten: start_dim={self.start_dim} comes after end_dim={self.end_dim} for an input of "
                f"{input.dim()} dimensions"
            )
        return input.flatten(start, end)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


_REDUCTIONS = tuple(REDUCTIONS)


class CrossEntropyLoss(nn.Module):
    """``torch.nn.CrossEntropyLoss`` on our cross-entropy kernel. ``weight`` is a buffer, as in torch
    (absent from the state_dict when None)."""

    __constants__ = ("ignore_index", "reduction", "label_smoothing")

    def __init__(
        self,
        weight: torch.Tensor | None = None,
        size_average=None,
        ignore_index: int = -100,
        reduce=None,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        reduction = legacy_reduction(size_average, reduce, reduction)
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {', '.join(_REDUCTIONS)}, got {reduction!r}")
        if not 0.0 <= float(label_smoothing) <= 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
        if weight is not None and (not isinstance(weight, torch.Tensor) or weight.dim() != 1):
            raise ValueError("weight must be a 1-D tensor with one entry per class")
        self.register_buffer("weight", weight)
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.label_smoothing = float(label_smoothing)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not isinstance(input, torch.Tensor) or not isinstance(target, torch.Tensor):
            raise TypeError("CrossEntropyLoss: input and target must be torch.Tensors")
        if input.dim() == 0:
            raise ValueError("CrossEntropyLoss: expected (N, C) or (C,) logits, got a 0-d tensor")
        rt.check_float(input, "CrossEntropyLoss input")
        class_dim = 0 if input.dim() == 1 else 1
        if target.is_floating_point():
            if target.shape != input.shape:
                raise ValueError(
                    f"CrossEntropyLoss: class-probability target of shape {tuple(target.shape)} must match the "
                    f"input's shape {tuple(input.shape)}"
                )
        else:
            expected = input.shape[:class_dim] + input.shape[class_dim + 1 :]
            if target.shape != expected:
                raise ValueError(
                    f"CrossEntropyLoss: class-index target of shape {tuple(target.shape)} does not fit logits of "
                    f"shape {tuple(input.shape)}; expected {tuple(expected)}"
                )
        if self.weight is not None and self.weight.shape[0] != input.shape[class_dim]:
            raise ValueError(
                f"CrossEntropyLoss: weight has {self.weight.shape[0]} entries for {input.shape[class_dim]} classes"
            )
        return cross_entropy(
            input,
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
        )

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, ignore_index={self.ignore_index}, label_smoothing={self.label_smoothing}"

