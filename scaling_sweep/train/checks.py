"""Torch-free checks of model, dataset and schedule names and shapes, so bad input fails at plan time."""

from __future__ import annotations

import math
import os

from scaling_sweep.train.options import DataOptions, ModelOptions, OptionError, PruneOptions, TrainOptions

# Must match the keys of the model and dataset registries (a test pins that).
MODEL_NAMES = ("cifar_resnet", "cifar_vgg", "mlp", "cnn1d")
DATASET_NAMES = ("mnist1d", "digits", "cifar10", "cifar100", "imagenet")
DATASETS_WITH_ROOT = ("cifar10", "cifar100", "imagenet")
# Training-set sizes known without loading (generated or shipped data; a test pins them against
# the loaders). Datasets read from data.root may be any size, so their budgets are known only then.
TRAIN_SIZES = {"mnist1d": 4000, "digits": 1797 - 360}


def check_model(m: ModelOptions) -> None:
    if m.name not in MODEL_NAMES:
        raise OptionError(f"model.name={m.name!r} is unknown; known models: {', '.join(MODEL_NAMES)}")
    if m.name == "cifar_resnet" and (m.depth < 8 or (m.depth - 2) % 6):
        raise OptionError(
            f"model.depth={m.depth}: cifar_resnet needs depth = 6n+2 (8, 14, 20, 32, 44, 56, 110, ...)"
        )
    if m.name == "cifar_vgg" and m.depth not in (11, 13, 16, 19):
        raise OptionError(f"model.depth={m.depth}: cifar_vgg depth must be one of 11, 13, 16, 19")
    if m.name in ("mlp", "cnn1d") and m.depth < 1:
        raise OptionError(f"model.depth={m.depth}: {m.name} needs depth >= 1")


def check_data(d: DataOptions, check_paths: bool = True) -> None:
    """`check_paths=False`: leave out whether data.root exists here (a SLURM login node need not have it)."""
    if d.name not in DATASET_NAMES:
        raise OptionError(f"data.name={d.name!r} is unknown; known datasets: {', '.join(DATASET_NAMES)}")
    for key in ("root", "cache_dir"):
        value = getattr(d, key)
        if value is not None and not str(value).strip():
            # An empty path would silently mean the current directory (or "not set" for root).
            raise OptionError(
                f"data.{key}={value!r}: an empty path; give a directory or leave it unset (null)"
            )
    if d.name in DATASETS_WITH_ROOT:
        if not d.root:
            raise OptionError(
                f"data.root is not set: {d.name} is read from a local directory; pass data.root=/path/to/{d.name}"
            )
        if check_paths and not os.path.isdir(os.path.expanduser(d.root)):
            raise OptionError(
                f"data.root={d.root}: no such directory; point data.root at your local {d.name} copy"
            )


def check_train(t: TrainOptions) -> None:
    if t.optimizer not in ("sgd", "adamw"):
        raise OptionError(f"train.optimizer={t.optimizer!r} is unknown; known: sgd, adamw")
    if t.schedule not in ("multistep", "cosine", "constant"):
        raise OptionError(f"train.schedule={t.schedule!r} is unknown; known: multistep, cosine, constant")
    for key in ("batch_size", "eval_batch_size"):
        value = getattr(t, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise OptionError(f"train.{key}={value!r}: must be an integer >= 1")


def check_prune(p: PruneOptions) -> None:
    if p.method == "oneshot" and p.density is None:
        raise OptionError("prune.method=oneshot needs prune.density (the density to prune to once)")
    check_early_stop(p)
    r = p.rewind
    if r in ("init", "lr"):
        return
    kind, _, k = r.partition(":")
    if kind not in ("step", "epoch") or not k.isdigit():
        raise OptionError(f"prune.rewind={r!r}: use init, lr, step:K or epoch:K")


def check_early_stop(p: PruneOptions) -> None:
    k = p.stop_at_chance
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise OptionError(
            f"prune.stop_at_chance={k!r}: must be an integer >= 0 (levels at chance before stopping; 0 = off)"
        )
    m = p.chance_margin
    if isinstance(m, bool) or not isinstance(m, (int, float)) or not (0.0 <= float(m) < 1.0):
        raise OptionError(f"prune.chance_margin={m!r}: must be a number in [0, 1) (absolute test error)")


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
        if step >= total:
            raise OptionError(
                f"prune.rewind={p.rewind}: step {step} is not inside one level's budget of {total} steps "
                f"({per_epoch} per epoch: {n} {d.name} examples at data.fraction={d.fraction}, batch {t.batch_size}); use a smaller K"
            )
        return
    if k_int >= budget:
        raise OptionError(f"prune.rewind={p.rewind}: must be < {what} (a point inside one level's training)")
