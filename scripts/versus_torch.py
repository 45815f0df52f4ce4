"""Our kernels judged by the measuring stick: from the JSON of ``python -m gradcheck --json PATH``,
a Markdown table of each op and dtype's worst forward and backward error against the float64
reference, torch's worst error at the same dtype on the same examples, and their ratio.

    python scripts/versus_torch.py results.json [--factor 2] [--notes notes.json] > table.md

A row whose ratio passes ``--factor`` (the engine's ``baseline_factor``) is marked, with its note
from ``--notes`` (a JSON object "op dtype" or "op" -> why) when there is one; exits 1 when a
marked row has no note.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _cell(check: dict | None) -> tuple[str, float | None]:
    """('ours / torch' text, ratio or None) for one check's JSON cell."""
    if not check or not check.get("examples"):
        return "-", None
    ours, torch_ = check["worst_error"], check.get("baseline_error")
    if torch_ is None:
        return f"{ours:.2g} / -", None
    if torch_ == 0:
        return f"{ours:.2g} / 0", (None if ours == 0 else float("inf"))
    return f"{ours:.2g} / {torch_:.2g}", ours / torch_


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--factor", type=float, default=2.0)
    parser.add_argument("--notes", type=Path)
    args = parser.parse_args(argv)
    results = json.loads(args.results.read_text())["results"]
    notes = json.loads(args.notes.read_text()) if args.notes else {}

    print("| op | dtype | forward: ours / torch | backward: ours / torch | worst ratio | note |")
    print("|---|---|---|---|---:|---|")
    unexplained = 0
    for row in results:
        forward, fwd_ratio = _cell(row["checks"].get("forward"))
        backward, bwd_ratio = _cell(row["checks"].get("backward"))
        ratios = [r for r in (fwd_ratio, bwd_ratio) if r is not None]
        worst = max(ratios) if ratios else None
        note = notes.get(f"{row['op']} {row['dtype']}") or notes.get(row["op"], "")
        over = worst is not None and worst > args.factor
        unexplained += over and not note
        mark = "-" if worst is None else f"{worst:.2g}x" + (" **over**" if over else "")
        verdict = "" if row["passed"] else " (failed)"
        print(f"| {row['op']}{verdict} | {row['dtype']} | {forward} | {backward} | {mark} | {note if over else ''} |")
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
