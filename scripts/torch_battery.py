"""torch's own ops through the catalog's battery: ``python -m gradcheck --torch`` for every op, several
ops at once, each op and dtype isolated in a child process by the command line.

    python scripts/torch_battery.py --profile thorough -j 2 --out DIR [--ops a,b] [--dtypes d,e]
        [--merge-only] [--override LATER_DIR]

Each op writes ``DIR/<op>.json`` (and its log ``DIR/<op>.out``) as it goes; when all have run, the
rows are merged into ``DIR/verify_torch_ops.json`` (the command line's JSON format) and a Markdown
table is printed: every row's verdict, examples, time, and for a failure the torch bug it is (the
known failures of ``tests/gradcheck/test_torch_ops.py``, each shown by a minimal case there).
Exits 1 when a row fails that is not a known torch bug, or an op wrote no result.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _run_op(op: str, profile: str, out: Path, dtypes: str | None) -> int:
    cmd = [sys.executable, "-m", "gradcheck", "--torch", "--profile", profile, "--max-findings", "1"]
    cmd += ["--ops", op, "--json", str(out / f"{op}.json")] + (["--dtypes", dtypes] if dtypes else [])
    with open(out / f"{op}.out", "w") as log:
        return subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=False).returncode


def _known() -> dict[tuple[str, str], str]:
    from tests.gradcheck.test_torch_ops import KNOWN_FAILURES

    return KNOWN_FAILURES


def _table(rows: list[dict], known: dict[tuple[str, str], str]) -> tuple[list[str], list[str]]:
    """(Markdown lines, unexplained failures)."""
    lines = ["| op | dtype | verdict | examples | seconds | torch bug |", "|---|---|---|---:|---:|---|"]
    unexplained = []
    for r in rows:
        key = (r["op"], r["dtype"])
        examples = r["checks"].get("forward", {}).get("examples", 0)
        if r["passed"]:
            verdict, why = "pass", ""
        else:
            verdict = f"FAIL ({r.get('failed_check')})"
            why = known.get(key, "")
            if not why:
                unexplained.append(f"{r['op']} [{r['dtype']}]")
                why = "**not a known torch bug**"
            else:
                why = why[: why.index("):") + 1] if why.startswith("torch bug (") and "):" in why else why
        lines.append(f"| {r['op']} | {r['dtype']} | {verdict} | {examples} | {r['seconds']:.0f} | {why} |")
    return lines, unexplained


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="thorough")
    parser.add_argument("-j", "--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--ops", help="comma-separated (default: the whole catalog)")
    parser.add_argument("--dtypes", help="comma-separated (default: each op's)")
    parser.add_argument("--merge-only", action="store_true", help="merge the JSON already in --out; run nothing")
    parser.add_argument(
        "--override",
        type=Path,
        action="append",
        default=[],
        help="a directory of a later run (say, of the failed rows after an engine fix): its rows replace the "
        "same op and dtype's (repeatable)",
    )
    args = parser.parse_args(argv)

    import gradcheck as gc

    ops = args.ops.split(",") if args.ops else sorted(gc.catalog())
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if not args.merge_only:
        from rich.progress import Progress

        with Progress() as progress, ThreadPoolExecutor(args.jobs) as pool:
            task = progress.add_task(f"torch's ops under {args.profile}", total=len(ops))
            for _ in pool.map(lambda op: _run_op(op, args.profile, args.out, args.dtypes), ops):
                progress.advance(task)

    rows, missing, seconds = [], [], 0.0
    for op in ops:
        path = args.out / f"{op}.json"
        data = json.loads(path.read_text()) if path.exists() else None
        if data is None or data.get("partial"):
            missing.append(op)
        if data is not None:
            rows += data["results"]
            seconds += data["seconds"]
    for later in args.override:
        for path in sorted(later.glob("*.json")):
            data = json.loads(path.read_text())
            if data.get("partial"):
                continue
            for row in data["results"]:
                row["rerun"] = str(later)
                keep = [r for r in rows if (r["op"], r["dtype"]) != (row["op"], row["dtype"])]
                seconds += row["seconds"]
                rows = [*keep, row]
    order = {op: i for i, op in enumerate(ops)}
    dorder = {d: i for i, d in enumerate(("float32", "float16", "bfloat16", "float64"))}
    rows.sort(key=lambda r: (order.get(r["op"], len(order)), dorder.get(r["dtype"], 9)))
    merged = {"results": rows, "seconds": seconds, "partial": bool(missing)}
    if not args.merge_only:
        merged["wall_seconds"] = time.perf_counter() - started
    (args.out / "verify_torch_ops.json").write_text(json.dumps(merged, indent=2))
    lines, unexplained = _table(rows, _known())
    print("\n".join(lines))
    passed = sum(r["passed"] for r in rows)
    print(f"\n{len(rows)} rows: {passed} passed, {len(rows) - passed} failed; {seconds:.0f} s of verification")
    if missing:
        print(f"no complete result for: {', '.join(missing)}")
    if unexplained:
        print(f"failures that are not known torch bugs: {', '.join(unexplained)}")
    return 1 if missing or unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
