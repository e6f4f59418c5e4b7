"""CIFAR read from a folder in the published python-pickle layout; a missing root is a one-line error."""

import numpy as np
import pytest
import torch

from scaling_sweep.errors import ConfigError
from scaling_sweep.schema import DataOptions
from scaling_sweep.train.data import load_dataset
from scaling_sweep.train.data.cifar import read, write_folder


def test_reader_returns_the_pixels_and_labels_written_in_the_real_layout(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (60, 3, 32, 32), dtype=np.uint8)
    y = rng.integers(0, 10, 60)
    folder = write_folder(tmp_path, "cifar10", x[:50], y[:50], x[50:], y[50:])
    assert sorted(p.name for p in folder.iterdir()) == [
        "batches.meta",
        "data_batch_1",
        "data_batch_2",
        "data_batch_3",
        "data_batch_4",
        "data_batch_5",
        "test_batch",
    ]
    train_x, train_y, test_x, test_y = read("cifar10", tmp_path)
    assert train_x.dtype == torch.uint8 and train_x.shape == (50, 3, 32, 32)
    assert np.array_equal(train_x.numpy(), x[:50]) and np.array_equal(train_y.numpy(), y[:50])
    assert np.array_equal(test_x.numpy(), x[50:]) and np.array_equal(test_y.numpy(), y[50:])
    # data.root may also point at the archive folder itself.
    assert torch.equal(read("cifar10", folder)[0], train_x)


def test_written_batches_hold_python2_string_keys_like_the_published_files(cifar_root):
    import pickle

    with open(cifar_root / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        assert set(pickle.load(f, encoding="latin1")) >= {"data", "labels"}
    with open(cifar_root / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        assert set(pickle.load(f, encoding="bytes")) >= {b"data", b"labels"}


def test_cifar100_uses_fine_labels(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (30, 3, 32, 32), dtype=np.uint8)
    y = rng.integers(0, 100, 30)
    write_folder(tmp_path, "cifar100", x[:20], y[:20], x[20:], y[20:])
    data = load_dataset(DataOptions(name="cifar100", root=str(tmp_path)), "cpu")
    assert data.num_classes == 100 and data.n_train == 20
    assert set(data.test_y.tolist()) == set(y[20:].tolist())


def test_missing_root_gives_one_line_error_naming_the_expected_path(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_dataset(DataOptions(name="cifar10", root=str(tmp_path)), "cpu")
    message = str(err.value)
    assert "\n" not in message
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_1") in message


def test_unset_root_names_the_option():
    with pytest.raises(ConfigError, match="data.root"):
        load_dataset(DataOptions(name="cifar10"), "cpu")


def test_loaded_cifar_keeps_uint8_on_device_and_yields_normalised_augmented_batches(cifar_root):
    data = load_dataset(DataOptions(name="cifar10", root=str(cifar_root), fraction=0.5, augment=True), "cpu")
    assert data.train_x.dtype == torch.uint8 and data.n_train == 100
    batches = list(data.train_batches(epoch_seed=7, batch_size=32))
    assert [len(y) for _, y in batches] == [32, 32, 32, 4]
    x, _ = batches[0]
    assert x.dtype == torch.float32 and x.shape == (32, 3, 32, 32)
    assert -3 < float(x.min()) and float(x.max()) < 3
    # The same seed rebuilds the same epoch, from any batch on.
    again = list(data.train_batches(epoch_seed=7, batch_size=32, skip=2))
    assert torch.equal(again[0][0], batches[2][0]) and torch.equal(again[1][1], batches[3][1])
