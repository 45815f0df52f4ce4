"""The engine's mutation score: every zoo mutant against the engine, every twin through it.

    python scripts/zoo_score.py --profile thorough --json zoo.json [--twins-only | --mutants-only] [-j 2]

For each case: which check rejected the mutant (and whether it is one the case expects), and for
the twin, whether it passed, with the examples run per dtype and the time. Prints a table last;
exits 1 when a mutant slips through or a twin fails.
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


def _run(name: str, profile: str, twins_only: bool, mutants_only: bool = False) -> dict:

    import gradcheck as gc
    from gradcheck import profiles
    from tests.gradcheck.zoo import CASES_BY_NAME

    profiles.load(profile)
    case = CASES_BY_NAME[name]
    row: dict = {"case": name, "bug": case.doc, "expected": list(case.expected)}
    if not twins_only:
        # rejection is settled by the first failing example: skip the shrink phase (as test_zoo does)
        start = time.perf_counter()
        try:
            options = {**case.verify_options(), "max_findings": 1}  # the first finding settles it
            with profiles.without_shrinking():
                gc.verify(case.mutant, case.inputs, name=f"{name}_mutant", **options)
            row["mutant"] = {"rejected": False, "check": None}
        except gc.VerificationError as error:
            row["mutant"] = {"rejected": True, "check": error.check, "expected": error.check in case.expected}
        row["mutant"]["seconds"] = round(time.perf_counter() - start, 2)
    if mutants_only:
        return row
    start = time.perf_counter()
    try:
        report = gc.verify(case.twin, case.inputs, name=f"{name}_twin", **case.verify_options())
        examples = {str(d).removeprefix("torch."): report.examples(str(d).removeprefix("torch.")) for d in case.dtypes}
        row["twin"] = {"passed": report.passed, "examples": examples}
    except gc.VerificationError as error:
        row["twin"] = {"passed": False, "failure": str(error).splitlines()[0]}
    row["twin"]["seconds"] = round(time.perf_counter() - start, 2)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=os.environ.get("GRADCHECK_PROFILE", "ci"))
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--twins-only", action="store_true", help="skip the mutants")
    parser.add_argument("--mutants-only", action="store_true", help="skip the twins")
    parser.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    from tests.gradcheck.zoo import CASES

    names = [case.name for case in CASES]
    start = time.perf_counter()
    jobs = [(name, args.profile, args.twins_only, args.mutants_only) for name in names]
    rows = run_all(_run, jobs, workers=args.jobs, log=sys.stderr, label=f"zoo under '{args.profile}'")
    total = time.perf_counter() - start

    table = Table(title=f"zoo under profile '{args.profile}' ({total:.0f} s wall, {args.jobs} jobs)")
    for column in ("case", "mutant rejected by", "twin", "twin examples", "twin s"):
        table.add_column(column)
    caught = clean = 0
    for row in rows:
        mutant = row.get("mutant")
        if mutant is None:
            verdict = "-"
        elif mutant["rejected"] and mutant["expected"]:
            caught += 1
            verdict = mutant["check"]
        else:
            verdict = f"[red]{mutant['check'] or 'NOT REJECTED'}[/red]"
        twin = row.get("twin")
        if twin is None:
            table.add_row(row["case"], verdict, "-", "-", "-")
            continue
        clean += bool(twin["passed"])
        examples = ", ".join(f"{k} {v}" for k, v in twin.get("examples", {}).items())
        table.add_row(
            row["case"], verdict, "pass" if twin["passed"] else "[red]FAIL[/red]", examples, f"{twin['seconds']:.1f}"
        )
    console = Console(width=None if sys.stdout.isatty() else 140)
    console.print(table)
    score = "" if args.twins_only else f"mutants rejected by an expected check: {caught}/{len(rows)}; "
    twins = "" if args.mutants_only else f"twins passing: {clean}/{len(rows)}"
    console.print(f"{score}{twins}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"profile": args.profile, "seconds": round(total, 1), "rows": rows}, indent=2))
    ok = (args.mutants_only or clean == len(rows)) and (args.twins_only or caught == len(rows))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
