"""The job schema: the trainer's option dataclasses, what enters a job id, and every torch-free check of them."""

from __future__ import annotations

import math
import os
import re
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from functools import cache
from typing import Any

from scaling_sweep.errors import ConfigError


def execution(default: Any = MISSING, **kwargs: Any) -> Any:
    """A setting of where or how fast a job runs, not of its numbers: never part of the job id."""
    return field(default=default, metadata={"execution": True}, **kwargs)


def added(default: Any) -> Any:
    """An option added after ids were first frozen: left out of the job id while at its default, so
    adding an option never orphans finished results. The default is the old behaviour, never edited."""
    return field(default=default, metadata={"added": True})


def _unknown(key: str, value: Any, known: typing.Iterable[str], what: str = "") -> ConfigError:
    return ConfigError(f"{key}={value!r} is unknown; known{' ' + what if what else ''}: {', '.join(known)}")


def _unit_interval(key: str, value: Any) -> None:
    if value is not None and not (0.0 < float(value) <= 1.0):
        raise ConfigError(f"{key}={value}: must be in (0, 1]")


# -- model ---------------------------------------------------------------------------------------

# Must match the keys of the model and dataset registries (tests/test_schema.py pins that).
MODEL_NAMES = ("cifar_resnet", "cifar_vgg", "mlp", "cnn1d")


@dataclass
class ModelOptions:
    name: str = "mlp"
    width: float = 1.0  # multiplier on the model's base width
    depth: int = 2  # hidden layers (mlp), conv layers (cnn1d), 6n+2 (cifar_resnet), 11/13/16/19 (cifar_vgg)


def check_model(m: ModelOptions) -> None:
    if m.name not in MODEL_NAMES:
        raise _unknown("model.name", m.name, MODEL_NAMES, "models")
    if not float(m.width) > 0:
        raise ConfigError(f"model.width={m.width}: must be > 0")
    if m.name == "cifar_resnet" and (m.depth < 8 or (m.depth - 2) % 6):
        raise ConfigError(
            f"model.depth={m.depth}: cifar_resnet needs depth = 6n+2 (8, 14, 20, 32, 44, 56, 110, ...)"
        )
    if m.name == "cifar_vgg" and m.depth not in (11, 13, 16, 19):
        raise ConfigError(f"model.depth={m.depth}: cifar_vgg depth must be one of 11, 13, 16, 19")
    if m.name in ("mlp", "cnn1d") and m.depth < 1:
        raise ConfigError(f"model.depth={m.depth}: {m.name} needs depth >= 1")


# -- data ----------------------------------------------------------------------------------------

DATASET_NAMES = ("mnist1d", "digits", "cifar10", "cifar100", "imagenet")
DATASETS_WITH_ROOT = ("cifar10", "cifar100", "imagenet")
# Training-set sizes known without loading (generated or shipped data; a test pins them against
# the loaders). Datasets read from data.root may be any size, so their budgets are known only then.
TRAIN_SIZES = {"mnist1d": 4000, "digits": 1797 - 360}


@dataclass
class DataOptions:
    name: str = "mnist1d"
    fraction: float = 1.0  # first ceil(fraction * N) examples of a fixed permutation
    data_seed: int = 0  # seed of that permutation
    balanced: bool = False  # take the fraction per class
    augment: bool = False  # random crop (pad 4) + horizontal flip, per batch on the device
    root: str | None = execution(None)  # cifar10/cifar100/imagenet directory
    cache_dir: str | None = execution(None)  # where generated datasets are cached
    num_workers: int = execution(4)  # DataLoader workers for streamed datasets


