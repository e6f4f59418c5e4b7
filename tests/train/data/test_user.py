"""A user's own datasets (data._target_): the memory rule, where num_classes comes from, streamed batches equal to in-memory ones."""

import pytest
import torch

from scaling_sweep import schema, targets
from scaling_sweep.errors import ConfigError
from scaling_sweep.train.data import load_dataset
from scaling_sweep.train.data.memory import InMemoryData
from scaling_sweep.train.data.user import DEFAULT_MEMORY_LIMIT, MEMORY_LIMIT_ENV, StreamedData, memory_limit

SOURCE = """
import torch
from torch.utils.data import Dataset, TensorDataset


class Images(Dataset):
    classes = ["a", "b", "c"]

    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8)
        self.y = torch.randint(0, 3, (n,), generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def images(n=50):
    return Images(n, 0), Images(20, 1)


def tensors(n=40):
    x = torch.randn(n + 10, 5, generator=torch.Generator().manual_seed(0))
    train_y = torch.arange(n) % 5
    test_y = torch.full((10,), 6)  # a label the training set lacks: still a class
    return TensorDataset(x[:n], train_y), TensorDataset(x[n:], test_y)


def regression():
    x = torch.randn(10, 2)
    return TensorDataset(x, x.sum(1)), TensorDataset(x, x.sum(1))
"""


def _load(section: dict):
    config = {"data": schema.normalize("data", section)}
    opts = schema.parse_config(config).data
    return load_dataset(opts, "cpu", targets.find(config)["data"])


def _same(a, b) -> bool:
    a, b = list(a), list(b)
    return len(a) == len(b) and all(torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in zip(a, b))


def test_memory_limit_is_capped_and_overridden_by_the_environment(monkeypatch):
    monkeypatch.delenv(MEMORY_LIMIT_ENV, raising=False)
    assert 0 < memory_limit() <= DEFAULT_MEMORY_LIMIT == 4 << 30
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "1234")
    assert memory_limit() == 1234
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "4GB")
    with pytest.raises(ConfigError, match=rf"^{MEMORY_LIMIT_ENV}='4GB': must be a whole number of bytes$"):
        memory_limit()


def test_num_classes_from_the_attribute_the_classes_or_the_largest_label(user_module, monkeypatch):
    user_module("user_data", SOURCE)
    monkeypatch.delenv(MEMORY_LIMIT_ENV, raising=False)
    assert _load({"_target_": "user_data.images"}).num_classes == 3  # len(train.classes)
    data = _load({"_target_": "user_data.tensors"})
    assert isinstance(data, InMemoryData) and data.num_classes == 7  # largest label over train and test, + 1
    assert (data.n_train, data.input_shape) == (40, (5,))
    with pytest.raises(
        ConfigError, match=r"^data._target_=user_data.regression: its targets are torch.float32"
    ):
        _load({"_target_": "user_data.regression"})


@pytest.mark.parametrize("augment", [False, True])
def test_streamed_batches_equal_the_in_memory_ones(user_module, monkeypatch, augment):
    user_module("user_data", SOURCE)
    section = {"_target_": "user_data.images", "fraction": 0.5, "augment": augment, "num_workers": 0}
    monkeypatch.delenv(MEMORY_LIMIT_ENV, raising=False)
    held = _load(section)
    monkeypatch.setenv(MEMORY_LIMIT_ENV, str(50 * (3 * 64 + 8)))  # the training set alone fills it
    streamed = _load(section)
    assert isinstance(held, InMemoryData) and isinstance(streamed, StreamedData)
    for attr in ("n_train", "num_classes", "input_shape"):
        assert getattr(held, attr) == getattr(streamed, attr), attr
    assert held.n_train == 25  # a fraction of the examples
    for skip in (0, 2):
        assert _same(held.train_batches(7, 8, skip), streamed.train_batches(7, 8, skip))
    assert not _same(held.train_batches(7, 8), held.train_batches(8, 8))
    for split in ("train", "test"):
        assert _same(held.eval_batches(split, 6), streamed.eval_batches(split, 6))
    if not augment:  # DataLoader workers (an execution setting) read the same batches
        monkeypatch.setenv(MEMORY_LIMIT_ENV, "0")
        workers = _load({**section, "num_workers": 2})
        assert isinstance(workers, StreamedData) and workers.num_workers == 2
        assert _same(held.train_batches(7, 8, 1), workers.train_batches(7, 8, 1))


def test_augmenting_data_that_are_not_colour_images_fails_in_one_line(user_module, monkeypatch):
    user_module("user_data", SOURCE)
    for limit in ("1000000", "0"):
        monkeypatch.setenv(MEMORY_LIMIT_ENV, limit)
        with pytest.raises(
            ConfigError, match=r"^data.augment=true: crop\+flip is for colour images .* not tensors$"
        ):
            _load({"_target_": "user_data.tensors", "augment": True})
