"""Root conftest of this project's own suite: its Hypothesis profile, and our kernels bound to the
catalog when the package is not installed.

The pytest plugin (``gradcheck.plugin``, entry point ``pytest11``) loads no profile by itself; this
suite asks for one here: ``GRADCHECK_PROFILE`` if set, else ``ci`` when CI=true, else ``dev``
(``--gradcheck-profile NAME`` overrides it). In a plain checkout (``PYTHONPATH=.``, no entry points)
the plugin, our implementations and our allocator's poison hook are registered by hand.
"""

import importlib.metadata

from gradcheck import profiles

profiles.load(profiles.default_profile())

_installed = any(ep.value == "gradcheck.plugin" for ep in importlib.metadata.entry_points(group="pytest11"))
pytest_plugins = ["pytester"] if _installed else ["pytester", "gradcheck.plugin"]

if not _installed:
    from gradcheck import hooks, ops
    from kernels import _runtime, registry

    ops.register_implementations(registry.IMPLEMENTATIONS, name="kernels", device=registry.device)
    hooks.register_poison_hook(_runtime.allocation_fill)
