"""CIFAR ResNet-D (He et al. 2016, as in OpenLTH): 3 stages of (D-2)/6 basic blocks, widths W, 2W, 4W."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from scaling_sweep.errors import ConfigError
from scaling_sweep.schema import ModelOptions
from scaling_sweep.train.models.common import scaled

BASE_WIDTH = 16  # W at width 1: ResNet-20 has stages of 16, 32, 64 channels


class Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            # A 1x1 projection where the shape changes (OpenLTH's choice; the 2016 paper's
            # option A pads with zeros instead).
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In place where autograd allows it (BatchNorm's backward needs its input, not its output):
        # fewer allocations, the same numbers.
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out, inplace=True)


class CifarResNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, depth: int, base: int):
        super().__init__()
        blocks_per_stage = (depth - 2) // 6
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, base, 3, padding=1, bias=False),
            nn.BatchNorm2d(base),
            nn.ReLU(inplace=True),
        )
        blocks: list[nn.Module] = []
        c = base
        for stage, c_out in enumerate((base, 2 * base, 4 * base)):
            for i in range(blocks_per_stage):
                blocks.append(Block(c, c_out, stride=2 if stage > 0 and i == 0 else 1))
                c = c_out
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.blocks(self.stem(x))))


def build(opts: ModelOptions, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    if len(input_shape) != 3:
        raise ConfigError(f"model.name=cifar_resnet needs images shaped (C, H, W); got {input_shape}")
    return CifarResNet(input_shape[0], num_classes, opts.depth, scaled(BASE_WIDTH, opts.width))
