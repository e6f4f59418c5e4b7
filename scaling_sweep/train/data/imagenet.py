"""ImageNet from an ImageFolder root (root/train, root/val), streamed through a DataLoader (too big for memory)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import Dataset

from scaling_sweep.errors import ConfigError
from scaling_sweep.schema import DataOptions
from scaling_sweep.train.data.memory import (
    Batch,
    loader_workers,
    pixel_affine,
    prepare,
    steps_per_epoch,
    stream,
)
from scaling_sweep.train.data.subsets import subset_indices

IMAGE_SIZE = 224
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TRAIN_EVAL_MAX = 50_000  # train metrics of a streamed set: on this many examples of the subset


class SeededImages(Dataset):
    """An ImageFolder whose items are (index, seed): each example's augmentation is drawn under its own
    seed, so an epoch is the same whichever worker decodes it and wherever a resume restarts it."""

    def __init__(self, folder, transform):
        self.folder, self.transform = folder, transform

    def __len__(self) -> int:
        return len(self.folder.samples)

    def __getitem__(self, item: tuple[int, int | None]):
        index, seed = item
        path, label = self.folder.samples[index]
        image = self.folder.loader(path)
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            return self.transform(image), label


class StreamedData:
    """Training subset and validation set read from disk batch by batch; pixels become floats on the device."""

    def __init__(self, opts: DataOptions, device: torch.device):
        from torchvision import datasets, transforms  # only jobs that stream images pay its import

        root = Path(opts.root or "").expanduser()
        for split in ("train", "val"):
            if not (root / split).is_dir():
                raise ConfigError(
                    f"data.root={opts.root}: expected an ImageFolder tree at {root / split} (one folder per class)"
                )
        t = transforms
        to_uint8 = t.PILToTensor()  # normalising happens on the device, on uint8 batches
        center = [t.Resize(IMAGE_SIZE * 8 // 7), t.CenterCrop(IMAGE_SIZE), to_uint8]
        augmented = [t.RandomResizedCrop(IMAGE_SIZE), t.RandomHorizontalFlip(), to_uint8]
        train = datasets.ImageFolder(str(root / "train"))
        val = datasets.ImageFolder(str(root / "val"))
        self.train = SeededImages(train, t.Compose(augmented if opts.augment else center))
        self.train_eval = SeededImages(train, t.Compose(center))
        self.val = SeededImages(val, t.Compose(center))
        self.subset = subset_indices(
            torch.as_tensor(train.targets),
            opts.fraction,
            dataset=opts.name,
            data_seed=opts.data_seed,
            balanced=opts.balanced,
        )
        self.device = device
        self.num_workers = loader_workers(opts.num_workers)
        self.num_classes = len(train.classes)
        self.input_shape = (3, IMAGE_SIZE, IMAGE_SIZE)
        self.n_train = len(self.subset)
        self.channels_last = False
        self._affine = pixel_affine(MEAN, STD, device)

    def steps_per_epoch(self, batch_size: int) -> int:
        return steps_per_epoch(self.n_train, batch_size)

    def _stream(self, dataset: SeededImages, batches: list[list[tuple[int, int | None]]]) -> Iterator[Batch]:
        for x, y in stream(dataset, batches, self.num_workers, self.device):
            yield prepare(x, self._affine, self.channels_last), y

    def train_batches(self, epoch_seed: int, batch_size: int, skip: int = 0) -> Iterator[Batch]:
        order = torch.randperm(self.n_train, generator=torch.Generator().manual_seed(epoch_seed))
        examples = self.subset[order].tolist()
        batches = []
        for i in range(skip, self.steps_per_epoch(batch_size)):
            lo, hi = i * batch_size, min((i + 1) * batch_size, self.n_train)
            batches.append([(examples[j], (epoch_seed + j) % (1 << 63)) for j in range(lo, hi)])
        return self._stream(self.train, batches)

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        if split == "train":
            dataset, indices = self.train_eval, self.subset[:TRAIN_EVAL_MAX].tolist()
        else:
            dataset, indices = self.val, list(range(len(self.val)))
        items = [(i, None) for i in indices]
        return self._stream(dataset, [items[lo : lo + batch_size] for lo in range(0, len(items), batch_size)])


def load(opts: DataOptions, device: torch.device) -> StreamedData:
    return StreamedData(opts, device)
