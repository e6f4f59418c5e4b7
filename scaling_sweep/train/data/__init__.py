"""Dataset registry: data.name (or a user's `data._target_`) -> the training subset and test set, ready for the loop."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

import torch

from scaling_sweep.schema import DataOptions
from scaling_sweep.targets import Target
from scaling_sweep.train.data import cifar, digits, imagenet, mnist1d, user


class TrainData(Protocol):
    """What the training loop needs of a dataset (`memory.InMemoryData`, `imagenet.StreamedData`, `user.StreamedData`)."""

    n_train: int
    num_classes: int
    input_shape: tuple[int, ...]
    channels_last: bool

    def steps_per_epoch(self, batch_size: int) -> int: ...

    def train_batches(
        self, epoch_seed: int, batch_size: int, skip: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def eval_batches(self, split: str, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


DATASETS: dict[str, Callable[[DataOptions, torch.device], TrainData]] = {
    "mnist1d": mnist1d.load,
    "digits": digits.load,
    "cifar10": cifar.load_cifar10,
    "cifar100": cifar.load_cifar100,
    "imagenet": imagenet.load,
}


def load_dataset(opts: DataOptions, device: torch.device | str, target: Target | None = None) -> TrainData:
    """The training subset `opts` describes and the whole test set, on `device`; from the user's
    loader when `target` (the data section's `_target_`) is given."""
    if target is not None:
        return user.load(target, opts, torch.device(device))
    # The plan checked the options (schema.check_data): a KeyError here is a bug, not bad input.
    return DATASETS[opts.name](opts, torch.device(device))
