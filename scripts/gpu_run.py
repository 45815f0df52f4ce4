#!/usr/bin/env python
"""On a GPU machine: the whole test suite compiled under the ``gpu`` Hypothesis profile, then the
benchmarks, then the benchmark table, printed last.

Needs only what a machine with torch and triton already has (numpy, hypothesis, pytest,
pytest-benchmark, pytest-xdist, matplotlib, rich); no network, no tox, no install: it runs the
checkout with PYTHONPATH set to it (an editable install works the same).

    python scripts/gpu_run.py --out runs/gpu [--tests-timeout S] [--bench-timeout S]
                              [--skip-tests] [--skip-bench] [-k EXPR] [--commit-results]

Writes to --out: ``junit.xml`` and ``tests.log`` (test suite), ``bench.json`` (pytest-benchmark),
``bench.partial.jsonl`` (one line per finished benchmark, kept even when a run is cut short),
``bench.log``, ``bench.md``, ``bench_table.txt``, ``bench.png``, ``env.json`` and ``summary.json``.
Each phase runs in its own process group; past its timeout it gets SIGINT (pytest then writes
what it has), then SIGTERM, then SIGKILL, and the run goes on with what exists.

Several GPUs: the suite runs under pytest-xdist with one worker per GPU (``--workers-per-gpu``),
each pinned to its device by ``tests/conftest.py``. No GPU: ``-n auto`` over the CPU cores (the
kernels then run under the Triton interpreter). Exit status: 0 when every phase that ran passed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Run as ``python scripts/gpu_run.py``, Python puts scripts/ on sys.path, not the checkout: put the
# root there too, so this process can import ``benchmarks.table`` (the child pytest processes get
# it through PYTHONPATH, see child_env).
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PROBE = r"""
import json, importlib.util, sys
info = {"python": sys.version.split()[0]}
try:
    import torch
    info["torch"] = torch.__version__
    info["cuda"] = torch.version.cuda
    info["cuda_available"] = torch.cuda.is_available()
    count = torch.cuda.device_count() if info["cuda_available"] else 0
    info["gpus"] = [torch.cuda.get_device_name(i) for i in range(count)]
except Exception as exc:
    info["torch_error"] = repr(exc)
try:
    import triton
    info["triton"] = triton.__version__
except Exception as exc:
    info["triton_error"] = repr(exc)
info["xdist"] = importlib.util.find_spec("xdist") is not None
print("PROBE" + json.dumps(info))
"""


def log(msg: str) -> None:
    print(f"[gpu_run {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment with the checkout importable and the interpreter switches removed."""
    env = dict(os.environ)
    for key in ("TRITON_INTERPRET", "GRADCHECK_INTERPRET"):
        env.pop(key, None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra or {})
    return env


def probe() -> dict[str, Any]:
    try:
        out = subprocess.run(
            [sys.executable, "-c", PROBE], cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=180
        )
    except subprocess.TimeoutExpired:
        return {"probe_error": "timed out after 180 s"}
    for line in out.stdout.splitlines():
        if line.startswith("PROBE"):
            return json.loads(line[5:])
    return {"probe_error": (out.stderr or out.stdout)[-2000:]}


def _stop(proc: subprocess.Popen) -> int | None:
    """SIGINT (pytest finishes its reports), then SIGTERM, then SIGKILL, to the whole group."""
    for sig, grace in ((signal.SIGINT, 25), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            break
        try:
            return proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
    return proc.poll()


def run_phase(name: str, cmd: list[str], *, env: dict[str, str], log_path: Path, timeout: float | None) -> dict:
    """Run ``cmd`` with its output in ``log_path``; never longer than ``timeout`` (plus the grace)."""
    log(f"{name}: {shlex.join(cmd)}")
    log(f"{name}: output in {log_path}" + (f", time limit {timeout:.0f} s" if timeout else ""))
    start = time.monotonic()
    timed_out = False
    with open(log_path, "w") as fh:
        fh.write(f"$ {shlex.join(cmd)}\n")
        fh.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            log(f"{name}: time limit reached, stopping it")
            rc = _stop(proc)
        except KeyboardInterrupt:
            _stop(proc)
            raise
    seconds = round(time.monotonic() - start, 1)
    log(f"{name}: exit status {rc}{' (timed out)' if timed_out else ''} after {seconds} s")
    return {"cmd": cmd, "rc": rc, "timed_out": timed_out, "seconds": seconds, "log": str(log_path)}


def tail(path: Path, lines: int = 12, width: int = 200) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(line[:width] for line in text[-lines:])


def junit_summary(path: Path) -> dict[str, Any]:
    """Counts and the failing tests (name and the first line of the message) from a junit XML."""
    if not path.exists():
        return {"error": "no junit XML (the run was stopped before pytest wrote it)"}
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        return {"error": f"unreadable junit XML: {exc}"}
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0, "time": 0.0}
    for suite in root.iter("testsuite"):
        for key in counts:
            counts[key] += type(counts[key])(float(suite.get(key, 0) or 0))
    failed = []
    for case in root.iter("testcase"):
        for kind in ("failure", "error"):
            el = case.find(kind)
            if el is not None:
                message = (el.get("message") or el.text or "").strip().splitlines()
                name = f"{case.get('classname', '')}::{case.get('name', '')}".strip(":")
                failed.append({"test": name, "kind": kind, "message": message[0][:300] if message else ""})
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    counts["time"] = round(counts["time"], 1)
    return {**counts, "failed": failed}


