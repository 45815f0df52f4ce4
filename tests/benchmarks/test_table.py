"""The benchmark table (benchmarks.table) and the GPU runner's helpers, on made-up results (ordinary tests: they run in
the normal suite, where the benchmarks themselves are skipped)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import harness as hb
from benchmarks import table as bt

ROOT = Path(__file__).resolve().parents[2]


def _bench(op, impl, median, *, goal=None, smoke=False, **info):
    extra = {"op": op, "case": "8192x8192", "dtype": "fp32", "pass_": "fwd", "impl": impl, "smoke": smoke, **info}
    if goal is not None:
        extra["goal"] = goal.as_dict()
    return {"name": f"test_{op}[{impl}]", "extra_info": extra, "stats": {"median": median, "min": median}}


def _results(smoke=False):
    return [
        _bench("softmax", "torch", 4e-4, bytes=2**29, roofline_us=130.0, smoke=smoke),
        _bench("softmax", "ours", 1.5e-4, bytes=2**29, roofline_us=130.0, goal=hb.COPY_BOUND, smoke=smoke),
        _bench("softmax", "compile", 2e-4, bytes=2**29, roofline_us=130.0, smoke=smoke),
        _bench("matmul", "torch", 1e-3, flops=2 * 4096**3, roofline_us=1000.0, smoke=smoke),
        _bench("matmul", "ours", 1.25e-3, flops=2 * 4096**3, roofline_us=1000.0, goal=hb.CUBLAS_90, smoke=smoke),
        _bench("cat", "torch", 1e-4, smoke=smoke),
    ]


def test_rows_pair_impls_and_judge_goals():
    rows = {r.op: r for r in bt.make_rows(_results())}
    soft, mm, cat = rows["softmax"], rows["matmul"], rows["cat"]
    assert soft.speedup == pytest.approx(4e-4 / 1.5e-4)
    assert soft.speedup_vs_compile == pytest.approx(2e-4 / 1.5e-4)
    assert soft.pct_ceiling() == pytest.approx(130e-6 / 1.5e-4)
    assert soft.goal_met is True  # 87% of the roofline and faster than torch
    assert mm.speedup == pytest.approx(0.8)
    assert mm.goal_met is False  # 0.8x cuBLAS < 0.9x
    assert cat.ours is None and cat.goal_met is None
    assert "TFLOP/s" in mm.rate() and "GB/s" in soft.rate()
    text = bt.summary(list(rows.values()))
    assert "goals met: 1 of 2" in text and "missed: matmul" in text


def test_smoke_results_are_never_judged():
    rows = bt.make_rows(_results(smoke=True))
    assert all(r.goal_met is None for r in rows)
    assert "not evaluated" in bt.summary(rows)


def test_command_reads_json_and_json_lines(tmp_path, capsys):
    full = tmp_path / "bench.json"
    full.write_text(json.dumps({"machine_info": {"gpu": "Test GPU"}, "benchmarks": _results()}))
    lines = tmp_path / "bench.partial.jsonl"
    lines.write_text(
        json.dumps({"machine_info": {"gpu": "Test GPU"}})
        + "\n"
        + "\n".join(json.dumps(b) for b in _results())
        + '\n{"cut short'
    )
    md = tmp_path / "bench.md"
    for source in (full, lines):
        assert bt.main([str(source), "--markdown", str(md), "--width", "150"]) == 0
        out = capsys.readouterr().out
        assert "Test GPU" in out and "softmax" in out and "2.67x" in out
        assert md.read_text().count("\n| ") == 4  # header and three rows
    assert bt.main([str(tmp_path / "missing.json")]) == 2


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = bt.plot(bt.make_rows(_results()), tmp_path / "bench.png", {"gpu": "Test GPU"})
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_table_command_from_the_root_needs_no_torch(tmp_path):
    results = tmp_path / "bench.json"
    results.write_text(json.dumps({"machine_info": {"gpu": "Test GPU"}, "benchmarks": _results()}))
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.table", str(results), "--compact", "--width", "150"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "softmax" in run.stdout and "Test GPU" in run.stdout
    # a results file renders anywhere: the table imports neither torch nor our kernels
    probe = "import sys, benchmarks.table; sys.exit(sorted({'torch', 'kernels'} & set(sys.modules)) or None)"
    run = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr


@pytest.fixture(scope="module")
def gpu_run():
    spec = importlib.util.spec_from_file_location("gpu_run_script", ROOT / "scripts" / "gpu_run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_gpu_run_reads_junit(gpu_run, tmp_path):
    junit = tmp_path / "junit.xml"
    junit.write_text(
        '<testsuites><testsuite tests="3" failures="1" errors="0" skipped="1" time="2.5">'
        '<testcase classname="tests.a" name="test_ok"/>'
        '<testcase classname="tests.a" name="test_bad"><failure message="AssertionError: 1 != 2">tb</failure>'
        "</testcase>"
        '<testcase classname="tests.a" name="test_skip"><skipped/></testcase>'
        "</testsuite></testsuites>"
    )
    s = gpu_run.junit_summary(junit)
    assert (s["tests"], s["passed"], s["failures"], s["skipped"]) == (3, 1, 1, 1)
    assert s["failed"] == [{"test": "tests.a::test_bad", "kind": "failure", "message": "AssertionError: 1 != 2"}]
    assert "error" in gpu_run.junit_summary(tmp_path / "none.xml")


def test_gpu_run_prefers_the_fuller_results(gpu_run, tmp_path):
    assert gpu_run.bench_source(tmp_path) is None
    (tmp_path / "bench.partial.jsonl").write_text("\n".join(json.dumps(b) for b in _results()))
    assert gpu_run.bench_source(tmp_path).name == "bench.partial.jsonl"
    (tmp_path / "bench.json").write_text(json.dumps({"benchmarks": _results()}))
    assert gpu_run.bench_source(tmp_path).name == "bench.json"
    (tmp_path / "bench.json").write_text(json.dumps({"benchmarks": _results()[:2]}))  # cut short by a time limit
    assert gpu_run.bench_source(tmp_path).name == "bench.partial.jsonl"


def test_gpu_run_renders_an_earlier_run(gpu_run, tmp_path, capsys):
    # --skip-tests --skip-bench with env.json present: the table of results fetched from a GPU machine
    (tmp_path / "env.json").write_text(json.dumps({"python": "3.11", "gpus": ["Test GPU"]}))
    (tmp_path / "bench.json").write_text(json.dumps({"machine_info": {"gpu": "Test GPU"}, "benchmarks": _results()}))
    assert gpu_run.main(["--out", str(tmp_path), "--skip-tests", "--skip-bench"]) == 0
    assert "softmax" in (tmp_path / "bench.md").read_text()
    assert "softmax" in (tmp_path / "bench_table.txt").read_text()
    assert "benchmark table failed" not in capsys.readouterr().out


def test_gpu_run_spreads_over_gpus(gpu_run):
    assert gpu_run.xdist_args({"xdist": True, "gpus": []}, 1) == ["-n", "auto"]
    assert gpu_run.xdist_args({"xdist": True, "gpus": ["H100"]}, 1) == []
    assert gpu_run.xdist_args({"xdist": True, "gpus": ["H100"] * 4}, 1) == ["-n", "4", "--dist", "loadgroup"]
    assert gpu_run.xdist_args({"xdist": False, "gpus": ["H100"] * 4}, 1) == []
