"""A character-level language model for scaling-sweep: the text as a dataset, a small causal Transformer, and its training step."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset


class Blocks(Dataset):
    """Non-overlapping blocks of a text: x = block[:-1], y = block[1:] (next character at every position).

    `num_classes` (the vocabulary size) tells scaling-sweep how many outputs the model needs.
    """

    def __init__(self, ids: torch.Tensor, block: int, num_classes: int) -> None:
        n = (len(ids) - 1) // block
        self.x = ids[: n * block].view(n, block)
        self.y = ids[1 : n * block + 1].view(n, block)
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


def load(
    root: str, file: str = "scaling.txt", block: int = 32, test_fraction: float = 0.1
) -> tuple[Blocks, Blocks]:
    """(train, test) from root/file: the last `test_fraction` of the text is held out.

    `root` is scaling-sweep's data.root: where the data lives is not part of a job's identity.
    """
    text = Path(root, file).expanduser().read_text(encoding="utf-8")
    vocab = sorted(set(text))
    ids = torch.tensor([vocab.index(c) for c in text], dtype=torch.long)
    cut = int(len(ids) * (1 - test_fraction))
    return Blocks(ids[:cut], block, len(vocab)), Blocks(ids[cut:], block, len(vocab))


class CausalBlock(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class CharTransformer(nn.Module):
    """Token and position embeddings, `depth` causal attention blocks of 32 x width dimensions, a head over characters."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        width: float = 1.0,
        depth: int = 2,
        heads: int = 2,
    ) -> None:
        super().__init__()
        (block,) = input_shape
        dim = max(heads, round(32 * width / heads) * heads)
        self.embed = nn.Embedding(num_classes, dim)
        self.pos = nn.Parameter(torch.zeros(block, dim))
        self.blocks = nn.ModuleList(CausalBlock(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self.register_buffer(
            "causal", torch.triu(torch.ones(block, block, dtype=torch.bool), 1), persistent=False
        )
        # One scale for every matrix, GPT-2's N(0, 0.02), so that global magnitude pruning ranks
        # weights rather than layers' init scales: with PyTorch's defaults the MLP's output layer
        # (fan-in 4 x dim) starts at half the magnitude of the rest, and a second pruning at rate
        # 0.5 would empty it before training had moved it.
        for p in self.parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, mean=0.0, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        h = self.embed(x) + self.pos[:t]
        for blk in self.blocks:
            h = blk(h, self.causal[:t, :t])
        return self.head(self.norm(h))


def next_character(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The training step scaling-sweep calls: (mean loss, wrong next-character guesses, guesses)."""
    logits = model(x).flatten(0, 1)
    targets = y.flatten()
    loss = F.cross_entropy(logits, targets)
    return loss, (logits.argmax(1) != targets).sum(), targets.numel()