def check_data(d: DataOptions, check_paths: bool = True, user: bool = False) -> None:
    """`check_paths=False`: leave out whether data.root exists here (a SLURM login node need not have it).

    `user`: the section names its own loader (`_target_`), so any name goes and a root is optional.
    """
    if not user and d.name not in DATASET_NAMES:
        raise _unknown("data.name", d.name, DATASET_NAMES, "datasets")
    _unit_interval("data.fraction", d.fraction)
    for key in ("root", "cache_dir"):
        value = getattr(d, key)
        if value is not None and not str(value).strip():
            # An empty path would silently mean the current directory (or "not set" for root).
            raise ConfigError(
                f"data.{key}={value!r}: an empty path; give a directory or leave it unset (null)"
            )
    if user and d.root and check_paths and not os.path.isdir(os.path.expanduser(d.root)):
        raise ConfigError(f"data.root={d.root}: no such directory; point data.root at your data")
    if not user and d.name in DATASETS_WITH_ROOT:
        if not d.root:
            raise ConfigError(
                f"data.root is not set: {d.name} is read from a local directory; pass data.root=/path/to/{d.name}"
            )
        if check_paths and not os.path.isdir(os.path.expanduser(d.root)):
            raise ConfigError(
                f"data.root={d.root}: no such directory; point data.root at your local {d.name} copy"
            )


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Batches per epoch: ceil(n / batch_size), except that a last batch of one example is dropped.

    (BatchNorm cannot train on a batch of one, and one example is noise anyway.)
    """
    full, rest = divmod(n, batch_size)
    return max(1, full + (1 if rest >= 2 else 0))


def subset_size(n: int, fraction: float) -> int:
    """ceil(fraction * n), immune to float noise (0.1 * 4000 is 400, not 401), at least 1."""
    return min(n, max(1, math.ceil(round(float(fraction) * n, 6))))


def train_size(d: DataOptions) -> int | None:
    """Training examples a job uses, when known without loading the data; else None.

    Balanced subsets depend on the class counts (known only once loaded), so they count as unknown.
    """
    n = TRAIN_SIZES.get(d.name)
    if n is None or d.balanced:
        return None
    return subset_size(n, d.fraction)


# -- train ---------------------------------------------------------------------------------------

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("multistep", "cosine", "constant")


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
    checkpoint_every: int = execution(1)  # epochs between mid-level checkpoints
    log_every: int = execution(0)  # steps between log lines, 0 = per epoch
    # A user's training step, {_target_: pkg.module.function, ...its keyword arguments}; None: ours.
    # A dict[str, Any] | None, declared Any: OmegaConf 2.3 cannot merge a dict into a None node
    # typed Optional[Dict] (train.step={...} dies in an AttributeError); check_train checks it.
    step: Any = added(None)


def check_train(t: TrainOptions) -> None:
    if t.optimizer not in OPTIMIZERS:
        raise _unknown("train.optimizer", t.optimizer, OPTIMIZERS)
    if t.schedule not in SCHEDULES:
        raise _unknown("train.schedule", t.schedule, SCHEDULES)
    for key in ("batch_size", "eval_batch_size"):
        value = getattr(t, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"train.{key}={value!r}: must be an integer >= 1")
    if t.steps is None and (t.epochs is None or t.epochs < 1):
        raise ConfigError(f"train.epochs={t.epochs}: set epochs >= 1 or train.steps >= 1")
    if t.steps is not None and t.steps < 1:
        raise ConfigError(f"train.steps={t.steps}: must be >= 1")
    if t.step is not None and not (isinstance(t.step, Mapping) and isinstance(t.step.get("_target_"), str)):
        raise ConfigError(
            f"train.step={t.step!r}: a training step is a section {{_target_: pkg.module.function, ...}}"
        )


# -- prune ---------------------------------------------------------------------------------------

PRUNE_METHODS = ("imp", "oneshot")


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
    stop_at_chance: int = added(2)
    chance_margin: float = added(0.02)  # absolute, in test error (a fraction)
    # Regular expressions over parameter names: which weights are prunable (None: the default rule).
    include: str | None = added(None)
    exclude: str | None = added(None)


def check_prune(p: PruneOptions) -> None:
    if p.method not in PRUNE_METHODS:
        raise _unknown("prune.method", p.method, PRUNE_METHODS, "methods")
    if p.levels < 0:
        raise ConfigError(f"prune.levels={p.levels}: must be >= 0")
    _unit_interval("prune.density", p.density)
    if not (0.0 < p.rate < 1.0):
        raise ConfigError(f"prune.rate={p.rate}: must be in (0, 1)")
    if p.method == "oneshot" and p.density is None:
        raise ConfigError("prune.method=oneshot needs prune.density (the density to prune to once)")
    kind, _, k = p.rewind.partition(":")
    if p.rewind not in ("init", "lr") and (kind not in ("step", "epoch") or not k.isdigit()):
        raise ConfigError(f"prune.rewind={p.rewind!r}: use init, lr, step:K or epoch:K")
    k = p.stop_at_chance
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ConfigError(
            f"prune.stop_at_chance={k!r}: must be an integer >= 0 (levels at chance before stopping; 0 = off)"
        )
    m = p.chance_margin
    if isinstance(m, bool) or not isinstance(m, (int, float)) or not (0.0 <= float(m) < 1.0):
        raise ConfigError(f"prune.chance_margin={m!r}: must be a number in [0, 1) (absolute test error)")
    for key in ("include", "exclude"):
        pattern = getattr(p, key)
        try:
            if pattern is not None:
                re.compile(pattern)
        except (re.error, TypeError) as e:
            raise ConfigError(f"prune.{key}={pattern!r}: not a regular expression ({e})") from None


def levels_for_density(density: float, rate: float) -> int:
    """IMP levels needed so that (1 - rate)^levels <= density, within 0.1 %.

    The slack lets a density written to a few digits (0.262 for 0.8^6 = 0.262144) mean that level.
    """
    if density >= 1.0:
        return 0
    return max(0, math.ceil(math.log(density * 1.001) / math.log(1.0 - rate)))


def last_level(prune: PruneOptions | Mapping[str, Any]) -> int:
    """The last level a trajectory runs to (level 0 is the dense run): 1 for one-shot; for IMP
    prune.levels, or deeper if prune.density asks for it."""
    p = prune if isinstance(prune, Mapping) else vars(prune)
    if p.get("method", "imp") == "oneshot":
        return 1
    levels, density = int(p.get("levels") or 0), p.get("density")
    if density is None:
        return levels
    _unit_interval("prune.density", density)  # the grid folds densities before it validates sections
    return max(levels, levels_for_density(float(density), float(p.get("rate", PruneOptions.rate))))


def rewind_outside(rewind: str, step: int, total: int, detail: str = "") -> ConfigError:
    """The one message for a rewind step past one level's budget: from the plan where the training-set
    size is known without loading, else from the trainer once the data is loaded."""
    return ConfigError(
        f"prune.rewind={rewind}: step {step} is not inside one level's budget of {total} steps{detail}; "
        f"use a smaller K"
    )


def check_rewind(d: DataOptions, t: TrainOptions, p: PruneOptions) -> None:
    """prune.rewind=step:K / epoch:K must lie inside one level's budget.

    Exact when the budget's unit is the rewind's, or when the training-set size is known without
    loading (mnist1d, digits); otherwise (cifar, imagenet, balanced subsets with mixed units) the
    trainer checks it when the job starts.
    """
    kind, _, k = p.rewind.partition(":")
    if kind not in ("step", "epoch") or not k.isdigit():
        return
    k_int = int(k)
    if t.steps is None and kind == "epoch":
        budget, what = int(t.epochs or 0), f"train.epochs={t.epochs}"
    elif t.steps is not None and kind == "step":
        budget, what = int(t.steps), f"train.steps={t.steps}"
    else:
        n = train_size(d)
        if n is None:
            return
        per_epoch = steps_per_epoch(n, t.batch_size)
        step = k_int * per_epoch if kind == "epoch" else k_int
        total = int(t.steps) if t.steps is not None else int(t.epochs or 0) * per_epoch
        why = f" ({per_epoch} per epoch: {n} {d.name} examples at data.fraction={d.fraction}, batch {t.batch_size})"
        if step >= total:
            raise rewind_outside(p.rewind, step, total, why)
        return
    if k_int >= budget:
        raise ConfigError(f"prune.rewind={p.rewind}: must be < {what} (a point inside one level's training)")


# -- sections as a whole -------------------------------------------------------------------------

SECTION_TYPES: dict[str, type] = {
    "model": ModelOptions,
    "data": DataOptions,
    "train": TrainOptions,
    "prune": PruneOptions,
}
SECTIONS = tuple(SECTION_TYPES)
CHECKS = {"model": check_model, "data": check_data, "train": check_train, "prune": check_prune}

# Derived from the field metadata: {section: frozenset of execution keys}, {section: {added key: default}}.
EXECUTION_KEYS: dict[str, frozenset[str]] = {
    s: frozenset(f.name for f in fields(cls) if f.metadata.get("execution"))
    for s, cls in SECTION_TYPES.items()
}
ADDED_OPTIONS: dict[str, dict[str, Any]] = {
    s: {f.name: f.default for f in fields(cls) if f.metadata.get("added")} for s, cls in SECTION_TYPES.items()
}


@dataclass
class JobOptions:
    """A trainer config {model, data, train, prune, seed} as dataclasses."""

    model: ModelOptions
    data: DataOptions
    train: TrainOptions
    prune: PruneOptions
    seed: int


def _not_an_option(section: str, key: str) -> ConfigError:
    known = ", ".join(sorted(f.name for f in fields(SECTION_TYPES[section])))
    return ConfigError(f"{section}.{key} is not an option; known: {known}")


TARGET = "_target_"  # names a user's class or function (scaling_sweep.targets)


def label(values: Mapping[str, Any]) -> str:
    """What rows and screens call a model or dataset: its `name`, else its `_target_`'s last component."""
    name = values.get("name")
    return str(name) if name is not None else str(values.get(TARGET, "")).rpartition(".")[2]


