"""Counting a job's parameters before it trains: the model built on the meta device (no memory, no data)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from scaling_sweep import schema, targets
from scaling_sweep.train.models import build_model
from scaling_sweep.train.pruning import Masks, attach_masks

# Input shape and classes of the built-in datasets whose shape is fixed (a test pins them against
# the loaders); user datasets and ImageNet folders are known only once loaded.
SHAPES: dict[str, tuple[tuple[int, ...], int]] = {
    "mnist1d": ((1, 40), 10),
    "digits": ((1, 8, 8), 10),
    "cifar10": ((3, 32, 32), 10),
    "cifar100": ((3, 32, 32), 100),
}


def parameter_counts(config: Mapping[str, Any]) -> tuple[int, int] | None:
    """(all parameters, prunable ones) of a trainer config's model, or None where the data's shape is unknown."""
    data = config["data"]
    if schema.TARGET in data or data.get("name") not in SHAPES:
        return None
    shape, classes = SHAPES[data["name"]]
    prune = schema.parse("prune", config["prune"])
    with torch.device("meta"):
        found = targets.find(config).get("model")
        if found is not None:
            model = targets.resolve(found)(**found.kwargs, input_shape=shape, num_classes=classes)
        else:
            model = build_model(schema.parse("model", config["model"]), shape, classes)
        attach_masks(model, prune.include_output_layer, prune.include, prune.exclude)
    return sum(p.numel() for p in model.parameters()), Masks.of(model).numel()
