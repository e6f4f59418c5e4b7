"""Model registry: model.name -> constructor taking (options, input shape, number of classes)."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

from scaling_sweep.train.checks import check_model
from scaling_sweep.train.models import cnn1d, mlp, resnet, vgg
from scaling_sweep.train.options import ModelOptions, OptionError

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
    try:
        builder = MODELS[opts.name]
    except KeyError:
        raise OptionError(f"model.name={opts.name!r} is unknown; known models: {', '.join(MODELS)}") from None
    check_model(opts)  # the same depth rules `plan` applies
    return builder(opts, tuple(input_shape), num_classes)
