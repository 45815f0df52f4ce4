"""``python -m kernels.blitz`` (or ``python -m gradcheck train``): our BlitzNet tracks torch.nn step for step
and converges.

Everything runs the real kernels (the Triton interpreter on CPU), so the runs are short: the
float64 parity run takes 24 steps of batch 4, the convergence run 50 steps of batch 8.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kernels import _runtime as rt
from kernels.blitz import data as gd
from kernels.blitz import train as gt

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The torch.nn reference is tiny; with pytest-xdist on two cores, torch's own thread pool only
    oversubscribes them (measured: several times slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits() -> gd.Dataset:
    return gd.load_digits()


def _subset(ds: gd.Dataset, n_train: int | None, n_test: int) -> gd.Dataset:
    return dataclasses.replace(
        ds,
        x_train=ds.x_train[:n_train],
        y_train=ds.y_train[:n_train],
        x_test=ds.x_test[:n_test],
        y_test=ds.y_test[:n_test],
    )


@pytest.mark.long(seconds=83)  # measured under load on 2 cores
def test_float64_matches_torch_step_for_step(digits):
    """In float64 the two loss trajectories agree to 1e-9 relative over the first 20 steps and the final
    parameters to 1e-6 (measured: about 1e-16 and 1e-15)."""
    config = gt.TrainConfig(dtype="float64", batch_size=4, lr=0.05, momentum=0.9, max_steps=24, progress=False)
    summary = gt.run(config, dataset=_subset(digits, 4 * 24, 16))
    assert summary["steps"] == 24
    rel = summary["divergence"]["per_step_rel"]
    assert max(rel[: gt.EARLY_STEPS]) <= 1e-9, rel[: gt.EARLY_STEPS]
    assert summary["divergence"][f"max_rel_first_{gt.EARLY_STEPS}"] <= 1e-9
    assert summary["parameters"]["max_rel"] <= 1e-6, summary["parameters"]["per_parameter"]
    assert summary["parameters"]["max_abs"] <= 1e-6
    # The run moved the weights (a parity test on a frozen network would prove nothing).
    assert summary["loss"]["torch"][0] != summary["loss"]["torch"][-1]
    assert summary["final"]["test_acc_ours"] == summary["final"]["test_acc_torch"]
    assert summary["divergence"]["steps_tracked"] == 24 and summary["noise_floor"] is None


@pytest.mark.long(seconds=177)  # measured under load on 2 cores
def test_float32_training_converges_and_tracks_torch(digits):
    """The CI convergence run: 50 steps of batch 8 (400 images, under a third of an epoch) in float32 take the
    test accuracy far above chance (10%) and the loss down. The recipe (lr 0.04, momentum 0.8) was picked in plain
    torch.nn for robustness: over seeds 0-7 it reaches 43-56% with the mean loss of the last 10 steps 20-31% below
    that of the first 10. Measured here (seed 0): 53.3% for ours and torch.nn alike, loss 2.31 -> 1.84,
    about 90 s of one CPU core."""
    config = gt.TrainConfig(dtype="float32", batch_size=8, lr=0.04, momentum=0.8, seed=0, max_steps=50, progress=False)
    summary = gt.run(config, dataset=_subset(digits, None, 120))
    losses = summary["loss"]["ours"]
    assert len(losses) == 50 and summary["finite"]
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.9 * first, (first, last)  # measured: 2.31 -> 1.84
    assert summary["final"]["test_acc_ours"] >= 0.3, summary["final"]
    assert abs(summary["final"]["test_acc_ours"] - summary["final"]["test_acc_torch"]) <= 0.1, summary["final"]
    # Tracking in float32: at rounding level (measured ~1e-7) until a max-pool near-tie is ordered differently
    # by the two implementations' rounding; after that SGD amplifies the difference, as it amplifies torch.nn
    # float32's own rounding against float64 (the noise floor). So only the early steps are held tight.
    div = summary["divergence"]
    assert div[f"max_rel_first_{gt.EARLY_STEPS}"] <= 1e-4, div[f"max_rel_first_{gt.EARLY_STEPS}"]
    assert summary["noise_floor"]["max_rel"] is not None


def test_cli_writes_summary_and_plot(tmp_path, monkeypatch, digits, capsys):
    tiny = _subset(digits, 12, 8)
    monkeypatch.setattr(gd, "load_dataset", lambda data_dir=None: tiny)
    out = tmp_path / "out"
    argv = ["--epochs", "2", "--batch-size", "6", "--lr", "0.01", "--out-dir", str(out), "--seed", "3"]
    assert gt.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4 and len(summary["epochs"]) == 2
    assert summary["config"]["batch_size"] == 6 and summary["config"]["seed"] == 3
    assert len(summary["loss"]["ours"]) == len(summary["loss"]["torch"]) == 4
    for key in ("max_rel", "max_rel_step", "max_abs", f"max_rel_first_{gt.EARLY_STEPS}", "steps_tracked"):
        assert key in summary["divergence"]
    assert set(summary["epochs"][0]) >= {"test_acc_ours", "test_acc_torch", "train_loss_ours", "train_loss_torch"}
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "largest relative gap" in printed and "test acc ours" in printed


def test_cli_max_steps_stops_mid_epoch(tmp_path, monkeypatch, digits):
    monkeypatch.setattr(gd, "load_dataset", lambda data_dir=None: _subset(digits, 20, 4))
    assert gt.main(["--batch-size", "4", "--max-steps", "3", "--quiet", "--out-dir", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["epochs"][-1]["epoch"] == pytest.approx(0.6)


def test_cli_reports_user_errors(tmp_path, capsys):
    assert gt.main(["--data-dir", str(tmp_path / "missing"), "--out-dir", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().out
    wrong = "cuda" if rt.INTERPRET else "cpu"
    assert gt.main(["--device", wrong, "--out-dir", str(tmp_path)]) == 2
    assert "--device" in capsys.readouterr().out
    for bad in (["--epochs", "0"], ["--batch-size", "x"], ["--dtype", "float16"]):
        with pytest.raises(SystemExit) as info:
            gt.main(bad)
        assert info.value.code == 2


@pytest.mark.parametrize("command", [["kernels.blitz"], ["gradcheck", "train"]], ids=" ".join)
def test_help_through_the_module_entry_points(command):
    proc = subprocess.run(
        [sys.executable, "-m", *command, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    for option in ("--epochs", "--batch-size", "--lr", "--momentum", "--dtype", "--device", "--seed", "--data-dir"):
        assert option in proc.stdout
    assert "--out-dir" in proc.stdout and "--max-steps" in proc.stdout
