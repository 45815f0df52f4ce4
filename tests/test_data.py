"""The blitz classifier's data: embedded digits (upscaled, fixed split) and the local CIFAR-10 loader."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gradcheck.tolerances import assert_close
from kernels.blitz import data as gd

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def digits() -> gd.Dataset:
    return gd.load_digits()


def test_digits_shapes_dtypes_and_split(digits):
    assert digits.x_train.shape == (1438, 3, 32, 32) and digits.x_test.shape == (359, 3, 32, 32)
    assert digits.x_train.dtype == torch.float32 and digits.y_train.dtype == torch.int64
    assert digits.num_classes == 10
    # Stratified: every class is in both splits, about 20% of it held out.
    train_counts, test_counts = digits.y_train.bincount(), digits.y_test.bincount()
    assert ((test_counts >= 35) & (test_counts <= 37)).all() and (train_counts >= 139).all()


def test_digits_split_is_fixed_and_disjoint(digits):
    again = gd.load_digits()
    assert torch.equal(again.x_train, digits.x_train) and torch.equal(again.y_test, digits.y_test)
    # No image appears in both splits (the digits set has no exact duplicates across these).
    train = {row.tobytes() for row in digits.x_train[:, 0].numpy()}
    assert not any(row.tobytes() in train for row in digits.x_test[:, 0].numpy())


def test_digits_normalised_and_three_identical_channels(digits):
    x = digits.x_train.double()
    assert abs(x.mean().item()) < 1e-5 and abs(x.std().item() - 1) < 1e-3
    assert torch.equal(digits.x_train[:, 0], digits.x_train[:, 1])
    assert torch.equal(digits.x_train[:, 0], digits.x_train[:, 2])


def test_digits_upscale_is_torch_bilinear():
    """The NumPy upscale equals F.interpolate(mode="bilinear", align_corners=False) on the real digits."""
    from sklearn.datasets import load_digits

    raw = load_digits().images / 16.0  # (1797, 8, 8)
    want = F.interpolate(torch.from_numpy(raw)[:, None], size=(32, 32), mode="bilinear", align_corners=False)
    assert_close(torch.from_numpy(gd.upscale(raw, 32)), want[:, 0], depth=4, expected_rounded=True)  # 2x2 taps


@pytest.mark.parametrize(("n_in", "n_out"), [(8, 32), (5, 13), (4, 4), (3, 7)])
def test_bilinear_matrix_matches_interpolate(n_in, n_out):
    a = torch.from_numpy(gd.bilinear_matrix(n_in, n_out))
    x = torch.rand(3, 1, n_in, n_in, dtype=torch.float64)
    want = F.interpolate(x, size=(n_out, n_out), mode="bilinear", align_corners=False)
    assert_close(a @ x @ a.T, want, depth=2 * n_in, expected_rounded=True)


def test_load_dataset_default_is_digits():
    assert gd.load_dataset(None).name == "digits"


# ---------------------------------------------------------------------------------------------
# CIFAR-10, python-pickle format
# ---------------------------------------------------------------------------------------------


def _write_batch(path, data: np.ndarray, labels, *, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
    batch = {
        b"batch_label": b"testing batch",
        b"labels": list(labels),
        b"data": data,
        b"filenames": [f"img{i}.png".encode() for i in range(len(data))],
    }
    path.write_bytes(pickle.dumps(batch, protocol=protocol))


def _tiny_cifar(folder, *, n: int = 4, protocol: int = pickle.HIGHEST_PROTOCOL) -> dict:
    rng = np.random.default_rng(0)
    written = {}
    for i, name in enumerate(gd.CIFAR10_FILES):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [(i + j) % 10 for j in range(n)]
        _write_batch(folder / name, data, labels, protocol=protocol)
        written[name] = (data, labels)
    return written


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar10_tiny_folder_loads(tmp_path, protocol):
    written = _tiny_cifar(tmp_path, protocol=protocol)
    ds = gd.load_cifar10(tmp_path)
    assert ds.name == "cifar10" and ds.classes == gd.CIFAR10_CLASSES
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (4, 3, 32, 32)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    want_train = np.concatenate([written[f"data_batch_{i}"][1] for i in range(1, 6)])
    assert ds.y_train.tolist() == want_train.tolist()
    assert ds.y_test.tolist() == written["test_batch"][1]
    # Rows are the R plane, then G, then B (32x32 each, row-major); normalised per channel by the train stats.
    train = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)]).reshape(-1, 3, 32, 32) / 255.0
    mean, std = train.mean(axis=(0, 2, 3)), train.std(axis=(0, 2, 3))
    test = written["test_batch"][0].reshape(-1, 3, 32, 32) / 255.0
    expect = (test - mean[None, :, None, None]) / std[None, :, None, None]
    np.testing.assert_allclose(ds.x_test.numpy(), expect, rtol=1e-5, atol=1e-5)
    assert gd.load_dataset(tmp_path).name == "cifar10"


def test_cifar10_missing_folder(tmp_path):
    with pytest.raises(gd.DatasetError, match="does not exist"):
        gd.load_cifar10(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(gd.DatasetError, match="not a directory"):
        gd.load_cifar10(tmp_path / "file")


def test_cifar10_missing_files_are_named(tmp_path):
    _tiny_cifar(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    (tmp_path / "test_batch").unlink()
    with pytest.raises(gd.DatasetError, match="missing data_batch_3, test_batch"):
        gd.load_cifar10(tmp_path)


def test_cifar10_points_to_the_unpacked_subfolder(tmp_path):
    inner = tmp_path / "cifar-10-batches-py"
    inner.mkdir()
    _tiny_cifar(inner)
    with pytest.raises(gd.DatasetError, match="pass that folder"):
        gd.load_cifar10(tmp_path)
    assert gd.load_cifar10(inner).x_test.shape[0] == 4


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a pickle at all", "unpickling failed"),
        (pickle.dumps([1, 2, 3]), "holds a list"),
        (pickle.dumps({b"labels": [1]}), "lack data/labels"),
        (pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}), r"shape \(N, 3072\)"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}), "uint8"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}), "2 images but labels"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}), "lie in 0..9"),
    ],
)
def test_cifar10_malformed_batch(tmp_path, content, message):
    _tiny_cifar(tmp_path)
    (tmp_path / "data_batch_2").write_bytes(content)
    with pytest.raises(gd.DatasetError, match=message) as info:
        gd.load_cifar10(tmp_path)
    assert "data_batch_2" in str(info.value)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_cifar10_refuses_pickles_that_call_anything(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _tiny_cifar(tmp_path)
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": _Exploit(), b"labels": []}))
    with pytest.raises(gd.DatasetError, match="refusing to load"):
        gd.load_cifar10(tmp_path)
    assert not (tmp_path / "pwned.txt").exists()


def test_cifar10_reads_only_the_named_files(tmp_path, monkeypatch):
    """A booby-trapped extra file (batches.meta, readme) is never opened, and a batch that links out of the
    folder is refused."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "cifar"
    folder.mkdir()
    _tiny_cifar(folder)
    for extra in ("batches.meta", "data_batch_6", "readme.html"):
        (folder / extra).write_bytes(pickle.dumps(_Exploit()))
    assert gd.load_cifar10(folder).x_train.shape[0] == 20
    assert not (tmp_path / "pwned.txt").exists()

    outside = tmp_path / "elsewhere"
    outside.write_bytes((folder / "test_batch").read_bytes())
    (folder / "test_batch").unlink()
    try:
        (folder / "test_batch").symlink_to(outside)
    except OSError:
        pytest.skip("no symlinks here")
    with pytest.raises(gd.DatasetError, match="outside"):
        gd.load_cifar10(folder)
