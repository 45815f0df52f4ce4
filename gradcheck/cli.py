"""Command line: ``python -m gradcheck`` verifies the catalog's registered implementations (or drop-ins
given with ``--impl``) and prints a table; ``python -m gradcheck NAME`` runs an app registered under
the ``gradcheck.apps`` entry-point group (this project's: ``train``, the blitz classifier)."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = ["main"]

#: Entry-point group of subcommands: ``name = "package.module:main"``, ``main(argv) -> int``.
APPS_GROUP = "gradcheck.apps"

DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
    "fp64": torch.float64,
}
TABLE_CHECKS = ("forward", "backward", "backward_fd")


def _load_impl(spec: str):
    """``NAME=package.module:attribute`` -> (NAME, callable)."""
    if "=" not in spec or ":" not in spec.split("=", 1)[1]:
        raise argparse.ArgumentTypeError(f"--impl takes NAME=module:attribute, got {spec!r}")
    name, target = spec.split("=", 1)
    module, attr = target.split(":", 1)
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise argparse.ArgumentTypeError(f"{target} is not callable")
    return name, obj


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gradcheck",
        description="Verify every op in the catalog (forward, backward vs reference, backward vs finite differences) "
        "and print a table. Installed apps run as subcommands (python -m gradcheck train --help runs this project's "
        "blitz classifier).",
    )
    p.add_argument("--ops", default=None, help="comma-separated op names (default: all; see --list)")
    p.add_argument(
        "--dtypes", default=None, help="comma-separated dtypes: float32,float16,bfloat16,float64 (default: each op's)"
    )
    p.add_argument(
        "--examples", type=int, default=None, help="examples per op and dtype (default: the Hypothesis profile's)"
    )
    p.add_argument(
        "--profile",
        default=None,
        choices=("dev", "ci", "thorough", "gpu"),
        help="Hypothesis profile (default: GRADCHECK_PROFILE, else ci when CI=true, else dev)",
    )
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the results as JSON to PATH")
    p.add_argument(
        "--impl",
        action="append",
        default=[],
        metavar="NAME=MODULE:ATTR",
        help="verify a drop-in implementation for op NAME instead of ours (repeatable)",
    )
    p.add_argument(
        "--torch", action="store_true", help="verify torch's own ops (each catalog entry's torch_fn) instead of ours"
    )
    p.add_argument(
        "--max-findings",
        type=int,
        default=3,
        metavar="N",
        help="distinct failures to look for per op and dtype (default 3; 1 stops at the first)",
    )
    p.add_argument(
        "--no-isolate",
        dest="isolate",
        action="store_false",
        help="run every op in this process (default: each op and dtype in a child process, so that a crash is "
        "reported as a failure of check 'crash' with its input and the other rows still run)",
    )
    p.add_argument("--list", action="store_true", help="list the ops in the catalog and exit")
    return p


def _verify_main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from gradcheck import profiles
    from gradcheck.ops import catalog, implementations
    from gradcheck.report import VerificationError
    from gradcheck.runner import verify_op

    profiles.load(args.profile or profiles.default_profile())
    console = Console(width=None if sys.stdout.isatty() else 132)
    specs = catalog()
    if args.list:
        for name, spec in sorted(specs.items()):
            console.print(f"{name:<14} {', '.join(str(d).removeprefix('torch.') for d in spec.dtypes):<40} {spec.doc}")
        return 0
    names = [n.strip() for n in args.ops.split(",")] if args.ops else sorted(specs)
    unknown = [n for n in names if n not in specs]
    if unknown:
        console.print(f"[red]unknown op(s): {', '.join(unknown)}[/red]; known: {', '.join(sorted(specs))}")
        return 2
    impls = dict(_load_impl(s) for s in args.impl)
    if args.torch:
        impls = {n: specs[n].torch_fn for n in names} | impls
    registered = implementations()
    unimplemented = [n for n in names if n not in impls and n not in registered]
    if unimplemented and not args.ops:  # all ops by default: those with an implementation
        console.print(f"catalog only (no implementation registered, not verified): {', '.join(unimplemented)}")
        names = [n for n in names if n not in unimplemented]
    missing = [n for n in names if n not in impls and n not in registered]
    if missing:
        console.print(
            f"[red]no implementation registered for: {', '.join(missing)}[/red]; give one with --impl "
            "NAME=MODULE:ATTR, --torch for torch's own ops, or install a package with a "
            "'gradcheck.implementations' entry point (pip install -e . installs this project's kernels)"
        )
        return 2
    wanted = None
    if args.dtypes:
        try:
            wanted = [DTYPES[d.strip()] for d in args.dtypes.split(",")]
        except KeyError as e:
            console.print(f"[red]unknown dtype {e.args[0]!r}[/red]; known: {', '.join(DTYPES)}")
            return 2

    jobs = [(n, d) for n in names for d in specs[n].dtypes if wanted is None or d in wanted]
    results, failures = [], []
    started = time.perf_counter()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("verifying", total=len(jobs))
        for name, dtype in jobs:
            dname = str(dtype).removeprefix("torch.")
            progress.update(task, description=f"verifying {name} [{dname}]")
            t0 = time.perf_counter()
            try:
                report = verify_op(
                    name, impl=impls.get(name), dtypes=[dtype], max_examples=args.examples, isolate=args.isolate,
                    max_findings=args.max_findings,
                )
                error = None
            except VerificationError as e:
                report, error = getattr(e, "report", None), e
                failures.append(e)
            seconds = time.perf_counter() - t0
            row = {"op": name, "dtype": dname, "passed": error is None, "seconds": seconds, "checks": {}}
            for s in report.stats if report is not None else []:
                row["checks"][s.check] = {
                    "examples": s.examples,
                    "skipped": s.skipped,
                    "worst_error": s.worst_error,
                    "tolerance": s.worst_tolerance,
                    "ratio": s.worst_ratio,
                    "baseline_error": None if math.isnan(s.baseline_error) else s.baseline_error,
                }
            if error is not None:
                row["failed_check"] = error.check
                row["message"] = str(error)
            results.append(row)
            progress.advance(task)
            if not console.is_terminal:  # a log file or CI: one plain line per row, as it finishes
                verdict = "pass" if error is None else f"FAIL ({error.check})"
                print(f"[{len(results)}/{len(jobs)}] {name} [{dname}] {verdict} in {seconds:.1f}s", file=sys.stderr,
                      flush=True)
            if args.json:  # written as it goes, so a run cut short keeps what it finished
                _write_json(args.json, results, time.perf_counter() - started, partial=len(results) < len(jobs))

    table = Table(
        title="gradcheck: implementations vs NumPy float64 reference",
        caption="cells: worst |error| (its ratio to the tolerance; <= 1 passes); FD: finite differences; "
        "vs torch: worst error / torch's worst at the same dtype on the same examples",
    )
    table.add_column("op")
    table.add_column("dtype")
    for check in TABLE_CHECKS:
        table.add_column(
            {"forward": "forward", "backward": "backward vs ref", "backward_fd": "backward vs FD"}[check],
            justify="right",
        )
    table.add_column("vs torch", justify="right")
    table.add_column("examples", justify="right")
    table.add_column("time", justify="right")
    table.add_column("result")
    for row in results:
        cells = []
        for check in TABLE_CHECKS:
            c = row["checks"].get(check)
            if row.get("failed_check") == check:
                cells.append("[red]FAIL[/red]")
            elif c is None or c["examples"] == 0:
                cells.append("-")
            else:
                cells.append(f"{c['worst_error']:.1e} ({c['ratio']:.2g})")
        fwd = row["checks"].get("forward", {})
        result = "[green]pass[/green]" if row["passed"] else f"[red]FAIL ({row.get('failed_check')})[/red]"
        table.add_row(
            row["op"], row["dtype"], *cells, _versus_torch(row), str(fwd.get("examples", 0)), f"{row['seconds']:.1f}s",
            result,
        )  # fmt: skip
    console.print(table)
    total = time.perf_counter() - started
    console.print(
        f"{len(results) - len(failures)} passed, {len(failures)} failed in {total:.1f}s "
        f"(kernels: {_mode()})"
    )
    for e in failures:
        console.rule(f"[red]{e.op} [{e.dtype}]: {e.check}")
        print(str(e))
        for note in getattr(e, "__notes__", []):
            print(note)
    if args.json:
        _write_json(args.json, results, total, partial=False)
    return 1 if failures else 0


def _versus_torch(row: dict) -> str:
    """The measuring stick: the worst error over forward and backward divided by torch's own at the
    same dtype on the same examples ("-" where torch was not measured or was exact)."""
    ratios = []
    for check in ("forward", "backward"):
        c = row["checks"].get(check)
        if c and c.get("baseline_error") and c["examples"]:
            ratios.append(c["worst_error"] / c["baseline_error"])
    return f"{max(ratios):.2g}x" if ratios else "-"


def _write_json(path: Path, results: list[dict], seconds: float, *, partial: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"results": results, "seconds": seconds, "partial": partial}, indent=2, default=str))


def _mode() -> str:
    """Where Triton kernels run in this process (read from the environment, nothing imported)."""
    interpreted = os.environ.get("TRITON_INTERPRET", "") not in ("", "0")
    return "Triton interpreter" if interpreted else ("CUDA" if torch.cuda.is_available() else "CPU")


def _apps() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=APPS_GROUP)}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # numpy under the Triton interpreter warns on log(0), 0/0, inf - inf: the kernels' intended IEEE results
    warnings.filterwarnings("ignore", category=RuntimeWarning, module="triton.runtime.interpreter")
    if argv and not argv[0].startswith("-"):
        apps = _apps()
        if argv[0] not in apps:
            known = ", ".join(sorted(apps)) or "none installed"
            print(f"python -m gradcheck: unknown command {argv[0]!r} (apps: {known})", file=sys.stderr)
            return 2
        return int(apps[argv[0]].load()(argv[1:]) or 0)
    return _verify_main(argv)
