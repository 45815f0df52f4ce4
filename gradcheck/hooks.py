"""What the engine needs from the environment, as a parameter and hooks: the default device, and poisoned allocation.

Unwritten outputs must show in any implementation's result. torch's deterministic mode makes
``torch.empty*`` return NaN-filled memory (``torch.utils.deterministic.fill_uninitialized_memory``),
which :func:`poisoned` switches on around every call of the implementation: that covers every
implementation that allocates through torch. A library with its own allocator (a pool, a
``kernels.empty`` that skips torch's fill) plugs in a *poison hook*: a callable
``hook(fill) -> context manager`` that, while the context is active, fills every new allocation
with ``fill`` (NaN on the first pass, a huge finite sentinel on the rerun, since ``max``,
``where`` and comparisons can swallow a NaN).

A hook reaches the engine in one of two ways, never by the engine importing the library:

- :func:`register_poison_hook` (also usable as a decorator), undone by :func:`unregister_poison_hook`;
- the entry-point group ``gradcheck.poison`` in the library's packaging metadata, e.g.
  ``[project.entry-points."gradcheck.poison"] kernels = "kernels._runtime:allocation_fill"``. Such a
  hook is used only once its module has been imported by someone else: an allocator whose module
  is not imported is not in use, and loading it here would import it (with whatever that does,
  such as switching on the Triton interpreter).
"""

from __future__ import annotations

import contextlib
import functools
import sys
import warnings
from collections.abc import Callable, Iterator
from importlib.metadata import EntryPoint, entry_points

import torch

__all__ = [
    "POISON_ENTRY_POINT_GROUP",
    "PoisonHook",
    "default_device",
    "poison_hooks",
    "poisoned",
    "register_poison_hook",
    "unregister_poison_hook",
]

#: The entry-point group in which a library advertises its allocator's poison hook.
POISON_ENTRY_POINT_GROUP = "gradcheck.poison"

#: ``hook(fill)`` returns a context manager; while it is active, new allocations are filled with ``fill``.
PoisonHook = Callable[[float], contextlib.AbstractContextManager]

_registered: list[PoisonHook] = []
_loaded: dict[tuple[str, str], PoisonHook] = {}  # (entry-point name, value) -> the loaded hook


def default_device() -> torch.device:
    """The device ``verify(..., device=None)`` runs the implementation on: the current CUDA device
    when ``torch.cuda.is_available()``, else the CPU. Pass ``device=`` for anything else (a CPU-only
    implementation on a CUDA machine, a kernel running under an interpreter on CPU tensors)."""
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def register_poison_hook(hook: PoisonHook) -> PoisonHook:
    """Enter ``hook(fill)`` around every call of an implementation under verification; returns
    ``hook``, so this works as a decorator. Registering the same hook twice registers it once."""
    if not callable(hook):
        raise TypeError(f"a poison hook must be callable (fill -> context manager), got {type(hook).__name__}")
    if hook not in _registered:
        _registered.append(hook)
    return hook


def unregister_poison_hook(hook: PoisonHook) -> None:
    """Stop entering ``hook``; a hook that is not registered is ignored (as ``atexit.unregister`` does)."""
    with contextlib.suppress(ValueError):
        _registered.remove(hook)


@functools.cache
def _advertised() -> tuple[EntryPoint, ...]:
    """The entry points of the ``gradcheck.poison`` group, discovered once per process."""
    return tuple(entry_points(group=POISON_ENTRY_POINT_GROUP))


def poison_hooks() -> list[PoisonHook]:
    """The hooks :func:`poisoned` enters: the registered ones, in order of registration, then those
    advertised in the ``gradcheck.poison`` entry-point group whose module is already imported."""
    hooks = list(_registered)
    for ep in _advertised():
        if ep.module not in sys.modules:
            continue  # not imported: nobody allocates through it, and loading it would import it
        key = (ep.name, ep.value)
        if key not in _loaded:
            try:
                _loaded[key] = ep.load()
            except Exception as e:  # an engine error, not the implementation's: say where it comes from
                raise RuntimeError(
                    f"the poison hook {ep.name} = {ep.value!r} (entry-point group {POISON_ENTRY_POINT_GROUP!r}) "
                    f"does not load: {type(e).__name__}: {e}"
                ) from e
        if _loaded[key] not in hooks:
            hooks.append(_loaded[key])
    return hooks


@contextlib.contextmanager
def poisoned(fill: float) -> Iterator[None]:
    """Poison every allocation made while the block runs: ``torch.empty*`` through torch's
    deterministic mode (NaN-filled memory), and every poison hook's allocator with ``fill``.
    The caller's deterministic settings come back afterwards; torch's UserWarnings about
    deterministic mode are silenced meanwhile."""
    det = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    fill_mem = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        with warnings.catch_warnings(), contextlib.ExitStack() as stack:
            warnings.simplefilter("ignore", UserWarning)
            for hook in poison_hooks():
                stack.enter_context(hook(fill))
            yield
    finally:
        torch.use_deterministic_algorithms(det, warn_only=warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = fill_mem
