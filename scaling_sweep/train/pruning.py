"""Pruning masks as buffers: which weights are prunable, global magnitude pruning, re-masking, counts."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

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
    """The (weight, mask) pairs of a model that carries mask buffers (and the modules' names)."""

    weights: list[torch.Tensor]
    masks: list[torch.Tensor]
    names: list[str] = field(default_factory=list)  # module names, for messages

    @classmethod
    def of(cls, model: nn.Module) -> Masks:
        mods = [
            (name, m)
            for name, m in model.named_modules()
            if hasattr(m, MASK) and isinstance(getattr(m, MASK), torch.Tensor)
        ]
        return cls([m.weight for _, m in mods], [getattr(m, MASK) for _, m in mods], [n for n, _ in mods])

    def name(self, i: int) -> str:
        return self.names[i] if i < len(self.names) else f"#{i}"

    @torch.no_grad()
    def apply(self) -> None:
        """Zero the pruned weights (after every optimizer step: momentum and decay would revive them)."""
        torch._foreach_mul_(self.weights, self.masks)

    def numel(self) -> int:
        return sum(w.numel() for w in self.weights)

    def remaining(self) -> int:
        return int(sum(int(m.count_nonzero()) for m in self.masks))

    @torch.no_grad()
    def _pruned_flat_mask(self, count: int) -> torch.Tensor:
        """All masks as one flat tensor, with the `count` smallest-magnitude survivors set to 0."""
        flat_mask = torch.cat([m.flatten() for m in self.masks])
        if count <= 0:
            return flat_mask
        scores = torch.cat([w.detach().abs().flatten() for w in self.weights]).float()
        alive = flat_mask.nonzero().flatten()
        if count > alive.numel():
            raise ValueError(f"cannot prune {count} weights: only {alive.numel()} remain")
        # Rank only the survivors (as torch.nn.utils.prune's PruningContainer does), so ties
        # among already-pruned zeros can never eat into the count.
        drop = alive[torch.topk(scores[alive], count, largest=False).indices]
        flat_mask[drop] = 0
        return flat_mask

    @torch.no_grad()
    def prune(self, count: int) -> None:
        """Remove the `count` smallest-magnitude remaining weights, ranked globally across all layers."""
        if count <= 0:
            return
        flat_mask = self._pruned_flat_mask(count)
        offset = 0
        for m in self.masks:
            m.copy_(flat_mask[offset : offset + m.numel()].view_as(m))
            offset += m.numel()
        self.apply()

    @torch.no_grad()
    def emptied_by(self, count: int) -> list[int]:
        """Indices of the layers that `prune(count)` would leave without a single weight.

        Nothing changes: this ranks exactly as `prune` does, so it predicts that call. Removing
        at least as many weights as remain empties every layer.
        """
        if count >= self.remaining():
            return list(range(len(self.masks)))
        flat_mask = self._pruned_flat_mask(count)
        left = torch.split(flat_mask, [m.numel() for m in self.masks])
        return [i for i, m in enumerate(left) if not bool(m.any())]

    def count_for_rate(self, rate: float) -> int:
        """What one IMP level removes: ceil(rate x remaining)."""
        return math.ceil(rate * self.remaining())

    def count_for_density(self, density: float) -> int:
        """What pruning once to `density` removes: all but round(density x prunable), at least one kept."""
        return self.remaining() - max(1, round(density * self.numel()))

    def prune_rate(self, rate: float) -> int:
        """One IMP level: remove ceil(rate x remaining); returns how many were removed."""
        count = self.count_for_rate(rate)
        self.prune(count)
        return count

    def prune_to(self, density: float) -> int:
        """One shot: keep round(density x prunable) weights; returns how many were removed."""
        count = self.count_for_density(density)
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
