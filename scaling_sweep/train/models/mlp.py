"""Fully connected net: `depth` hidden ReLU layers of round(100 x width) units, for MNIST-1D-sized problems."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from scaling_sweep.schema import ModelOptions
from scaling_sweep.train.models.common import scaled

BASE_UNITS = 100  # hidden units at width 1 (the MNIST-1D paper's MLP)


class MLP(nn.Module):
    def __init__(self, in_features: int, num_classes: int, depth: int, hidden: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        d = in_features
        for _ in range(depth):
            layers += [nn.Linear(d, hidden), nn.ReLU()]
            d = hidden
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(d, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def build(opts: ModelOptions, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return MLP(math.prod(input_shape), num_classes, opts.depth, scaled(BASE_UNITS, opts.width))
