"""Nested dataset fractions: fixed per (dataset, data_seed), prefixes of one permutation."""

import torch

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
