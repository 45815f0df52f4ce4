"""Runs independent verification jobs in worker processes with a progress bar (the scripts' one
shared piece: each job imports the engine and loads its profile in its own process)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any


def run_all(
    fn: Callable[..., dict], jobs: Sequence[tuple[Any, ...]], *, workers: int, label: str, log: Any = None
) -> list[dict]:
    """``[fn(*job) for job in jobs]``, computed by ``workers`` processes, in the order of ``jobs``;
    the bar advances as jobs finish, in any order, and each finished row is printed to ``log`` (a
    file, for runs whose bar nobody watches) as one JSON line."""
    import json
    from concurrent.futures import as_completed

    from rich.progress import Progress

    with Progress(transient=True) as progress, ProcessPoolExecutor(workers) as pool:
        task = progress.add_task(label, total=len(jobs))
        futures = {pool.submit(fn, *job): i for i, job in enumerate(jobs)}
        rows: list[dict | None] = [None] * len(jobs)
        for future in as_completed(futures):
            rows[futures[future]] = future.result()
            progress.advance(task)
            if log is not None:
                print(json.dumps(rows[futures[future]]), file=log, flush=True)
    return rows  # type: ignore[return-value]
