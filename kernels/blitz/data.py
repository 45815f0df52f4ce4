"""Data for the blitz classifier: scikit-learn's digits, embedded (the default), or CIFAR-10 from a local folder.

**Digits** (``load_digits``): the 1797 8x8 grey images (values 0..16) that ship inside scikit-learn, so
nothing is downloaded. Each is scaled to [0, 1], upscaled to 32x32 by bilinear interpolation with
half-pixel centres (the rule of ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``,
written here in NumPy as ``A @ img @ A.T`` with a fixed 32x8 interpolation matrix ``A``), replicated to
3 channels and normalised with the training split's mean and standard deviation. The train/test split
is fixed: a stratified 80/20 split drawn once with :data:`SPLIT_SEED` (1438 train, 359 test images),
the same on every machine and independent of the training seed.

**CIFAR-10** (``load_cifar10(folder)``): the "python version" of the dataset, as unpacked from
``cifar-10-python.tar.gz``: ``data_batch_1`` .. ``data_batch_5`` and ``test_batch`` in the folder the
user names. Only those six files, directly inside that folder, are ever opened, and they are
unpickled with an unpickler that can build nothing but dicts, lists, bytes, strings, numbers and
NumPy arrays (a pickle that names any other callable is rejected). Pixels are scaled to [0, 1] and
normalised per channel with the training set's mean and standard deviation.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_FILES",
    "SPLIT_SEED",
    "Dataset",
    "DatasetError",
    "bilinear_matrix",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "upscale",
]

#: Seed of the fixed digits train/test split (never the training seed: the split must not move).
SPLIT_SEED = 20240601
#: Fraction of each digit class held out for testing.
TEST_FRACTION = 0.2
#: The files of CIFAR-10's python version; nothing else in the folder is read.
CIFAR10_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_CIFAR_PIXELS = 3 * 32 * 32


class DatasetError(ValueError):
    """A dataset folder that is missing, incomplete or malformed."""


@dataclass(frozen=True)
class Dataset:
    """Images as float32 (N, 3, 32, 32) CPU tensors, labels as int64 (N,)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[str, ...]
    description: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def summary(self) -> dict:
        return {
            "name": self.name,
            "train": len(self.y_train),
            "test": len(self.y_test),
            "classes": list(self.classes),
            "description": self.description,
        }


# ---------------------------------------------------------------------------------------------
# Digits
# ---------------------------------------------------------------------------------------------


def bilinear_matrix(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) matrix of 1-D linear interpolation with half-pixel centres, sources
    clamped at the border: the weights of ``interpolate(mode="bilinear", align_corners=False)``."""
    a = np.zeros((size_out, size_in))
    scale = size_in / size_out
    for o in range(size_out):
        src = max((o + 0.5) * scale - 0.5, 0.0)  # torch clamps negative source coordinates to 0
        i0 = min(int(np.floor(src)), size_in - 1)
        i1 = min(i0 + 1, size_in - 1)
        w1 = src - i0
        a[o, i0] += 1.0 - w1
        a[o, i1] += w1
    return a


def upscale(images: np.ndarray, size: int = 32) -> np.ndarray:
    """(N, h, w) images to (N, size, size) by bilinear interpolation with half-pixel centres."""
    a = bilinear_matrix(images.shape[1], size)  # (size, h)
    b = bilinear_matrix(images.shape[2], size)  # (size, w)
    return np.einsum("oi,nij,pj->nop", a, images, b)  # A @ img @ B.T per image


def _stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = round(test_fraction * len(idx))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    # Interleave classes within each split by a second seeded shuffle (the trainer reshuffles anyway).
    train_idx, test_idx = np.concatenate(train), np.concatenate(test)
    return rng.permutation(train_idx), rng.permutation(test_idx)


def load_digits() -> Dataset:
    """scikit-learn's digits at 3x32x32, with the fixed stratified split (see the module docstring)."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the digits dataset comes with scikit-learn; install it (pip install 'gradcheck-kernels[train]' "
            "or pip install scikit-learn)"
        ) from e
    bunch = sk_load_digits()
    images = bunch.images.astype(np.float64) / 16.0  # (1797, 8, 8) in [0, 1]
    labels = bunch.target.astype(np.int64)
    up = upscale(images, 32)  # (1797, 32, 32)
    train_idx, test_idx = _stratified_split(labels, TEST_FRACTION, SPLIT_SEED)
    mean, std = up[train_idx].mean(), up[train_idx].std()
    up = (up - mean) / std
    x = np.repeat(up[:, None], 3, axis=1).astype(np.float32)  # (1797, 3, 32, 32)
    return Dataset(
        name="digits",
        x_train=torch.from_numpy(x[train_idx]),
        y_train=torch.from_numpy(labels[train_idx]),
        x_test=torch.from_numpy(x[test_idx]),
        y_test=torch.from_numpy(labels[test_idx]),
        classes=tuple(str(d) for d in range(10)),
        description=(
            "scikit-learn digits (1797 8x8 images), bilinear upscale to 32x32 (half-pixel centres), "
            f"3 channels, normalised with train mean {mean:.4f} / std {std:.4f}; "
            f"fixed stratified split (seed {SPLIT_SEED}, {TEST_FRACTION:.0%} test)"
        ),
    )