def parse(section: str, values: Mapping[str, Any]) -> Any:
    """Turn a plain dict into that section's dataclass; unknown keys are an error.

    A user model (`_target_`) parses to its label only: its keys are its constructor's, checked
    against its signature (scaling_sweep.targets). A user dataset keeps the data options that the
    tool applies (fraction, data_seed, ...); its other keys are its loader's.
    """
    cls = SECTION_TYPES[section]
    if TARGET in values and section in ("model", "data"):
        own = {f.name for f in fields(cls)}
        kept = {k: v for k, v in values.items() if k in own and section == "data"}
        return cls(**{**kept, "name": label(values)})
    unknown = sorted(set(values) - {f.name for f in fields(cls)})
    if unknown:
        raise _not_an_option(section, unknown[0])
    return cls(**values)


def parse_config(config: Mapping[str, Any]) -> JobOptions:
    """The trainer config as dataclasses, NOT validated (the plan did that); missing keys take their defaults."""
    sections = [parse(s, config.get(s) or {}) for s in SECTIONS]
    return JobOptions(*sections, seed=int(config.get("seed", 0)))


def validate(config: Mapping[str, Any], check_paths: bool = True) -> None:
    """Check a trainer config {model, data, train, prune, ...} without importing torch.

    `check_paths=False` leaves out whether data.root exists on this machine: where the training runs
    elsewhere (SLURM) or not at all (status, fit), only the machine that trains needs it.
    """
    opts = {s: check(s, config[s], check_paths) for s in SECTIONS}
    check_rewind(opts["data"], opts["train"], opts["prune"])


