"""Test-suite hooks: tests marked ``gpu`` are skipped where the kernels run under the Triton
interpreter; with pytest-xdist on a machine with several GPUs, each worker is pinned to one GPU
(worker gwN -> cuda:N mod device count); tests marked ``gpu`` (tensors past 2^31 elements, tens of
GiB) share one xdist group, so under ``--dist loadgroup`` two of them never hold memory at once;
tests marked ``long`` (the minutes-long end-to-end runs) are collected first, so that under xdist
they start at once instead of leaving one worker alone with them at the end."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

from kernels import _runtime


def pytest_configure(config: pytest.Config) -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() > 1:
        # set_device, not CUDA_VISIBLE_DEVICES: CUDA is initialised by the time a conftest runs
        torch.cuda.set_device(int(worker[2:]) % torch.cuda.device_count())


def pytest_report_header(config: pytest.Config) -> list[str]:
    mode = "Triton interpreter on CPU" if _runtime.INTERPRET else "compiled for CUDA"
    profile = getattr(settings, "get_current_profile_name", lambda: "active")()
    return [f"kernels: {mode}; hypothesis profile {profile} ({settings().max_examples} examples)"]


def _long_first(item: pytest.Item) -> float:
    """Sort key: tests marked ``long(seconds=...)`` first, the longest first; the rest as collected."""
    marker = item.get_closest_marker("long")
    return 0.0 if marker is None else -float(marker.kwargs.get("seconds", 1.0))


@pytest.hookimpl(trylast=True)  # after the benchmarks' conftest has put its items last
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=_long_first)  # stable
    skip = pytest.mark.skip(reason="needs a CUDA GPU (kernels run under the Triton interpreter here)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(pytest.mark.xdist_group("gpu-bigmem"))
            if _runtime.INTERPRET:
                item.add_marker(skip)
