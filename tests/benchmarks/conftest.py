"""Fixtures and hooks for the benchmarks (the logic lives in ``benchmarks.harness``).

Every benchmark here times device work with ``benchmarks.harness.device_clock`` as pytest-benchmark's
timer; torch.compile benchmarks run last, so a time limit cuts those first.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks import harness as hb

_HERE = Path(__file__).parent


#: Run order when a time limit may cut the run short: the ops with goals in the issue first, the
#: many small elementwise benchmarks late, every torch.compile run (a compile each) last.
ORDER = (
    "relu",
    "softmax",
    "norms",
    "cross_entropy",
    "linear_cross_entropy",
    "matmul",
    "conv",
    "pool",
    "reduction",
    "blitznet",
    "elementwise",
    "mse",
    "cat",
    "optim",
    "activations",
    "embedding",
    "rotary",
    "logsumexp",
    "attention",
)


def _rank(item: pytest.Item) -> tuple[int, int]:
    params = getattr(getattr(item, "callspec", None), "params", {})
    compiled = any(isinstance(v, str) and v == "compile" for v in params.values())
    module = item.path.stem.removeprefix("test_bench_")
    return (int(compiled), ORDER.index(module) if module in ORDER else len(ORDER))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mine = [item for item in items if _HERE in item.path.parents]
    if not mine:
        return
    for item in mine:
        item.add_marker(pytest.mark.benchmark(timer=hb.device_clock, disable_gc=False))
    ours = set(map(id, mine))
    items[:] = [item for item in items if id(item) not in ours] + sorted(mine, key=_rank)  # sorted() is stable


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    info = hb.machine_info()
    machine_info["gpu"] = info.get("gpu")
    machine_info["gradcheck"] = info  # the key benchmarks.table and benchmarks/results read


@pytest.fixture
def bench(benchmark) -> hb.Bench:
    """``benchmarks.harness.Bench`` around pytest-benchmark's fixture; with ``GRADCHECK_BENCH_JSONL``
    set, each finished benchmark is also appended to that file as one JSON line."""
    return hb.Bench(benchmark, hb.session(), jsonl=os.environ.get("GRADCHECK_BENCH_JSONL") or None)
