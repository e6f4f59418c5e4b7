"""A dataset held as tensors on the job's device: epoch plans, augmented training batches, eval batches (and the plumbing streamed datasets share)."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator, Sequence

import torch

from scaling_sweep.errors import ConfigError
from scaling_sweep.schema import DataOptions, steps_per_epoch
from scaling_sweep.train.augment import crop_flip, draw_params
from scaling_sweep.train.data.subsets import subset_indices

Batch = tuple[torch.Tensor, torch.Tensor]


def pixel_affine(
    mean: Sequence[float] | None, std: Sequence[float] | None, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(scale, shift) that turn uint8 pixels into normalised floats in one multiply-add, or None."""
    if mean is None or std is None:
        return None
    m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return 1.0 / (255.0 * s), -m / s


def prepare(
    x: torch.Tensor, affine: tuple[torch.Tensor, torch.Tensor] | None, channels_last: bool
) -> torch.Tensor:
    """A batch as the model eats it: normalised floats, channels-last for conv nets that want it."""
    if affine is not None:
        x = torch.addcmul(affine[1], x.float(), affine[0])
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def loader_workers(requested: int) -> int:
    """DataLoader workers for a streamed dataset: data.num_workers, at most one per CPU this process may
    use, and none inside a daemonic process (the local launcher's workers), which may not have children."""
    if multiprocessing.current_process().daemon:
        return 0
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cpus = os.cpu_count() or 1
    return max(0, min(requested, cpus))


def stream(dataset: object, batches: list, num_workers: int, device: torch.device) -> Iterator[Batch]:
    """A dataset read batch by batch (`batches`: lists of indices) through a DataLoader, onto `device`."""
    from torch.utils.data import DataLoader

    loader = DataLoader(
        dataset, batch_sampler=batches, num_workers=num_workers, pin_memory=device.type == "cuda"
    )
    for x, y in loader:
        yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def epoch_plan(
    n: int, epoch_seed: int, augment: bool
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None]:
    """One epoch's example order and, when augmenting, each example's crop offsets and flip.

    All drawn from one generator seeded by the caller, so any batch of any epoch can be rebuilt
    exactly (what an exact resume needs), whether the data is held in memory or streamed.
    """
    g = torch.Generator().manual_seed(epoch_seed)
    order = torch.randperm(n, generator=g)
    return order, (draw_params(n, g) if augment else None)


def check_augment(opts: DataOptions, x: torch.Tensor) -> None:
    """data.augment=true needs colour images: a uint8 batch (N, C, H, W)."""
    if opts.augment and (x.dim() != 4 or x.dtype != torch.uint8):
        raise ConfigError(
            f"data.augment=true: crop+flip is for colour images (cifar10, cifar100, imagenet), not {opts.name}"
        )


class InMemoryData:
    """Training subset and full test set on `device`; images stay uint8 until a batch is drawn.

    All randomness of an epoch (order, crop offsets, flips) comes from `epoch_plan`.
    """

    def __init__(
        self,
        train_x: torch.Tensor,
        train_y: torch.Tensor,
        test_x: torch.Tensor,
        test_y: torch.Tensor,
        num_classes: int,
        device: torch.device,
        *,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        augment: bool = False,
    ):
        self.device = device
        self.train_x, self.train_y = train_x.to(device), train_y.to(device)
        self.test_x, self.test_y = test_x.to(device), test_y.to(device)
        self.num_classes = num_classes
        self.input_shape = tuple(train_x.shape[1:])
        self.n_train = train_x.shape[0]
        self.augment = augment
        self.channels_last = False  # set by the trainer for conv nets where it pays off
        self._affine = pixel_affine(mean, std, device)

    def steps_per_epoch(self, batch_size: int) -> int:
        return steps_per_epoch(self.n_train, batch_size)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return prepare(x, self._affine, self.channels_last)

    def train_batches(self, epoch_seed: int, batch_size: int, skip: int = 0) -> Iterator[Batch]:
        """The epoch's batches in order, starting at batch `skip`."""
        order, crops = epoch_plan(self.n_train, epoch_seed, self.augment)
        order = order.to(self.device)
        if crops is not None:
            dy, dx, flip = (t.to(self.device) for t in crops)
        steps = self.steps_per_epoch(batch_size)
        for i in range(skip, steps):
            lo, hi = i * batch_size, min((i + 1) * batch_size, self.n_train)
            idx = order[lo:hi]
            x = self.train_x.index_select(0, idx)
            if self.augment:
                x = crop_flip(x, dy[lo:hi], dx[lo:hi], flip[lo:hi])
            yield self._prepare(x), self.train_y.index_select(0, idx)

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        """The whole split ("train" subset or "test"), unaugmented, in fixed order."""
        x, y = (self.train_x, self.train_y) if split == "train" else (self.test_x, self.test_y)
        for lo in range(0, x.shape[0], batch_size):
            yield self._prepare(x[lo : lo + batch_size]), y[lo : lo + batch_size]


def in_memory(
    opts: DataOptions,
    device: torch.device,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    num_classes: int,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> InMemoryData:
    """Cut the training subset `opts` asks for and place everything on `device`."""
    check_augment(opts, train_x)
    idx = subset_indices(
        train_y, opts.fraction, dataset=opts.name, data_seed=opts.data_seed, balanced=opts.balanced
    )
    return InMemoryData(
        train_x[idx],
        train_y[idx],
        test_x,
        test_y,
        num_classes,
        device,
        mean=mean,
        std=std,
        augment=opts.augment,
    )
