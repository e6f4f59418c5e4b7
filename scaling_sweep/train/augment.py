"""Batched image augmentation on the device (random crop with zero padding, horizontal flip), airbench-style."""

from __future__ import annotations

import torch
import torch.nn.functional as F

PAD = 4  # pixels of zero padding before the random crop (the CIFAR standard)


def draw_params(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-example crop offsets (dy, dx) in [0, 2*PAD] and flip flags for `n` examples."""
    shifts = torch.randint(0, 2 * PAD + 1, (2, n), generator=generator)
    flips = torch.randint(0, 2, (n,), generator=generator).bool()
    return shifts[0], shifts[1], flips


def crop_flip(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Crop each image of `x` (B, C, H, W) at its own offset inside a PAD-padded copy, then flip some.

    One gather for the whole batch: no per-example Python, works on any dtype (uint8 included).
    """
    b, c, h, w = x.shape
    padded = F.pad(x, (PAD, PAD, PAD, PAD))
    rows = dy.view(b, 1) + torch.arange(h, device=x.device).view(1, h)  # (B, H)
    cols = dx.view(b, 1) + torch.arange(w, device=x.device).view(1, w)  # (B, W)
    # Flipping is a reversed column index, so it costs nothing extra inside the same gather.
    cols = torch.where(flip.view(b, 1), cols.flip(1), cols)
    batch = torch.arange(b, device=x.device).view(b, 1, 1, 1)
    chan = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return padded[batch, chan, rows.view(b, 1, h, 1), cols.view(b, 1, 1, w)]
