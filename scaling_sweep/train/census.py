"""Counting a job's parameters and forward FLOPs before it trains: the model built on the meta device (no memory, no data)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Census:
    """What a job's model is, counted without building it for real."""

    params_total: int  # every parameter
    params_trainable: int  # those with requires_grad (what `params` means in grid filters)
    params_prunable: int  # what IMP prunes (prune.include_output_layer / include / exclude)
    prunable_tensors: int  # how many weight tensors those are
    flops_per_example: int | None  # forward FLOPs of one example (None: not asked for)


def input_spec(data: Mapping[str, Any]) -> tuple[tuple[int, ...], int] | None:
    """(input shape, classes) of a data section, or None where they are known only once the data is loaded."""
    if schema.TARGET in data or data.get("name") not in SHAPES:
        return None
    return SHAPES[data["name"]]


def census(config: Mapping[str, Any], flops: bool = False) -> Census | None:
    """Count a trainer config's model on the meta device; None where the data's shape is unknown.

    `flops`: also run one example through it under FlopCounterMode (matmuls and convolutions, a
    multiply-add counted as 2). Meta kernels of convolutions are Python code that torch imports on
    first use (about 1.5 s on a 2-core CPU), so only callers that show or filter by FLOPs ask.
    """
    spec = input_spec(config["data"])
    if spec is None:
        return None
    shape, classes = spec
    prune = schema.parse("prune", config["prune"])
    with torch.device("meta"):
        found = targets.find(config).get("model")
        if found is not None:
            model = targets.resolve(found)(**found.kwargs, input_shape=shape, num_classes=classes)
        else:
            model = build_model(schema.parse("model", config["model"]), shape, classes)
        attach_masks(model, prune.include_output_layer, prune.include, prune.exclude)
    masks = Masks.of(model)
    params = list(model.parameters())
    return Census(
        params_total=sum(p.numel() for p in params),
        params_trainable=sum(p.numel() for p in params if p.requires_grad),
        params_prunable=masks.numel(),
        prunable_tensors=len(masks.weights),
        flops_per_example=forward_flops(model, shape) if flops else None,
    )


def forward_flops(model: torch.nn.Module, input_shape: tuple[int, ...]) -> int:
    """Forward FLOPs of one example of `input_shape` through a meta-device model (eval mode: no batch statistics)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.empty(1, *input_shape, device="meta"))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def parameter_counts(config: Mapping[str, Any]) -> tuple[int, int] | None:
    """(all parameters, prunable ones) of a trainer config's model, or None where the data's shape is unknown."""
    counted = census(config)
    return None if counted is None else (counted.params_total, counted.params_prunable)
