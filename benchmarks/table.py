"""``python -m benchmarks.table RESULTS`` (from the repository root): a pytest-benchmark JSON (or
the per-benchmark JSON lines that ``tests/benchmarks`` append while running) as one table of ours
against torch, a plot and markdown. Needs only the standard library, rich and (for the plot)
matplotlib: no torch, no kernels, so a results file can be rendered anywhere.

One row per (op, size, dtype, pass): the median time of ours, torch eager and torch.compile; the
speedup over torch eager (torch time / our time); our achieved rate (GB/s of compulsory traffic,
TFLOP/s, or items/s); our % of the roofline measured in the same run; the goal and whether it is met.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Row", "load_results", "main", "make_rows", "plot", "render", "summary", "to_markdown"]


@dataclass
class Row:
    """One comparison: our benchmark and torch's (and torch.compile's) for the same op and size."""

    op: str
    size: str
    dtype: str
    pass_: str
    times: dict[str, float] = field(default_factory=dict)  # impl -> median seconds
    info: dict[str, dict[str, Any]] = field(default_factory=dict)  # impl -> extra_info

    @property
    def ours(self) -> float | None:
        return self.times.get("ours")

    @property
    def torch(self) -> float | None:
        return self.times.get("torch")

    @property
    def compile(self) -> float | None:
        return self.times.get("compile")

    @property
    def speedup(self) -> float | None:
        return self.torch / self.ours if self.ours and self.torch else None

    @property
    def speedup_vs_compile(self) -> float | None:
        return self.compile / self.ours if self.ours and self.compile else None

    def pct_ceiling(self, impl: str = "ours") -> float | None:
        roof = self.info.get(impl, {}).get("roofline_us")
        t = self.times.get(impl)
        return roof * 1e-6 / t if roof and t else None

    def rate(self, impl: str = "ours") -> str:
        info, t = self.info.get(impl, {}), self.times.get(impl)
        if not t:
            return ""
        if info.get("flops"):
            return f"{info['flops'] / t / 1e12:.1f} TFLOP/s"
        if info.get("bytes"):
            return f"{info['bytes'] / t / 1e9:.0f} GB/s"
        if info.get("items"):
            return f"{_si(info['items'] / t)} img/s"
        return ""

    @property
    def goal(self) -> dict[str, Any] | None:
        return self.info.get("ours", {}).get("goal")

    @property
    def smoke(self) -> bool:
        return any(info.get("smoke") for info in self.info.values())

    @property
    def goal_met(self) -> bool | None:
        goal = self.goal
        if not goal or self.ours is None or self.smoke:
            return None  # a CPU smoke run's numbers say nothing about a GPU
        checks = []
        if goal.get("min_ceiling") is not None:
            pct = self.pct_ceiling()
            checks.append(None if pct is None else pct >= goal["min_ceiling"])
        if goal.get("min_speedup") is not None:
            checks.append(None if self.speedup is None else self.speedup >= goal["min_speedup"])
        if any(c is False for c in checks):
            return False
        return None if any(c is None for c in checks) else True

    @property
    def label(self) -> str:
        return f"{self.op} {self.pass_} {self.size} {self.dtype}"


def _si(x: float) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:.1f}{suffix}"
    return f"{x:.0f}"


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def _fmt_x(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def _fmt_pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _fmt_met(met: bool | None, goal: dict[str, Any] | None) -> str:
    if not goal:
        return ""
    return {True: "yes", False: "NO", None: "?"}[met]


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def load_results(path: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(benchmarks, machine_info) from a pytest-benchmark JSON file or from JSON lines (one
    benchmark per line, as written under ``GRADCHECK_BENCH_JSONL``)."""
    text = Path(path).read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    if isinstance(data, dict) and "benchmarks" in data:
        return list(data["benchmarks"]), dict(data.get("machine_info") or {})
    benches, machine = [], {}
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # blank, or cut short by a killed run
        if isinstance(record, dict) and "machine_info" in record:
            machine = record["machine_info"]
        elif isinstance(record, dict):
            benches.append(record)
    if not benches and data is None:
        raise ValueError(f"{path}: neither a pytest-benchmark JSON nor JSON lines")
    return benches, machine


def make_rows(benchmarks: Sequence[dict[str, Any]]) -> list[Row]:
    """Pair ours/torch/compile per (op, size, dtype, pass), in the order the benchmarks ran."""
    rows: dict[tuple[str, str, str, str], Row] = {}
    for b in benchmarks:
        info = b.get("extra_info") or {}
        stats = b.get("stats") or {}
        if "op" not in info or "median" not in stats:
            continue  # not one of ours, or it did not run
        key = (info["op"], info.get("case", ""), info.get("dtype", ""), info.get("pass_", ""))
        row = rows.setdefault(key, Row(*key))
        impl = info.get("impl", "ours")
        row.times[impl] = float(stats["median"])
        row.info[impl] = info
    return list(rows.values())


