"""How long a LayerNorm verification takes: our Triton layer_norm verified against ``F.layer_norm``
as the torch oracle (a plain call), hidden sizes up to 4096, at each dtype under a profile (``dev``
by default: 10 examples, a 60 s budget per dtype).

    python scripts/layer_norm_speed.py [--profile dev] [--json speed.json]

A row per dtype: wall seconds, examples run, draws not run (over the budget, or unsupported) and
the verdict. Under the Triton interpreter on a CPU this measures the engine's cost on the widest
rows a norm kernel sees; the target is under 60 s per dtype with every example run.
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

DTYPES = ("float32", "float16", "bfloat16", "float64")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=os.environ.get("GRADCHECK_PROFILE", "dev"))
    parser.add_argument("--max-hidden", type=int, default=4096)
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args(argv)

    import torch
    import torch.nn.functional as F
    from rich.console import Console
    from rich.table import Table

    import gradcheck as gc
    from gradcheck import profiles
    from gradcheck import strategies as gs
    from kernels import norms

    profiles.load(args.profile)

    def ours(x, w, b):
        return norms.layer_norm(x, x.shape[-1:], w, b)

    def oracle(x, w, b):
        return F.layer_norm(x, x.shape[-1:], w, b)

    inputs = gs.rows_with_params(params=2, max_hidden=args.max_hidden)  # as a user would call it
    rows = []
    for name in DTYPES:
        start = time.perf_counter()
        try:
            report = gc.verify(ours, inputs, reference=oracle, dtypes=(getattr(torch, name),), name="layer_norm")
            verdict = "pass"
        except gc.VerificationError as error:
            report, verdict = error.report, f"fail ({error.check})"
        run = report.runs.get(name, {}) if report is not None else {}
        rows.append({
            "dtype": name, "seconds": round(time.perf_counter() - start, 1), "examples": run.get("examples"),
            "not_run": run.get("not_run", {}), "verdict": verdict,
        })  # fmt: skip
        print(f"{name}: {rows[-1]}", flush=True)

    table = Table(title=f"layer_norm vs F.layer_norm, hidden up to {args.max_hidden}, profile '{args.profile}'")
    for column in ("dtype", "seconds", "examples", "not run", "verdict"):
        table.add_column(column)
    for row in rows:
        not_run = ", ".join(f"{k} {v}" for k, v in row["not_run"].items()) or "0"
        table.add_row(row["dtype"], f"{row['seconds']:.1f}", str(row["examples"]), not_run, row["verdict"])
    Console(width=None if sys.stdout.isatty() else 120).print(table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"profile": args.profile, "max_hidden": args.max_hidden, "rows": rows}
        args.json.write_text(json.dumps(payload, indent=2))
    return 0 if all(row["verdict"] == "pass" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
