"""A user's own data (`data._target_`): its (train, test) datasets, held on the device when they fit, else streamed."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from functools import cache
from typing import Any

import torch
from torch.utils.data import DataLoader

from scaling_sweep.errors import ConfigError
from scaling_sweep.schema import DataOptions
from scaling_sweep.targets import Target, resolve
from scaling_sweep.train.augment import crop_flip
from scaling_sweep.train.data.memory import (
    Batch,
    InMemoryData,
    check_augment,
    epoch_plan,
    in_memory,
    loader_workers,
    prepare,
    steps_per_epoch,
    stream,
)
from scaling_sweep.train.data.subsets import subset_indices
from scaling_sweep.train.seeds import derive_seed

# A user's datasets are collated into tensors on the device when the estimate (the first example's
# bytes x every example) is at most min(4 GiB, a quarter of physical memory), else streamed through
# a DataLoader. This environment variable sets that limit in bytes instead (0 always streams).
MEMORY_LIMIT_ENV = "SCALING_SWEEP_MEMORY_LIMIT_BYTES"
DEFAULT_MEMORY_LIMIT = 4 << 30
READ_BATCH = 1024  # examples per DataLoader batch when collating a dataset or reading its targets


def memory_limit() -> int:
    """Bytes a user's dataset may take in memory: $SCALING_SWEEP_MEMORY_LIMIT_BYTES, else min(4 GiB, RAM / 4)."""
    value = os.environ.get(MEMORY_LIMIT_ENV)
    if value is not None:
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{MEMORY_LIMIT_ENV}={value!r}: must be a whole number of bytes") from None
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # a platform that does not say: the fixed cap alone
        return DEFAULT_MEMORY_LIMIT
    return min(DEFAULT_MEMORY_LIMIT, physical // 4)


def load(target: Target, opts: DataOptions, device: torch.device) -> InMemoryData | StreamedData:
    """`train, test = <data._target_>(**its keywords)`, cut to the training subset `opts` asks for.

    Both paths give the same batches, so a job's numbers do not depend on which one it took.
    """
    train, test = datasets(target, opts)
    x, y = first_example(target, "train", train)
    first_example(target, "test", test)
    if (x.nbytes + y.nbytes) * (len(train) + len(test)) > memory_limit():
        return StreamedData(target, train, test, opts, device)
    workers = loader_workers(opts.num_workers)
    train_x, train_y = collate(train, workers)
    test_x, test_y = collate(test, workers)
    classes = num_classes(target, train, lambda: (train_y, test_y))
    return in_memory(opts, device, train_x, train_y, test_x, test_y, classes)


def datasets(target: Target, opts: DataOptions) -> tuple[Any, Any]:
    """Call the loader and check that it returned two non-empty map-style datasets.

    It runs under a torch seed fixed by the dataset and data_seed, so a loader that draws from torch's
    global generator (random_split without a generator) gives every job of a sweep the same data.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed("user-data", opts.name, int(opts.data_seed)))
        out = resolve(target)(**target.kwargs)
    where = f"data._target_={target.path}"
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        got = f"{type(out).__name__} of {len(out)}" if isinstance(out, (tuple, list)) else type(out).__name__
        raise ConfigError(
            f"{where}: returned {got}; a data loader returns (train, test), two map-style datasets"
        )
    for split, dataset in zip(("train", "test"), out):
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise ConfigError(
                f"{where}: its {split} set ({type(dataset).__name__}) is not a map-style dataset "
                f"(__len__, and __getitem__ returning (x, y))"
            )
        if len(dataset) == 0:
            raise ConfigError(f"{where}: its {split} set is empty")
    return out[0], out[1]


def first_example(target: Target, split: str, dataset: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """dataset[0] as tensors (what the size estimate and the model's input shape come from)."""
    item = dataset[0]
    where = f"data._target_={target.path}: {split}[0]"
    if not (isinstance(item, (tuple, list)) and len(item) == 2):
        raise ConfigError(f"{where} ({type(item).__name__}) is not a pair (x, y)")
    try:
        return torch.as_tensor(item[0]), torch.as_tensor(item[1])
    except (TypeError, ValueError, RuntimeError):
        kinds = ", ".join(type(v).__name__ for v in item)
        raise ConfigError(f"{where} is ({kinds}); x and y must be tensors, arrays or numbers") from None


def _batches(dataset: Any, num_workers: int) -> DataLoader:
    return DataLoader(dataset, batch_size=READ_BATCH, num_workers=num_workers)


def collate(dataset: Any, num_workers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole dataset as (x, y) tensors in index order, collated as a DataLoader batch is."""
    xs, ys = zip(*_batches(dataset, num_workers))
    return torch.cat(xs), torch.cat(ys)


def targets_of(dataset: Any, num_workers: int) -> torch.Tensor:
    """Every example's y, in index order (one pass over the dataset)."""
    return torch.cat([y for _, y in _batches(dataset, num_workers)])


def num_classes(target: Target, train: Any, targets: Callable[[], tuple[torch.Tensor, torch.Tensor]]) -> int:
    """`train.num_classes`, else `len(train.classes)`, else the largest integer target of train and test + 1."""
    n = getattr(train, "num_classes", None)
    if n is not None:
        return int(n)
    classes = getattr(train, "classes", None)
    if classes is not None:
        return len(classes)
    train_y, test_y = targets()
    if train_y.is_floating_point() or train_y.is_complex():
        raise ConfigError(
            f"data._target_={target.path}: its targets are {train_y.dtype}, so the number of classes is "
            f"unknown; give the training set a num_classes attribute"
        )
    return int(max(train_y.max(), test_y.max())) + 1


class StreamedData:
    """A user's datasets read batch by batch through a DataLoader (data.num_workers workers).

    The epoch order and augmentation come from `epoch_plan`, as in `InMemoryData`, so a streamed
    job trains on exactly the batches an in-memory one would. There are no per-example seeds: a
    user's dataset must return the same (x, y) for an index every time (no random transforms
    inside it), or a resumed job would not replay its batches.
    """

    def __init__(self, target: Target, train: Any, test: Any, opts: DataOptions, device: torch.device):
        x, _ = first_example(target, "train", train)
        check_augment(opts, x.unsqueeze(0))
        self.num_workers = loader_workers(opts.num_workers)
        # Read every target once, and only if a balanced subset or the number of classes needs them.
        read = cache(lambda: (targets_of(train, self.num_workers), targets_of(test, self.num_workers)))
        self.subset = subset_indices(
            read()[0] if opts.balanced else len(train),
            opts.fraction,
            dataset=opts.name,
            data_seed=opts.data_seed,
            balanced=opts.balanced,
        )
        self.train, self.test = train, test
        self.device = device
        self.augment = opts.augment
        self.num_classes = num_classes(target, train, read)
        self.input_shape = tuple(x.shape)
        self.n_train = len(self.subset)
        self.channels_last = False  # set by the trainer for conv nets where it pays off

    def steps_per_epoch(self, batch_size: int) -> int:
        return steps_per_epoch(self.n_train, batch_size)

    def _stream(self, dataset: Any, batches: list[list[int]]) -> Iterator[Batch]:
        return stream(dataset, batches, self.num_workers, self.device)

    def train_batches(self, epoch_seed: int, batch_size: int, skip: int = 0) -> Iterator[Batch]:
        """The epoch's batches in order, starting at batch `skip`."""
        order, crops = epoch_plan(self.n_train, epoch_seed, self.augment)
        examples = self.subset[order]
        spans = [
            (i * batch_size, min((i + 1) * batch_size, self.n_train))
            for i in range(skip, self.steps_per_epoch(batch_size))
        ]
        batches = self._stream(self.train, [examples[lo:hi].tolist() for lo, hi in spans])
        for (lo, hi), (x, y) in zip(spans, batches):
            if crops is not None:
                x = crop_flip(x, *(t[lo:hi].to(self.device) for t in crops))
            yield prepare(x, None, self.channels_last), y

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        """The whole split ("train" subset or "test"), unaugmented, in fixed order."""
        if split == "train":
            dataset, indices = self.train, self.subset.tolist()
        else:
            dataset, indices = self.test, list(range(len(self.test)))
        batches = [indices[lo : lo + batch_size] for lo in range(0, len(indices), batch_size)]
        return ((prepare(x, None, self.channels_last), y) for x, y in self._stream(dataset, batches))
