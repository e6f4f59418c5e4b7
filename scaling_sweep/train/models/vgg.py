"""CIFAR VGG-11/13/16/19 with batch norm and a width multiplier on every conv layer."""

from __future__ import annotations

import torch
import torch.nn as nn

from scaling_sweep.errors import ConfigError
from scaling_sweep.schema import ModelOptions
from scaling_sweep.train.models.common import scaled

POOL = 0  # marks a 2x2 max-pool in a plan
PLANS: dict[int, list[int]] = {
    11: [64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512],
    13: [64, 64, POOL, 128, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512],
    16: [64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL, 512, 512, 512, POOL, 512, 512, 512],
    19: [
        64,
        64,
        POOL,
        128,
        128,
        POOL,
        256,
        256,
        256,
        256,
        POOL,
        512,
        512,
        512,
        512,
        POOL,
        512,
        512,
        512,
        512,
    ],
}


class CifarVGG(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, plan: list[int], width: float):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for item in plan:
            if item == POOL:
                layers.append(nn.MaxPool2d(2))
                continue
            c_out = scaled(item, width)
            layers += [nn.Conv2d(c, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
            c = c_out
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def build(opts: ModelOptions, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    pools = PLANS[opts.depth].count(POOL)
    if len(input_shape) != 3 or min(input_shape[1:]) < 2**pools:
        raise ConfigError(
            f"model.name=cifar_vgg needs images shaped (C, H, W) of at least {2**pools}x{2**pools}; "
            f"got {input_shape}"
        )
    return CifarVGG(input_shape[0], num_classes, PLANS[opts.depth], opts.width)
