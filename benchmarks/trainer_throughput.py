"""Training images/s of the trainer's data path against a plain torchvision Dataset + DataLoader loop.

Both train the same CIFAR-shaped model (cifar_resnet, depth 20 unless told) at the same batch size
on the same real-format CIFAR-10 folder (random pixels, written to a temporary directory), in one
process, after a warm-up. The baseline is torchvision's CIFAR10 dataset with RandomCrop(32, pad 4),
RandomHorizontalFlip, ToTensor, Normalize, a shuffling DataLoader and torch.optim.SGD; it is timed
with each worker count asked for and the best one counts. The trainer's path is the real
`loop.train_steps`: uint8 tensors on the device, crop+flip per batch, its SGD, mask re-application.
The paths alternate over several rounds and each counts by its median, so drift in a shared
machine's speed does not pick the winner.

    python benchmarks/trainer_throughput.py                 # widths 1 and 0.25
    python benchmarks/trainer_throughput.py --widths 1 2 --steps 40
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

from scaling_sweep.schema import DataOptions, JobOptions, ModelOptions, PruneOptions, TrainOptions
from scaling_sweep.train.data.cifar import LAYOUTS, load_cifar10, write_folder
from scaling_sweep.train.imp import build
from scaling_sweep.train.loop import train_steps
from scaling_sweep.train.pruning import Masks
from scaling_sweep.train.schedule import Budget, make_optimizer


def trainer_path(root: str, model_opts: ModelOptions, batch_size: int, warmup: int, steps: int) -> float:
    """Images/s of the trainer's own loop over its in-memory CIFAR data."""
    device = torch.device("cpu")
    data_opts = DataOptions(name="cifar10", root=root, augment=True)
    data = load_cifar10(data_opts, device)
    train = TrainOptions(batch_size=batch_size, steps=warmup + steps, schedule="constant")
    model = build(JobOptions(model_opts, data_opts, train, PruneOptions(), seed=0), data, device)
    masks = Masks.of(model)
    budget = Budget.of(train, data.steps_per_epoch(batch_size))
    stamps: dict[int, float] = {}

    def after_step(step: int, loss: torch.Tensor) -> None:
        if step in (warmup, warmup + steps):
            stamps[step] = time.perf_counter()

    train_steps(
        model,
        make_optimizer(model.parameters(), train),
        data,
        masks,
        train,
        budget,
        seed=0,
        level=0,
        start=0,
        after_step=after_step,
    )
    return steps * batch_size / (stamps[warmup + steps] - stamps[warmup])


def torchvision_path(
    root: str, model_opts: ModelOptions, batch_size: int, warmup: int, steps: int, workers: int
) -> float:
    """Images/s of the textbook loop: torchvision dataset + transforms + DataLoader."""
    import torchvision
    import torchvision.datasets.cifar as tv_cifar
    from torchvision import transforms as T

    # The folder holds random pixels, so torchvision's md5 gate would refuse it; that gate is all we skip.
    tv_cifar.check_integrity = lambda *args, **kwargs: True
    mean, std = LAYOUTS["cifar10"][5:]
    transform = T.Compose(
        [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)]
    )
    dataset = torchvision.datasets.CIFAR10(root, train=True, transform=transform, download=False)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    torch.manual_seed(0)
    from scaling_sweep.train.models import build_model

    model = build_model(model_opts, (3, 32, 32), 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    model.train()
    step, start = 0, 0.0
    while step < warmup + steps:
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if step == warmup:
                start = time.perf_counter()
            if step == warmup + steps:
                break
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=float, nargs="+", default=[1.0, 0.25])
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of every path; medians count")
    ap.add_argument("--examples", type=int, default=10_000, help="training images in the folder")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="baseline DataLoader workers")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rng = np.random.default_rng(0)
    n = args.examples
    x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    y = rng.integers(0, 10, n)
    with tempfile.TemporaryDirectory() as root:
        write_folder(root, "cifar10", x, y, x[:1000], y[:1000])
        print(
            f"cifar_resnet depth {args.depth}, batch {args.batch_size}, {torch.get_num_threads()} threads, "
            f"{args.steps} timed steps after {args.warmup}; the trainer uses channels-last where "
            f"`imp.channels_last_pays` says so"
        )
        for width in args.widths:
            model_opts = ModelOptions(name="cifar_resnet", width=width, depth=args.depth)
            # Rounds alternate the paths, so drift in a shared machine's speed hits both alike;
            # each path counts by its median round.
            base: dict[int, list[float]] = {w: [] for w in args.workers}
            ours: list[float] = []
            for _ in range(args.rounds):
                for w in args.workers:
                    base[w].append(
                        torchvision_path(root, model_opts, args.batch_size, args.warmup, args.steps, w)
                    )
                ours.append(trainer_path(root, model_opts, args.batch_size, args.warmup, args.steps))
            med = {w: statistics.median(v) for w, v in base.items()}
            best = max(med, key=med.get)
            shown = ", ".join(f"{v:7.1f} img/s ({w} workers)" for w, v in med.items())
            mine = statistics.median(ours)
            print(
                f"width {width:g}: torchvision {shown} | trainer {mine:7.1f} img/s | "
                f"ratio {mine / med[best]:.2f}x (vs {best} workers; medians of {args.rounds} rounds, "
                f"per-round ratios {', '.join(f'{o / b:.2f}' for o, b in zip(ours, base[best]))})",
                flush=True,
            )


if __name__ == "__main__":
    main()