def check(section: str, values: Mapping[str, Any], check_paths: bool = True) -> Any:
    """Parse and check one section on its own (the rewind point needs three: `check_rewind`)."""
    opts = parse(section, values)
    if section == "data":
        check_data(opts, check_paths, user=TARGET in values)
    elif section == "model" and TARGET in values:
        pass  # a user model's keys are checked against its signature (scaling_sweep.targets.check)
    else:
        CHECKS[section](opts)
    return opts


@cache
def field_types(section: str) -> dict[str, Any]:
    """{option: its declared type, Optional stripped (`float | None` -> float)} of one section."""
    out = typing.get_type_hints(SECTION_TYPES[section])
    for key, typ in out.items():
        if type(None) in typing.get_args(typ):
            out[key] = next(a for a in typing.get_args(typ) if a is not type(None))
    return out


def coerce(path: str, value: Any, where: str = "") -> Any:
    """`value` as the type of option `path` ("model.width", or "seed"), so width 1 and 1.0 are one job.

    Only numbers change (bools are not numbers); `where` prefixes the error (grid axes: "grid.").
    """
    section, _, key = path.partition(".")
    typ = int if path == "seed" else field_types(section)[key]
    if value is None or typ not in (int, float):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (typ is int and int(value) != value):
        raise ConfigError(f"{where}{path}={value!r}: must be {'an integer' if typ is int else 'a number'}")
    return typ(value)


def normalize(section: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """One section with every missing option at its default and numbers as their options' types.

    A model section with `_target_` (a user's model) is returned as it is; a data section with
    `_target_` gets the data options except `name` and keeps its other keys as they are.
    """
    if "_target_" in values and section == "model":
        return dict(values)
    target = "_target_" in values and section == "data"
    cls = SECTION_TYPES[section]
    out = {f.name: f.default_factory() if f.default is MISSING else f.default for f in fields(cls)}
    if target:
        del out["name"]
    for key, value in values.items():
        if key not in out and not target:
            raise _not_an_option(section, key)
        out[key] = coerce(f"{section}.{key}", value) if key in out else value
    return out
