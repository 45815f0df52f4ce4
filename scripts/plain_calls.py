"""Plain calls under a profile: the correct implementations of ``tests/gradcheck/test_verdicts.py``
(hand-written backwards, a torch oracle, no ``depth``/``terms``/``ulps``/``kinks``) must pass at
each of their dtypes, and the bugs of that file must still be rejected.

    python scripts/plain_calls.py --profile thorough --json plain.json [-j 2] [--cases softmax,gelu]

One job per (case, dtype), so that 1000 examples of each run in parallel; a row gives the examples
run, the seconds and, for a failure, the check and its first line. Prints a table last; exits 1
when a correct implementation fails or a bug passes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts._pool import run_all  # noqa: E402


def _run(case: str, dtype_name: str, profile: str) -> dict:
    import torch

    import gradcheck as gc
    from gradcheck import profiles
    from tests.gradcheck import test_verdicts as tv

    profiles.load(profile)
    dtype = getattr(torch, dtype_name)
    row: dict = {"case": case, "dtype": dtype_name}
    start = time.perf_counter()
    if case in tv.CASES:
        fn, inputs, oracle, _ = tv.CASES[case]
        row["kind"] = "correct"
        try:
            report = gc.verify(fn, inputs, reference=oracle, dtypes=(dtype,), name=case)
            row.update(passed=True, examples=report.examples(dtype_name))
        except gc.VerificationError as error:
            row.update(passed=False, check=error.check, failure=str(error).splitlines()[0])
    else:
        fn, inputs, oracle = tv.BUGS[case]
        row["kind"] = "bug"
        try:  # the verdict is what counts: no shrinking, as in the test
            with profiles.without_shrinking():  # and no held-out rounds after the first finding
                report = gc.verify(fn, inputs, reference=oracle, dtypes=(dtype,), name=case, max_findings=1)
            row.update(passed=True, examples=report.examples(dtype_name))
        except gc.VerificationError as error:
            row.update(passed=False, check=error.check, found_at=getattr(error, "found_at", None))
    row["seconds"] = round(time.perf_counter() - start, 2)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=os.environ.get("GRADCHECK_PROFILE", "ci"))
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--cases", help="comma-separated case names (default: all, bugs included)")
    parser.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    from tests.gradcheck import test_verdicts as tv

    chosen = args.cases.split(",") if args.cases else [*tv.CASES, *tv.BUGS]
    unknown = sorted(set(chosen) - set(tv.CASES) - set(tv.BUGS))
    if unknown:
        parser.error(f"unknown cases {unknown}; known: {sorted([*tv.CASES, *tv.BUGS])}")
    jobs = []
    for case in chosen:
        dtypes = tv.CASES[case][3] if case in tv.CASES else tv.BUG_DTYPES
        jobs += [(case, str(d).removeprefix("torch."), args.profile) for d in dtypes]
    start = time.perf_counter()
    rows = run_all(_run, jobs, workers=args.jobs, log=sys.stderr, label=f"plain calls under '{args.profile}'")
    total = time.perf_counter() - start

    table = Table(title=f"plain calls under profile '{args.profile}' ({total:.0f} s wall, {args.jobs} jobs)")
    for column in ("case", "dtype", "expected", "verdict", "examples", "s"):
        table.add_column(column)
    wrong = 0
    for row in rows:
        right = row["passed"] == (row["kind"] == "correct")
        wrong += not right
        verdict = "pass" if row["passed"] else f"fail ({row['check']})"
        table.add_row(
            row["case"], row["dtype"], "pass" if row["kind"] == "correct" else "fail",
            verdict if right else f"[red]{verdict}[/red]", str(row.get("examples", "-")), f"{row['seconds']:.1f}",
        )  # fmt: skip
    console = Console(width=None if sys.stdout.isatty() else 140)
    console.print(table)
    console.print(f"right verdicts: {len(rows) - wrong}/{len(rows)}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"profile": args.profile, "seconds": round(total, 1), "jobs": args.jobs, "rows": rows}
        args.json.write_text(json.dumps(payload, indent=2))
    return 0 if wrong == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
