"""One drawn example: its arguments as the implementation and the reference see them, where they
are placed, and what each pass of the verification found (:class:`Example`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from hypothesis import strategies as st

from gradcheck import layouts as lay
from gradcheck.config import Config
from gradcheck.report import Report

__all__ = ["Arg", "Example", "describe", "draw_grad_output", "place_args", "prepare_args", "values_of"]

#: Small tensors are printed whole in a failure report.
PRINT_MAX = 32


@dataclass(frozen=True)
class Arg:
    """One positional argument: a float tensor (cast), an integer tensor, or a plain value."""

    kind: str  # float | int | value
    value: Any  # as drawn
    seen: torch.Tensor | None = None  # float: cast to the dtype and back to float64 (CPU); int: as is
    array: Any = None  # what the reference receives


def prepare_args(drawn: tuple, dtype: torch.dtype) -> list[Arg]:
    """The drawn arguments as an implementation at ``dtype`` sees them (float tensors rounded to it)."""
    out = []
    for a in drawn:
        if isinstance(a, torch.Tensor) and a.is_floating_point():
            seen = a.detach().to(dtype).to(torch.float64).cpu()
            if 0 in a.stride():  # keep the broadcast structure (values constant along stride-0 dims)
                seen = seen.expand(a.shape) if seen.stride() == a.stride() else seen
            out.append(Arg("float", a, seen, seen.numpy().copy()))
        elif isinstance(a, torch.Tensor):
            out.append(Arg("int", a, a.detach().cpu(), a.detach().cpu().numpy().copy()))
        else:
            out.append(Arg("value", a, None, a))
    return out


@dataclass(kw_only=True)
class Example:
    """The state of one example as the checks go: set by the passes of ``run_example`` (or by
    ``check_gradients``), read by the checks."""

    args: list[Arg]
    arrays: list[Any]  # what the reference receives, one per argument
    report: Report  # where the checks record (shared by every example of the verification)
    context: str = ""  # shapes, strides and small values, for a failure report
    layouts: dict[int, lay.Layout] = field(default_factory=dict)  # per tensor argument
    ref_out: list[np.ndarray] | None = None  # the reference forward (or the implementation at float64)
    outs: tuple = ()  # the implementation's outputs, latest pass
    float_outs: list[int] = field(default_factory=list)  # positions of the floating outputs
    g_seen: dict[int, torch.Tensor] = field(default_factory=dict)  # grad_output per float output, float64 as cast
    g_layouts: dict[int, lay.Layout] = field(default_factory=dict)  # layout per grad_output
    g_arrays: list[np.ndarray | None] | None = None  # grad_outputs as the reference VJP receives them
    ref_grads: Sequence[Any] | None = None  # the reference VJP, one per argument (None: no gradient)
    diff: list[int] = field(default_factory=list)  # positions of the differentiable arguments
    grads: tuple | None = None  # the implementation's gradients for ``diff``
    grad_mags: list[np.ndarray] | None = None  # sum of |terms| per gradient element, where known
    sensitivities: dict[str, Any] = field(default_factory=dict)  # "forward"/"backward": measured when needed
    op_calls: dict[str, Any] = field(default_factory=dict)  # custom op name -> its recorded call (an OpCall)
    opcheck_done: dict[str, set[str]] = field(default_factory=dict)  # custom op -> opcheck tests run on it
    opcheck_skipped: set[str] = field(default_factory=set)  # custom ops past their opcheck budget
    opcheck_counted: bool = False  # the 'opcheck' statistics have this example


def _expanded_like(seen: torch.Tensor, drawn: torch.Tensor) -> torch.Tensor:
    """``seen`` with the stride-0 dims of ``drawn`` (so the layout keeps them expanded)."""
    if 0 not in drawn.stride() or seen.numel() == 0:
        return seen
    index = tuple(
        slice(0, 1) if (st_ == 0 and s > 1) else slice(None) for s, st_ in zip(drawn.shape, drawn.stride(), strict=True)
    )
    return seen[index].expand(drawn.shape)


def place_args(cfg: Config, ex: Example, *, diff: Sequence[int] | None, sentinel: bool) -> list[Any]:
    """Every tensor argument placed in a fresh poisoned buffer at its layout (plain values as they
    are); the arguments in ``diff`` require grad."""
    placed: list[Any] = []
    for i, a in enumerate(ex.args):
        if a.kind == "value":
            placed.append(a.value)
            continue
        # a layout precondition ("contiguous") also means materialized: no stride-0 dims
        restricted = i in cfg.layouts and "contiguous" in cfg.layouts[i] and len(cfg.layouts[i]) == 1
        values = _expanded_like(a.seen, a.value) if a.kind == "float" and not restricted else a.seen.contiguous()
        placed.append(
            lay.place(
                values,
                dtype=cfg.dtype if a.kind == "float" else a.seen.dtype,
                device=cfg.device,
                layout=ex.layouts[i],
                sentinel=sentinel,
                requires_grad=bool(diff) and i in diff,
            )
        )
    return placed


def values_of(placed: Sequence[Any]) -> list[Any]:
    """The arguments to call the implementation with: the placed tensors and the plain values."""
    return [p.tensor if isinstance(p, lay.Placed) else p for p in placed]


def describe(ex: Example, placed: Sequence[Any], g_placed: dict[int, lay.Placed] | None = None) -> str:
    """The context lines of a failure report: each argument's shape, strides and layout (values
    too when small), each grad_output's."""
    lines = []
    for i, (a, p) in enumerate(zip(ex.args, placed, strict=True)):
        if isinstance(p, lay.Placed):
            line = f"  arg{i}: {p.describe()}"
            if a.seen.numel() <= PRINT_MAX:
                line += f" = {np.array2string(a.seen.numpy(), precision=6, separator=', ')}".replace("\n", " ")
            lines.append(line)
        else:
            lines.append(f"  arg{i}: {p!r}")
    for j, p in (g_placed or {}).items():
        lines.append(f"  grad_output{j}: {p.describe()}")
    return "\n".join(lines)


def draw_grad_output(data: st.DataObject, *, dtype: torch.dtype, shape: tuple[int, ...], j: int) -> torch.Tensor:
    """A signed random grad_output for output ``j`` as the implementation sees it (cast to
    ``dtype``, as float64), sometimes expanded along one dim (stride 0)."""
    seed = data.draw(st.integers(0, 2**32 - 1), label=f"grad_output{j} seed")
    rng = np.random.default_rng(seed)
    expand = [d for d, s in enumerate(shape) if s > 1]
    dim = (
        data.draw(st.sampled_from([None, None, None, *expand]), label=f"grad_output{j} stride-0 dim")
        if expand
        else None
    )
    small = list(shape)
    if dim is not None:
        small[dim] = 1
    g = torch.from_numpy(rng.standard_normal(small)).to(dtype).to(torch.float64)
    return g.expand(shape) if dim is not None else g