def xdist_args(env_info: dict[str, Any], workers_per_gpu: int) -> list[str]:
    if not env_info.get("xdist"):
        return []
    gpus = len(env_info.get("gpus") or [])
    if gpus == 0:
        return ["-n", "auto"]
    workers = gpus * workers_per_gpu
    return ["-n", str(workers), "--dist", "loadgroup"] if workers > 1 else []


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "unknown"


def bench_source(out: Path) -> Path | None:
    """bench.json (pytest-benchmark's, with the machine info) unless the per-benchmark lines hold
    more results (a run stopped at its time limit may write a short JSON or none)."""
    counts = {}
    for path in (out / "bench.json", out / "bench.partial.jsonl"):
        if not path.exists():
            continue
        text = path.read_text(errors="replace")
        try:
            counts[path] = len(json.loads(text).get("benchmarks") or [])
        except (json.JSONDecodeError, AttributeError):
            counts[path] = sum('"stats"' in line for line in text.splitlines())
    best = max(counts, key=lambda p: (counts[p], p.suffix == ".json"), default=None)
    return best if best is not None and counts[best] else None


def commit_results(out: Path, env_info: dict[str, Any]) -> Path:
    gpus = env_info.get("gpus") or []
    card = slug(gpus[0]) if gpus else "cpu"
    base = ROOT / "benchmarks" / "results" / f"{datetime.date.today().isoformat()}-{card}"
    dest = base
    if dest.exists():
        dest = base.with_name(f"{base.name}-{time.strftime('%H%M%S')}")
    dest.mkdir(parents=True)
    for name in (
        "bench.json",
        "bench.partial.jsonl",
        "bench.md",
        "bench_table.txt",
        "bench.png",
        "summary.json",
        "env.json",
        "junit.xml",
    ):
        if (out / name).exists():
            shutil.copy2(out / name, dest / name)
    return dest


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="folder for the JSON, XML, logs, table and plot")
    p.add_argument("--tests-timeout", type=float, default=3600, metavar="S", help="limit for the test suite (s)")
    p.add_argument("--bench-timeout", type=float, default=1800, metavar="S", help="limit for the benchmarks (s)")
    p.add_argument("--skip-tests", action="store_true", help="do not run the test suite")
    p.add_argument("--skip-bench", action="store_true", help="do not run the benchmarks")
    p.add_argument("-k", dest="keyword", default=None, help="pytest -k expression, passed to both phases")
    p.add_argument("--workers-per-gpu", type=int, default=1, help="xdist workers per GPU for the suite (default 1)")
    p.add_argument(
        "--bench-seconds",
        type=float,
        default=None,
        metavar="S",
        help="measurement time per benchmark (GRADCHECK_BENCH_SECONDS, default 0.1)",
    )
    p.add_argument("--tests-args", default="", help="more pytest arguments for the suite (one string)")
    p.add_argument("--bench-args", default="", help="more pytest arguments for the benchmarks (one string)")
    p.add_argument(
        "--commit-results",
        action="store_true",
        help="copy the results into benchmarks/results/<date>-<gpu>/ (to be committed)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out if args.out.is_absolute() else Path.cwd() / args.out
    out.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    if args.skip_tests and args.skip_bench and (out / "env.json").exists():
        env_info = json.loads((out / "env.json").read_text())  # re-rendering a run fetched from a GPU machine
    else:
        env_info = probe()
        (out / "env.json").write_text(json.dumps(env_info, indent=2))
    gpus = env_info.get("gpus") or []
    log(
        f"python {env_info.get('python')}, torch {env_info.get('torch')}, triton {env_info.get('triton')}, "
        f"GPUs: {', '.join(gpus) or 'none (kernels run under the Triton interpreter)'}"
    )
    if "probe_error" in env_info or "torch_error" in env_info:
        log(f"probe problem: {env_info.get('probe_error') or env_info.get('torch_error')}")
    keyword = ["-k", args.keyword] if args.keyword else []
    common = ["-p", "no:cacheprovider", "-q", "-rfE", "--tb=short", "--color=no"]
    summary: dict[str, Any] = {"started": started, "env": env_info, "out": str(out)}
    ok = True

    if not args.skip_tests:
        junit = out / "junit.xml"
        junit.unlink(missing_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            *common,
            "--gradcheck-profile",
            "gpu",
            "--benchmark-skip",
            f"--junitxml={junit}",
            "-o",
            "junit_family=xunit2",
            *xdist_args(env_info, args.workers_per_gpu),
            *keyword,
            *shlex.split(args.tests_args),
        ]
        phase = run_phase(
            "tests",
            cmd,
            env=child_env({"GRADCHECK_PROFILE": "gpu"}),
            log_path=out / "tests.log",
            timeout=args.tests_timeout,
        )
        phase["junit"] = junit_summary(junit)
        summary["tests"] = phase
        ok &= phase["rc"] == 0 and not phase["timed_out"]

    if not args.skip_bench:
        partial = out / "bench.partial.jsonl"
        partial.unlink(missing_ok=True)
        (out / "bench.json").unlink(missing_ok=True)
        extra = {"GRADCHECK_BENCH_JSONL": str(partial)}
        if args.bench_seconds:
            extra["GRADCHECK_BENCH_SECONDS"] = str(args.bench_seconds)
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "tests/benchmarks",
            "--benchmark-only",
            f"--benchmark-json={out / 'bench.json'}",
            "--benchmark-columns=min,median,max,rounds",
            "--benchmark-sort=fullname",
            *common,
            *keyword,
            *shlex.split(args.bench_args),
        ]
        phase = run_phase("bench", cmd, env=child_env(extra), log_path=out / "bench.log", timeout=args.bench_timeout)
        source = bench_source(out)
        phase["source"] = str(source) if source else None
        summary["bench"] = phase
        ok &= phase["rc"] == 0 and not phase["timed_out"]

    rows: list = []
    machine: dict[str, Any] = {}
    source = bench_source(out)  # with --skip-bench: an earlier run's results in --out, if any
    table = None
    if source is not None:
        try:
            # imported here: it needs only rich and matplotlib (benchmarks/__init__.py imports nothing),
            # and should it fail anyway, the run still writes its summary (the table is logged as failed)
            from benchmarks import table

            benches, machine = table.load_results(source)
            rows = table.make_rows(benches)
            (out / "bench.md").write_text(table.to_markdown(rows, machine))
            with open(out / "bench_table.txt", "w") as fh:
                table.render(rows, machine, width=170, file=fh)
            table.plot(rows, out / "bench.png", machine)
            met = [r.goal_met for r in rows if r.goal and r.ours is not None and r.goal_met is not None]
            summary.setdefault("bench", {})["goals"] = {
                "measured": len(met),
                "met": sum(m is True for m in met),
                "missed": sum(m is False for m in met),
                "smoke": any(r.smoke for r in rows),
            }
        except Exception:
            log("benchmark table failed:\n" + traceback.format_exc())

    summary["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    summary["ok"] = ok
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    if args.commit_results:
        dest = commit_results(out, env_info)
        summary["committed_to"] = str(dest)
        (dest / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        log(f"results copied to {dest.relative_to(ROOT)} (git add it)")

    # -- the report: tests, then benchmarks, the table last ----------------------------------
    print()
    if "tests" in summary:
        t = summary["tests"]
        j = t["junit"]
        if "error" in j:
            print(f"TESTS: exit {t['rc']}{' TIMED OUT' if t['timed_out'] else ''} in {t['seconds']} s; {j['error']}")
        else:
            print(
                f"TESTS: {j['passed']} passed, {j['failures']} failed, {j['errors']} errors, {j['skipped']} skipped "
                f"in {t['seconds']} s (exit {t['rc']}{', TIMED OUT' if t['timed_out'] else ''})"
            )
            for f in j["failed"][:25]:
                print(f"  {f['kind'].upper()}: {f['test'][:150]}: {f['message'][:200]}")
            if len(j["failed"]) > 25:
                print(f"  ... {len(j['failed']) - 25} more in {out / 'junit.xml'}")
        print("  last lines of tests.log:\n    " + tail(out / "tests.log", 4).replace("\n", "\n    "))
    if "bench" in summary:
        b = summary["bench"]
        goals = b.get("goals", {})
        verdict = (
            "goals not evaluated (CPU smoke run)"
            if goals.get("smoke")
            else f"goals met {goals.get('met', 0)} of {goals.get('measured', 0)}"
        )
        print(
            f"BENCH: exit {b.get('rc')}{' TIMED OUT' if b.get('timed_out') else ''} in {b.get('seconds')} s; "
            f"{len(rows)} rows from {b.get('source')}; {verdict}"
        )
        print("  last lines of bench.log:\n    " + tail(out / "bench.log", 6).replace("\n", "\n    "))
    print(f"results in {out}: summary.json, junit.xml, bench.json, bench.md, bench_table.txt, bench.png")
    if rows and table is not None:
        print()
        table.render(rows, machine, width=150, compact=True)
    elif not args.skip_bench:
        print("no benchmark results to show")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
