"""``kernels.functional`` is the one import for every op we have a kernel for, under torch's names."""

import inspect

import torch
import torch.nn.functional as F

import kernels.functional as ours
from kernels.registry import IMPLEMENTATIONS

#: registered under a catalog name whose public function lives elsewhere (an optimizer step)
_NOT_FUNCTIONAL = {"sgd"}


def test_every_registered_kernel_is_exported():
    missing = sorted(set(IMPLEMENTATIONS) - _NOT_FUNCTIONAL - set(ours.__all__))
    assert not missing, f"kernels.functional lacks {missing}"
    for name in ours.__all__:
        assert callable(getattr(ours, name)), name


def _torch_params(name: str) -> list[str] | None:
    """Public parameter names of torch's function of that name, where Python can read them
    (builtins such as torch.sum have no signature)."""
    for module in (F, torch):
        fn = getattr(module, name, None)
        if fn is None:
            continue
        try:
            params = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError):
            return None
        if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
            return None  # a dispatching wrapper (max_pool2d's return_indices)
        return [p.name for p in params if not p.name.startswith("_")]  # _stacklevel
    return None


def test_signatures_follow_torch_where_torch_has_the_op():
    """A call written for torch works unchanged: our leading parameters are torch's, in order."""
    checked = 0
    for name in ours.__all__:
        theirs = _torch_params(name)
        if theirs is None:
            continue
        mine = list(inspect.signature(getattr(ours, name)).parameters)
        assert mine == theirs[: len(mine)], f"{name}: ours {mine}, torch {theirs}"
        checked += 1
    assert checked >= 8, checked  # F's Python-level functions: layer_norm, group_norm, embedding, ...
