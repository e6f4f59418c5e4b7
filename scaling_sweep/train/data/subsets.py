"""Nested training subsets: a fixed permutation per (dataset, data_seed); fraction f keeps its first ceil(f*N)."""

from __future__ import annotations

import torch

from scaling_sweep.errors import ConfigError
from scaling_sweep.schema import subset_size  # torch-free, so plans can count examples too
from scaling_sweep.train.seeds import derive_seed

__all__ = ["permutation", "subset_indices", "subset_size"]


def permutation(n: int, *, dataset: str, data_seed: int) -> torch.Tensor:
    """The dataset's fixed order for this data_seed (independent of the training seed)."""
    g = torch.Generator().manual_seed(derive_seed("subset", dataset, int(data_seed)))
    return torch.randperm(n, generator=g)


def subset_indices(
    labels: torch.Tensor | int, fraction: float, *, dataset: str, data_seed: int, balanced: bool = False
) -> torch.Tensor:
    """Indices of the training subset, in permutation order; smaller fractions are prefixes of larger ones.

    `labels` holds the targets of every example (its first dimension counts the examples: a fraction
    cuts examples, never the targets of one, so per-token targets (N, T) are N examples), or is just
    the number of examples. `balanced` takes ceil(fraction * N_c) of each class c (each class's own
    prefix of the same permutation), so the balanced subsets nest as well; it needs one class label
    per example.
    """
    n = labels if isinstance(labels, int) else labels.shape[0]
    perm = permutation(n, dataset=dataset, data_seed=data_seed)
    if not balanced:
        return perm[: subset_size(n, fraction)]
    if isinstance(labels, int):
        raise ValueError("a balanced subset needs the labels, not only their count")
    if labels.dim() != 1:
        raise ConfigError(
            f"data.balanced=true: {dataset} has targets of shape {tuple(labels.shape[1:])} per example; "
            f"balancing needs one class label per example (set data.balanced=false)"
        )
    labels = labels.cpu()
    ordered = labels[perm]
    keep = torch.zeros(n, dtype=torch.bool)
    for c in torch.unique(labels).tolist():
        where = (ordered == c).nonzero().flatten()
        keep[where[: subset_size(where.numel(), fraction)]] = True
    return perm[keep]
