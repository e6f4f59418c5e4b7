"""Batched crop+flip equals cropping and flipping each image on its own."""

import torch
import torch.nn.functional as F

from scaling_sweep.train.augment import PAD, crop_flip, draw_params


def test_batched_crop_flip_matches_per_image_reference():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=g)
    dy, dx, flip = draw_params(16, g)
    out = crop_flip(x, dy, dx, flip)
    padded = F.pad(x, (PAD, PAD, PAD, PAD))
    for i in range(16):
        ref = padded[i, :, dy[i] : dy[i] + 32, dx[i] : dx[i] + 32]
        if flip[i]:
            ref = ref.flip(-1)
        assert torch.equal(out[i], ref)
    assert out.dtype == torch.uint8


def test_offsets_cover_the_whole_padding_range_and_both_flips():
    dy, dx, flip = draw_params(5000, torch.Generator().manual_seed(1))
    assert set(dy.tolist()) == set(range(2 * PAD + 1)) == set(dx.tolist())
    assert 0.45 < flip.float().mean() < 0.55
