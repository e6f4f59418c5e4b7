"""CIFAR-10/100 in the standard python-pickle layout: read from data.root (no md5 gate, no download), and written."""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import numpy as np
import torch

from scaling_sweep.errors import ConfigError
from scaling_sweep.schema import DataOptions
from scaling_sweep.train.data.memory import InMemoryData, in_memory

# name -> (folder inside the archive, training files, test file, label key, classes, mean, std)
LAYOUTS = {
    "cifar10": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        "test_batch",
        b"labels",
        10,
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
    ),
    "cifar100": (
        "cifar-100-python",
        ["train"],
        "test",
        b"fine_labels",
        100,
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
    ),
}


def find_folder(name: str, root: str | os.PathLike | None) -> Path:
    """The folder holding the batch files: `root/<archive folder>` or `root` itself."""
    folder, train_files, test_file = LAYOUTS[name][:3]
    base = Path(root or "").expanduser()  # the plan refused an unset root (schema.check_data)
    for candidate in (base / folder, base):
        if all((candidate / f).is_file() for f in [*train_files, test_file]):
            return candidate
    raise ConfigError(
        f"data.root={root}: no {name} python batches found; expected {base / folder / train_files[0]} "
        f"... and {test_file} (the extracted 'python version' archive)"
    )


def _read_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    # Rows are 3072 bytes: the red, green and blue 32x32 planes, each row-major (CHW).
    x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return x, np.asarray(d[label_key], dtype=np.int64)


def read(
    name: str, root: str | os.PathLike | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train_x uint8 N x 3 x 32 x 32, train_y, test_x, test_y) from the local copy."""
    folder = find_folder(name, root)
    _, train_files, test_file, label_key = LAYOUTS[name][:4]
    parts = [_read_batch(folder / f, label_key) for f in train_files]
    test_x, test_y = _read_batch(folder / test_file, label_key)
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    return (
        torch.from_numpy(train_x),
        torch.from_numpy(train_y),
        torch.from_numpy(test_x),
        torch.from_numpy(test_y),
    )


def _load(name: str, opts: DataOptions, device: torch.device) -> InMemoryData:
    num_classes, mean, std = LAYOUTS[name][4:]
    return in_memory(opts, device, *read(name, opts.root), num_classes, mean=mean, std=std)


def load_cifar10(opts: DataOptions, device: torch.device) -> InMemoryData:
    return _load("cifar10", opts, device)


def load_cifar100(opts: DataOptions, device: torch.device) -> InMemoryData:
    return _load("cifar100", opts, device)


class _Python2Pickler(pickle._Pickler):
    """Pickles bytes as Python 2 pickled `str` (BINSTRING), which is what the published files hold: their
    keys load as b"data" with encoding="bytes" and as "data" with encoding="latin1" (torchvision's way)."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_python2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_python2_str


def _write(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        _Python2Pickler(f, protocol=2).dump(obj)


def write_folder(
    root: str | os.PathLike,
    name: str,
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
) -> Path:
    """Write uint8 (N, 3, 32, 32) images and labels as `root/<archive folder>` in the published layout
    (for tests and benchmarks: a real-format copy without the real data)."""
    folder, train_files, test_file, label_key, num_classes = LAYOUTS[name][:5]
    out = Path(root) / folder
    out.mkdir(parents=True, exist_ok=True)

    def batch(x: np.ndarray, y: np.ndarray, label: str) -> dict:
        d = {
            b"batch_label": label.encode(),
            label_key: [int(v) for v in y],
            b"data": np.ascontiguousarray(x, dtype=np.uint8).reshape(len(x), 3 * 32 * 32),
            b"filenames": [f"img_{i}.png".encode() for i in range(len(x))],
        }
        if name == "cifar100":
            d[b"coarse_labels"] = [int(v) // 5 for v in y]
        return d

    for i, (xs, ys) in enumerate(
        zip(np.array_split(train_x, len(train_files)), np.array_split(train_y, len(train_files)))
    ):
        _write(out / train_files[i], batch(xs, ys, f"training batch {i + 1}"))
    _write(out / test_file, batch(test_x, test_y, "testing batch 1"))
    names = [f"class_{c}".encode() for c in range(num_classes)]
    if name == "cifar10":
        _write(
            out / "batches.meta",
            {
                b"num_cases_per_batch": len(train_x) // len(train_files),
                b"label_names": names,
                b"num_vis": 3072,
            },
        )
    else:
        _write(
            out / "meta",
            {b"fine_label_names": names, b"coarse_label_names": [f"super_{c}".encode() for c in range(20)]},
        )
    return out
