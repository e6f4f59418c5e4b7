"""scikit-learn's 8x8 digits (shipped in its wheel): a second tiny real dataset, for smoke tests."""

from __future__ import annotations

import torch

from scaling_sweep.schema import DataOptions
from scaling_sweep.train.data.memory import InMemoryData, in_memory
from scaling_sweep.train.seeds import derive_seed

TEST_SIZE = 360  # of 1797: a fixed 80/20 split (the dataset has no official one)


def load(opts: DataOptions, device: torch.device) -> InMemoryData:
    from sklearn.datasets import load_digits  # only when a job uses it

    d = load_digits()
    x = torch.as_tensor(d.data, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0
    y = torch.as_tensor(d.target, dtype=torch.int64)
    split = torch.randperm(len(y), generator=torch.Generator().manual_seed(derive_seed("digits-split")))
    test, train = split[:TEST_SIZE], split[TEST_SIZE:]
    mean, std = x[train].mean(), x[train].std()
    x = (x - mean) / std
    return in_memory(opts, device, x[train], y[train], x[test], y[test], 10)
