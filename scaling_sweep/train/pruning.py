"""Pruning masks as buffers: which weights are prunable, global magnitude pruning, re-masking, counts."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

MASK = "weight_mask"  # buffer name on every prunable module; saved with the model's state_dict
PRUNABLE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def prunable_modules(model: nn.Module, include_output_layer: bool) -> list[nn.Module]:
    """Conv/Linear modules whose weights are pruned; the model's `.head` only when asked.

    Biases and BatchNorm are never pruned (they are not in this list).
    """
    head = getattr(model, "head", None)
    return [
        m
        for m in model.modules()
        if isinstance(m, PRUNABLE_TYPES) and (include_output_layer or m is not head)
    ]


def attach_masks(model: nn.Module, include_output_layer: bool) -> None:
    """Give each prunable module an all-ones `weight_mask` buffer (dense)."""
    for m in prunable_modules(model, include_output_layer):
        m.register_buffer(MASK, torch.ones_like(m.weight))


@dataclass
class Masks:
    """The (weight, mask) pairs of a model that carries mask buffers."""

    weights: list[torch.Tensor]
    masks: list[torch.Tensor]

    @classmethod
    def of(cls, model: nn.Module) -> Masks:
        mods = [m for m in model.modules() if hasattr(m, MASK) and isinstance(getattr(m, MASK), torch.Tensor)]
        return cls([m.weight for m in mods], [getattr(m, MASK) for m in mods])

    @torch.no_grad()
    def apply(self) -> None:
        """Zero the pruned weights (after every optimizer step: momentum and decay would revive them)."""
        torch._foreach_mul_(self.weights, self.masks)

    def numel(self) -> int:
        return sum(w.numel() for w in self.weights)

    def remaining(self) -> int:
        return int(sum(int(m.count_nonzero()) for m in self.masks))

    @torch.no_grad()
    def prune(self, count: int) -> None:
        """Remove the `count` smallest-magnitude remaining weights, ranked globally across all layers."""
        if count <= 0:
            return
        flat_mask = torch.cat([m.flatten() for m in self.masks])
        scores = torch.cat([w.detach().abs().flatten() for w in self.weights]).float()
        alive = flat_mask.nonzero().flatten()
        if count > alive.numel():
            raise ValueError(f"cannot prune {count} weights: only {alive.numel()} remain")
        # Rank only the survivors (as torch.nn.utils.prune's PruningContainer does), so ties
        # among already-pruned zeros can never eat into the count.
        drop = alive[torch.topk(scores[alive], count, largest=False).indices]
        flat_mask[drop] = 0
        offset = 0
        for m in self.masks:
            m.copy_(flat_mask[offset : offset + m.numel()].view_as(m))
            offset += m.numel()
        self.apply()

    def prune_rate(self, rate: float) -> int:
        """One IMP level: remove ceil(rate x remaining); returns how many were removed."""
        count = math.ceil(rate * self.remaining())
        self.prune(count)
        return count

    def prune_to(self, density: float) -> int:
        """One shot: keep round(density x prunable) weights; returns how many were removed."""
        count = self.remaining() - max(1, round(density * self.numel()))
        self.prune(count)
        return count

    def nonzero(self) -> int:
        return int(sum(int(w.count_nonzero()) for w in self.weights))

    def density(self) -> float:
        """Measured fraction of prunable weights that are non-zero."""
        return self.nonzero() / max(1, self.numel())

    def check(self) -> None:
        """Raise if any pruned weight is non-zero (the invariant every level must keep)."""
        leaked = sum(int((w.detach() * (1 - m)).count_nonzero()) for w, m in zip(self.weights, self.masks))
        if leaked:
            raise RuntimeError(f"{leaked} pruned weights are non-zero; masks were not re-applied")


def param_counts(model: nn.Module, masks: Masks) -> dict[str, int]:
    """params_total (all parameters), params_prunable, params_nonzero (all parameters counted)."""
    params = list(model.parameters())
    return {
        "params_total": sum(p.numel() for p in params),
        "params_prunable": masks.numel(),
        "params_nonzero": int(sum(int(p.count_nonzero()) for p in params)),
    }
