"""Model registry: model.name -> constructor taking (options, input shape, number of classes); or a user's `model._target_`."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

from scaling_sweep.errors import ConfigError
from scaling_sweep.schema import ModelOptions
from scaling_sweep.targets import Target, resolve
from scaling_sweep.train.models import cnn1d, mlp, resnet, vgg

# Every model exposes its output layer as `.head` so that pruning can leave it out by identity.
Builder = Callable[[ModelOptions, tuple[int, ...], int], nn.Module]
MODELS: dict[str, Builder] = {
    "cifar_resnet": resnet.build,
    "cifar_vgg": vgg.build,
    "mlp": mlp.build,
    "cnn1d": cnn1d.build,
}


def build_model(opts: ModelOptions, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Construct `opts.name` for inputs of `input_shape` (without the batch dimension)."""
    # The plan checked the options (schema.check_model): a KeyError here is a bug, not bad input.
    return MODELS[opts.name](opts, tuple(input_shape), num_classes)


def build_user_model(target: Target, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """`<model._target_>(**its keywords, input_shape=..., num_classes=...)`, which must be an nn.Module."""
    model = resolve(target)(**target.kwargs, input_shape=tuple(input_shape), num_classes=num_classes)
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"model._target_={target.path}: returned {type(model).__name__}, not a torch.nn.Module"
        )
    return model
