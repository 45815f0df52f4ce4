"""``python -m gradcheck``: the table, the JSON, the exit codes, and a planted bug's report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gradcheck import cli

ROOT = Path(__file__).resolve().parents[2]


def test_passing_ops_print_the_table_and_exit_0(tmp_path, capsys):
    out = tmp_path / "r.json"
    code = cli.main(["--ops", "relu,neg", "--dtypes", "float32,float64", "--examples", "3", "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    for column in ("forward", "backward vs ref", "backward vs FD", "examples", "time"):
        assert column in printed
    assert "4 passed, 0 failed" in printed
    text = out.read_text()
    json.loads(text)
    assert '"relu"' in text and '"neg"' in text


@pytest.mark.long(seconds=65)  # measured under load on 2 cores
def test_a_planted_bug_exits_1_with_the_report(capsys):
    """The README's command with gradcheck.demo's strided bug (its tail bug is the zoo's
    softplus_tail_block_dropped, caught through the API)."""
    argv = ["--ops", "relu", "--impl", "relu=gradcheck.demo:relu_strided_bug", "--dtypes", "float32",
            "--examples", "25", "--max-findings", "1"]
    code = cli.main(argv)
    printed = capsys.readouterr()
    text = printed.out + printed.err
    assert code == 1
    assert "relu [float32]: check '" in text and "failed" in text
    assert "replay" in text


def test_unknown_op_and_list(capsys):
    assert cli.main(["--ops", "no_such_op"]) == 2
    assert "unknown op(s): no_such_op" in capsys.readouterr().out
    assert cli.main(["--list"]) == 0
    assert "conv2d" in capsys.readouterr().out


def test_module_entry_point_runs():
    """``python -m gradcheck --list`` in a fresh interpreter (the README's command)."""
    done = subprocess.run([sys.executable, "-m", "gradcheck", "--list"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "cross_entropy" in done.stdout


def test_by_default_catalog_only_ops_are_named_and_skipped(monkeypatch, capsys):
    """Ops with a reference but no registered implementation (no kernel of ours yet) do not stop
    the first README command: they are listed, and the rest is verified."""
    from gradcheck import ops

    full = ops.catalog()
    monkeypatch.setattr(ops, "catalog", lambda: {"relu": full["relu"], "kl_div": full["kl_div"]})
    monkeypatch.setattr(ops, "implementations", lambda: {"relu": ops.implementation("relu")[0]})
    code = cli.main(["--dtypes", "float32", "--examples", "2", "--max-findings", "1"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "catalog only (no implementation registered, not verified): kl_div" in printed
    assert "1 passed, 0 failed" in printed
