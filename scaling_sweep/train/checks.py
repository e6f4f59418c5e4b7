"""Torch-free checks of model, dataset and schedule names and shapes, so bad input fails at plan time."""

from __future__ import annotations

import os

from scaling_sweep.train.options import DataOptions, ModelOptions, OptionError, PruneOptions, TrainOptions

# Must match the keys of the model and dataset registries (a test pins that).
MODEL_NAMES = ("cifar_resnet", "cifar_vgg", "mlp", "cnn1d")
DATASET_NAMES = ("mnist1d", "digits", "cifar10", "cifar100", "imagenet")
DATASETS_WITH_ROOT = ("cifar10", "cifar100", "imagenet")


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


def check_data(d: DataOptions) -> None:
    if d.name not in DATASET_NAMES:
        raise OptionError(f"data.name={d.name!r} is unknown; known datasets: {', '.join(DATASET_NAMES)}")
    if d.name in DATASETS_WITH_ROOT:
        if not d.root:
            raise OptionError(
                f"data.root is not set: {d.name} is read from a local directory; pass data.root=/path/to/{d.name}"
            )
        if not os.path.isdir(os.path.expanduser(d.root)):
            raise OptionError(
                f"data.root={d.root}: no such directory; point data.root at your local {d.name} copy"
            )


def check_train(t: TrainOptions) -> None:
    if t.optimizer not in ("sgd", "adamw"):
        raise OptionError(f"train.optimizer={t.optimizer!r} is unknown; known: sgd, adamw")
    if t.schedule not in ("multistep", "cosine", "constant"):
        raise OptionError(f"train.schedule={t.schedule!r} is unknown; known: multistep, cosine, constant")


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