# ---------------------------------------------------------------------------------------------
# CIFAR-10
# ---------------------------------------------------------------------------------------------

# What a CIFAR batch pickle may construct: NumPy arrays (the ways numpy 1.x and 2.x pickle them) and
# the codec Python 3 uses for bytes at protocol 2. Anything else means the file is not a CIFAR batch.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR-10 batch holds only arrays")
        return super().find_class(module, name)


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3072) uint8 pixels and (N,) int64 labels of one batch file; DatasetError if malformed."""
    try:
        raw = path.read_bytes()
        batch = _BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError) as e:
        raise DatasetError(f"{path} is not a CIFAR-10 python batch (unpickling failed: {e})") from e
    if not isinstance(batch, dict):
        raise DatasetError(f"{path} is not a CIFAR-10 python batch: it holds a {type(batch).__name__}, not a dict")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise DatasetError(f"{path} is not a CIFAR-10 python batch: keys {sorted(map(str, batch))} lack data/labels")
    data, labels = batch["data"], batch["labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _CIFAR_PIXELS:
        what = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetError(f"{path}: 'data' must be a uint8 array of shape (N, {_CIFAR_PIXELS}), got {what}")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as e:
        raise DatasetError(f"{path}: 'labels' must be a list of ints ({e})") from e
    if labels.shape != (data.shape[0],):
        raise DatasetError(f"{path}: {data.shape[0]} images but labels of shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= len(CIFAR10_CLASSES)):
        raise DatasetError(f"{path}: labels must lie in 0..9, found {labels.min()}..{labels.max()}")
    return data, labels


def load_cifar10(folder: str | Path) -> Dataset:
    """CIFAR-10 from ``folder`` holding ``data_batch_1..5`` and ``test_batch`` (python pickle format)."""
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise DatasetError(f"data folder {folder} does not exist")
    if not folder.is_dir():
        raise DatasetError(f"data folder {folder} is not a directory")
    root = folder.resolve()
    missing = [name for name in CIFAR10_FILES if not (folder / name).is_file()]
    if missing:
        hint = ""
        if (folder / "cifar-10-batches-py").is_dir():
            hint = f"; the batches seem to be in {folder / 'cifar-10-batches-py'}: pass that folder"
        raise DatasetError(
            f"{folder} is not a CIFAR-10 python folder: missing {', '.join(missing)} "
            f"(expected {', '.join(CIFAR10_FILES)}, as unpacked from cifar-10-python.tar.gz){hint}"
        )
    parts = {}
    for name in CIFAR10_FILES:
        path = folder / name
        # Never follow a link out of the named folder: the file must really live in it.
        if path.resolve().parent != root:
            raise DatasetError(f"{path} points outside {folder} (to {path.resolve()}); refusing to read it")
        parts[name] = _read_batch(path)
    x_train = np.concatenate([parts[f"data_batch_{i}"][0] for i in range(1, 6)])
    y_train = np.concatenate([parts[f"data_batch_{i}"][1] for i in range(1, 6)])
    x_test, y_test = parts["test_batch"]
    x_train = x_train.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0  # CIFAR rows are R plane, G, B
    x_test = x_test.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0
    mean = x_train.mean(axis=(0, 2, 3), dtype=np.float64).astype(np.float32)[None, :, None, None]
    std = x_train.std(axis=(0, 2, 3), dtype=np.float64).astype(np.float32)[None, :, None, None]
    std[std == 0] = 1.0
    return Dataset(
        name="cifar10",
        x_train=torch.from_numpy((x_train - mean) / std),
        y_train=torch.from_numpy(y_train),
        x_test=torch.from_numpy((x_test - mean) / std),
        y_test=torch.from_numpy(y_test),
        classes=CIFAR10_CLASSES,
        description=f"CIFAR-10 from {folder}, normalised per channel with the training set's mean and std",
    )


def load_dataset(data_dir: str | Path | None = None) -> Dataset:
    """Digits when ``data_dir`` is None, else CIFAR-10 from ``data_dir``."""
    return load_digits() if data_dir is None else load_cifar10(data_dir)