def _smoke(rows: Sequence[Row]) -> bool:
    return any(info.get("smoke") for row in rows for info in row.info.values())


def _machine_line(machine: dict[str, Any], rows: Sequence[Row]) -> str:
    g = machine.get("gradcheck") or {}  # the harness's machine_info, under its historical key
    parts = [str(machine.get("gpu") or g.get("gpu") or "no GPU")]
    if g.get("torch"):
        parts.append(f"torch {g['torch']}, triton {g.get('triton')}")
    copy = (g.get("ceilings") or {}).get("copy_gbps")
    if copy is None:
        copy = next((i.get("copy_gbps") for r in rows for i in r.info.values() if i.get("copy_gbps")), None)
    if copy:
        parts.append(f"copy ceiling {copy:.0f} GB/s")
    if _smoke(rows):
        parts.append("CPU SMOKE RUN (Triton interpreter): the numbers are not performance")
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------

COLUMNS = ("op", "size", "dtype", "pass", "ours", "torch", "compile", "speedup", "rate", "% ceil", "goal", "met")


def _cells(row: Row, with_compile: bool) -> list[str]:
    cells = [row.op, row.size, row.dtype, row.pass_, fmt_time(row.ours), fmt_time(row.torch)]
    if with_compile:
        cells.append(fmt_time(row.compile))
    goal = row.goal
    cells += [_fmt_x(row.speedup), row.rate(), _fmt_pct(row.pct_ceiling()), goal["text"] if goal else ""]
    cells.append("" if row.smoke else _fmt_met(row.goal_met, goal))
    return cells


def _columns(rows: Sequence[Row]) -> tuple[list[str], bool]:
    with_compile = any(r.compile for r in rows)
    cols = [c for c in COLUMNS if with_compile or c != "compile"]
    return cols, with_compile


def summary(rows: Sequence[Row], *, list_missed: bool = True) -> str:
    """Goals met, and (``list_missed``) each one missed with the number that missed it."""
    if _smoke(rows):
        return "goals not evaluated: CPU smoke run (Triton interpreter), the numbers are not performance"
    with_goal = [r for r in rows if r.goal and r.ours is not None]
    met = [r for r in with_goal if r.goal_met]
    missed = [r for r in with_goal if r.goal_met is False]
    lines = [f"goals met: {len(met)} of {len(with_goal)} measured, missed: {len(missed)}"]
    for r in with_goal:
        if list_missed and r.goal_met is False:
            lines.append(
                f"  missed: {r.label}: speedup {_fmt_x(r.speedup)}, {_fmt_pct(r.pct_ceiling())} of ceiling "
                f"(goal {r.goal['text']})"
            )
    missing = [r for r in rows if r.ours is None]
    if missing:
        lines.append(f"  not measured for ours: {len(missing)} rows (kernel missing, skipped or failed)")
    return "\n".join(lines)


