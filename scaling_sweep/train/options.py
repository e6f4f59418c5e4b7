"""The trainer's options as dataclasses (torch-free), with their defaults and one-line validation."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any


class OptionError(ValueError):
    """An option value the trainer cannot run; str(err) is one line naming the value and what is allowed."""


@dataclass
class ModelOptions:
    name: str = "mlp"
    width: float = 1.0  # multiplier on the model's base width
    depth: int = 2  # hidden layers (mlp), conv layers (cnn1d), 6n+2 (cifar_resnet), 11/13/16/19 (cifar_vgg)


@dataclass
class DataOptions:
    name: str = "mnist1d"
    fraction: float = 1.0  # first ceil(fraction * N) examples of a fixed permutation
    data_seed: int = 0  # seed of that permutation
    balanced: bool = False  # take the fraction per class
    augment: bool = False  # random crop (pad 4) + horizontal flip, per batch on the device
    root: str | None = None  # cifar10/cifar100/imagenet directory (execution setting)
    cache_dir: str | None = None  # where generated datasets are cached (execution setting)
    num_workers: int = 4  # DataLoader workers for streamed datasets (execution setting)


@dataclass
class TrainOptions:
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "multistep"  # multistep | cosine | constant
    milestones: list[int] = field(default_factory=list)  # in budget units (epochs or steps)
    gamma: float = 0.1
    warmup: int = 0  # linear warmup length, in steps
    epochs: int | None = 10  # budget in epochs, unless steps is set
    steps: int | None = None  # budget in optimizer steps; overrides epochs
    batch_size: int = 128
    eval_batch_size: int = 1000
    amp: bool = True  # bf16 autocast (CUDA only)
    channels_last: bool = True  # 2-D conv nets; on CPU only where it pays (channels in multiples of 8)
    compile: bool = False  # torch.compile
    checkpoint_every: int = 1  # epochs between mid-level checkpoints (execution setting)
    log_every: int = 0  # steps between log lines, 0 = per epoch (execution setting)


@dataclass
class PruneOptions:
    method: str = "imp"  # imp | oneshot
    levels: int = 0  # IMP levels after the dense run (level 0)
    density: float | None = None  # target density: imp derives levels; oneshot prunes to it
    rate: float = 0.2  # fraction of remaining weights removed per level
    rewind: str = "init"  # init | step:K | epoch:K | lr
    include_output_layer: bool = False
    # Stop the trajectory once this many consecutive finished levels (the dense one included)
    # have test error >= 1 - 1/classes - chance_margin: deeper levels would only repeat chance.
    # 0 turns it off. (The trainer also always stops before pruning would empty a layer.)
    stop_at_chance: int = 2
    chance_margin: float = 0.02  # absolute, in test error (a fraction)


SECTION_TYPES: dict[str, type] = {
    "model": ModelOptions,
    "data": DataOptions,
    "train": TrainOptions,
    "prune": PruneOptions,
}


def parse(section: str, values: Mapping[str, Any]) -> Any:
    """Turn a plain dict into that section's dataclass; unknown keys are an error."""
    cls = SECTION_TYPES[section]
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise OptionError(f"{section}.{unknown[0]} is not an option; known: {', '.join(sorted(known))}")
    return cls(**values)


def levels_for_density(density: float, rate: float) -> int:
    """IMP levels needed so that (1 - rate)^levels <= density, within 0.1 %.

    The slack lets a density written to a few digits (0.262 for 0.8^6 = 0.262144) mean that level.
    """
    if density >= 1.0:
        return 0
    return max(0, math.ceil(math.log(density * 1.001) / math.log(1.0 - rate)))


def imp_levels(levels: int, density: float | None, rate: float) -> int:
    """The last IMP level a trajectory runs to: prune.levels, or deeper if prune.density asks for it."""
    if density is None:
        return int(levels)
    return max(int(levels), levels_for_density(float(density), float(rate)))


def _in_unit_interval(name: str, value: float | None) -> None:
    if value is not None and not (0.0 < float(value) <= 1.0):
        raise OptionError(f"{name}={value}: must be in (0, 1]")


def validate(config: Mapping[str, Any], check_paths: bool = True) -> None:
    """Check a trainer config {model, data, train, prune, seed} without importing torch.

    `check_paths=False` leaves out whether data.root exists on this machine: where the training runs
    elsewhere (SLURM) or not at all (status, fit), only the machine that trains needs it.

    Model- and dataset-specific checks (names, depths, dataset roots) live beside their
    registries' names in `scaling_sweep.train.checks`.
    """
    from scaling_sweep.train import checks  # torch-free

    model = parse("model", config["model"])
    data = parse("data", config["data"])
    train = parse("train", config["train"])
    prune = parse("prune", config["prune"])
    if not float(model.width) > 0:
        raise OptionError(f"model.width={model.width}: must be > 0")
    _in_unit_interval("data.fraction", data.fraction)
    _in_unit_interval("prune.density", prune.density)
    if not (0.0 < prune.rate < 1.0):
        raise OptionError(f"prune.rate={prune.rate}: must be in (0, 1)")
    if prune.method not in ("imp", "oneshot"):
        raise OptionError(f"prune.method={prune.method!r}: known methods are imp, oneshot")
    if prune.levels < 0:
        raise OptionError(f"prune.levels={prune.levels}: must be >= 0")
    if train.steps is None and (train.epochs is None or train.epochs < 1):
        raise OptionError(f"train.epochs={train.epochs}: set epochs >= 1 or train.steps >= 1")
    if train.steps is not None and train.steps < 1:
        raise OptionError(f"train.steps={train.steps}: must be >= 1")
    checks.check_model(model)
    checks.check_data(data, check_paths)
    checks.check_train(train)
    checks.check_prune(prune)
