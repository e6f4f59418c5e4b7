"""Nested dataset fractions: fixed per (dataset, data_seed), prefixes of one permutation."""

import pytest
import torch

from scaling_sweep.errors import ConfigError
from scaling_sweep.train.data.subsets import subset_indices, subset_size


def _labels(n: int = 1000) -> torch.Tensor:
    return torch.arange(n) % 10


def test_quarter_subset_is_contained_in_half_subset():
    labels = _labels()
    quarter = subset_indices(labels, 0.25, dataset="mnist1d", data_seed=0)
    half = subset_indices(labels, 0.5, dataset="mnist1d", data_seed=0)
    assert len(quarter) == 250 and len(half) == 500
    assert set(quarter.tolist()) <= set(half.tolist())
    assert torch.equal(half[:250], quarter)


def test_subsets_depend_on_data_seed_and_dataset_but_are_reproducible():
    labels = _labels()
    a = subset_indices(labels, 0.1, dataset="mnist1d", data_seed=0)
    assert torch.equal(a, subset_indices(labels, 0.1, dataset="mnist1d", data_seed=0))
    assert not torch.equal(a, subset_indices(labels, 0.1, dataset="mnist1d", data_seed=1))
    assert not torch.equal(a, subset_indices(labels, 0.1, dataset="digits", data_seed=0))


def test_balanced_subsets_take_the_fraction_of_every_class_and_nest():
    labels = torch.cat([torch.zeros(700), torch.ones(200), torch.full((100,), 2.0)]).long()
    small = subset_indices(labels, 0.25, dataset="x", data_seed=3, balanced=True)
    large = subset_indices(labels, 0.5, dataset="x", data_seed=3, balanced=True)
    assert torch.bincount(labels[small]).tolist() == [175, 50, 25]
    assert torch.bincount(labels[large]).tolist() == [350, 100, 50]
    assert set(small.tolist()) <= set(large.tolist())


def test_subset_size_is_ceil_without_float_noise():
    assert subset_size(4000, 0.1) == 400  # 0.1 * 4000 is 400.00000000000006 in floats
    assert subset_size(4000, 0.0001) == 1
    assert subset_size(10, 0.25) == 3
    assert subset_size(10, 1.0) == 10


def test_a_fraction_cuts_examples_never_the_targets_of_one():
    per_token = torch.zeros(1000, 32, dtype=torch.long)  # 1000 examples of 32 targets each
    half = subset_indices(per_token, 0.5, dataset="text", data_seed=0)
    assert len(half) == 500 and int(half.max()) < 1000
    assert torch.equal(half, subset_indices(1000, 0.5, dataset="text", data_seed=0))  # or just the count


def test_balanced_subsets_need_one_label_per_example():
    with pytest.raises(
        ConfigError, match=r"^data.balanced=true: text has targets of shape \(32,\) per example"
    ):
        subset_indices(
            torch.zeros(100, 32, dtype=torch.long), 0.5, dataset="text", data_seed=0, balanced=True
        )