def render(
    rows: Sequence[Row],
    machine: dict[str, Any],
    *,
    width: int | None = None,
    file: Any = None,
    compact: bool = False,
) -> None:
    """The table with rich; ``compact`` folds op/size/dtype/pass into one column and drops the rate
    and the goal's text (about 100 characters a row, for logs whose tail is all that is kept)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    if width is None and not (file or sys.stdout).isatty():
        width = 160  # rich falls back to 80 columns off a terminal
    console = Console(width=width, file=file, highlight=False)
    cols, with_compile = _columns(rows)
    if compact:
        cols = ["benchmark", *(c for c in cols if c not in ("op", "size", "dtype", "pass", "rate", "goal"))]
    table = Table(title=f"ours vs torch — {_machine_line(machine, rows)}", box=box.SIMPLE_HEAD, pad_edge=False)
    for c in cols:
        table.add_column(c, justify="left" if c in ("benchmark", "op", "size", "dtype", "pass", "goal") else "right")
    for row in rows:
        cells = _cells(row, with_compile)
        if compact:  # drop op/size/dtype/pass (in the label), rate and the goal's text
            cells = [row.label, *cells[4:-4], cells[-3], cells[-1]]
        met = row.goal_met
        style = {True: "green", False: "red"}.get(met) if row.goal else None
        cells[-1] = f"[{style}]{cells[-1]}[/]" if style else cells[-1]
        table.add_row(*cells)
    console.print(table)
    console.print(summary(rows, list_missed=not compact))


def to_markdown(rows: Sequence[Row], machine: dict[str, Any]) -> str:
    cols, with_compile = _columns(rows)
    out = [f"_{_machine_line(machine, rows)}_", "", "| " + " | ".join(cols) + " |"]
    out.append("|" + "|".join("---" if c in ("op", "size", "dtype", "pass", "goal") else "---:" for c in cols) + "|")
    for row in rows:
        cells = [c.replace("|", "\\|") for c in _cells(row, with_compile)]
        out.append("| " + " | ".join(cells) + " |")
    out += ["", "```", summary(rows), "```", ""]
    return "\n".join(out)


def plot(rows: Sequence[Row], path: str | Path, machine: dict[str, Any] | None = None) -> Path:
    """Two panels, one bar per row: speedup over torch eager (log scale, 1x marked, each goal's
    minimum as a tick) and % of the roofline (85% marked). Green: goal met, red: missed, grey: no goal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r.ours is not None]
    n = max(len(shown), 1)
    fig, (ax_s, ax_c) = plt.subplots(1, 2, figsize=(14, 1.2 + 0.26 * n), sharey=True)
    ys = list(range(len(shown)))[::-1]
    colors = [{True: "tab:green", False: "tab:red"}.get(r.goal_met, "tab:gray") for r in shown]
    speed = [r.speedup or math.nan for r in shown]
    ax_s.barh(ys, speed, color=colors)
    ax_s.set_xscale("log")
    ax_s.axvline(1.0, color="black", lw=0.8)
    for y, r in zip(ys, shown, strict=True):
        want = (r.goal or {}).get("min_speedup")
        if want:
            ax_s.plot([want], [y], marker="|", color="black", markersize=10)
    ax_s.set_yticks(ys, [r.label for r in shown], fontsize=7)
    ax_s.set_ylim(-0.7, len(shown) - 0.3)
    ax_s.set_xlabel("speedup over torch eager (log; | = goal)")
    pct = [100 * (r.pct_ceiling() or math.nan) for r in shown]
    ax_c.barh(ys, pct, color=colors)
    ax_c.axvline(85, color="black", lw=0.8, ls="--")
    ax_c.axvline(100, color="black", lw=0.8)
    ax_c.set_xlabel("% of roofline (copy bandwidth / cuBLAS, same run; -- = 85%)")
    fig.suptitle(_machine_line(machine or {}, rows), fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.table",
        description="Turn a pytest-benchmark JSON from tests/benchmarks (or its JSON-lines partial results) "
        "into a table of ours vs torch: speedup, rate, % of the ceiling measured in the same run, goal met.",
    )
    p.add_argument("results", help="pytest-benchmark --benchmark-json file, or GRADCHECK_BENCH_JSONL lines")
    p.add_argument("--plot", metavar="PNG", help="write a plot of speedups and % of ceiling (matplotlib)")
    p.add_argument(
        "--markdown",
        metavar="PATH",
        nargs="?",
        const="-",
        help="write the table as markdown (for the README) to PATH, or print it instead of the rich table",
    )
    p.add_argument("--text", metavar="PATH", help="also write the plain-text table to PATH")
    p.add_argument("--width", type=int, default=None, help="table width in characters (default: the terminal's)")
    p.add_argument("--compact", action="store_true", help="one label column instead of op/size/dtype/pass/goal")
    args = p.parse_args(argv)

    try:
        benches, machine = load_results(args.results)
    except (OSError, ValueError) as exc:
        print(f"benchmarks.table: {exc}", file=sys.stderr)
        return 2
    rows = make_rows(benches)
    if not rows:
        print(f"benchmarks.table: no benchmarks of tests/benchmarks in {args.results}", file=sys.stderr)
        return 1
    if args.markdown and args.markdown != "-":
        Path(args.markdown).write_text(to_markdown(rows, machine))
    if args.text:
        with open(args.text, "w") as fh:
            render(rows, machine, width=args.width or 160, file=fh)
    if args.plot:
        try:
            plot(rows, args.plot, machine)
        except Exception as exc:  # a plot must never cost the table
            print(f"benchmarks.table: no plot ({type(exc).__name__}: {exc})", file=sys.stderr)
    if args.markdown == "-":
        print(to_markdown(rows, machine))
    else:
        render(rows, machine, width=args.width, compact=args.compact)
    return 0


if __name__ == "__main__":
    sys.exit(main())
