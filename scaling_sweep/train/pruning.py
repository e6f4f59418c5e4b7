"""Pruning masks as buffers: which parameters are prunable, global magnitude pruning, re-masking, counts."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import torch
import torch.nn as nn

# A prunable parameter `p` of a module gets a buffer `p_mask` on the same module (so `weight` gets
# `weight_mask`, as torch.nn.utils.prune names it); masks are saved with the model's state_dict.
MASK_SUFFIX = "_mask"
MASK = "weight" + MASK_SUFFIX
# Lookup tables rather than learned maps: pruning a row of one removes a token or a position.
EMBEDDINGS = (nn.Embedding, nn.EmbeddingBag)


def output_layer(model: nn.Module) -> set[str]:
    """Names of the output layer's parameters: the model's `.head` module, else the last 2-D+ weight."""
    head = getattr(model, "head", None)
    if isinstance(head, nn.Module):
        owner = next((n for n, m in model.named_modules() if m is head), "head")
        return {f"{owner}.{n}" if owner else n for n, _ in head.named_parameters()}
    weights = [n for n, p in model.named_parameters() if p.dim() >= 2 and n.endswith("weight")]
    return set(weights[-1:])


def prunable_parameters(
    model: nn.Module,
    include_output_layer: bool,
    include: str | None = None,
    exclude: str | None = None,
) -> list[tuple[str, nn.Parameter]]:
    """The (name, parameter) pairs IMP prunes, in registration order.

    Default: every weight with two or more dimensions (Conv, Linear, attention in- and
    out-projections) except embeddings; `include` (a regular expression searched in the full
    parameter name) replaces that rule, `exclude` removes what it matches; the output layer stays
    dense unless `include_output_layer`. Biases and normalisation scales are 1-D: never by default.
    """
    embedding_params = {
        id(p) for m in model.modules() if isinstance(m, EMBEDDINGS) for p in m.parameters(recurse=False)
    }
    inc = re.compile(include) if include else None
    exc = re.compile(exclude) if exclude else None
    head = set() if include_output_layer else output_layer(model)
    out = []
    for name, p in model.named_parameters():
        if inc is not None:
            chosen = bool(inc.search(name))
        else:
            chosen = (
                p.dim() >= 2 and name.rpartition(".")[2].endswith("weight") and id(p) not in embedding_params
            )
        if chosen and not (exc is not None and exc.search(name)) and name not in head:
            out.append((name, p))
    return out


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, attr = name.rpartition(".")
    return (model.get_submodule(path) if path else model), attr


def attach_masks(
    model: nn.Module,
    include_output_layer: bool,
    include: str | None = None,
    exclude: str | None = None,
) -> None:
    """Give each prunable parameter an all-ones `<name>_mask` buffer on its module (dense)."""
    for name, p in prunable_parameters(model, include_output_layer, include, exclude):
        module, attr = _owner(model, name)
        module.register_buffer(attr + MASK_SUFFIX, torch.ones_like(p, requires_grad=False))


@dataclass
class Masks:
    """The (weight, mask) pairs of a model that carries mask buffers (and the modules' names)."""

    weights: list[torch.Tensor]
    masks: list[torch.Tensor]
    names: list[str] = field(default_factory=list)  # layer names, for messages
    keys: list[str] = field(default_factory=list)  # the masks' state_dict keys

    @classmethod
    def of(cls, model: nn.Module) -> Masks:
        weights, masks, names, keys = [], [], [], []
        for module_name, module in model.named_modules():
            for attr, p in module.named_parameters(recurse=False):
                mask = getattr(module, attr + MASK_SUFFIX, None)
                if isinstance(mask, torch.Tensor) and mask.shape == p.shape:
                    full = f"{module_name}.{attr}" if module_name else attr
                    weights.append(p)
                    masks.append(mask)
                    # A module's `weight` is named by the module (layer "body.0"), other tensors in full.
                    names.append(module_name if attr == "weight" and module_name else full)
                    keys.append(full + MASK_SUFFIX)
        return cls(weights, masks, names, keys)

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


def describe(masks: Masks, model: nn.Module) -> str:
    """One line for the job log: how many parameters IMP prunes, and in how many tensors."""
    total = sum(p.numel() for p in model.parameters())
    return (
        f"prunable: {masks.numel():,} of {total:,} parameters ({100 * masks.numel() / max(1, total):.1f} %) "
        f"in {len(masks.weights)} tensors"
    )


def param_counts(model: nn.Module, masks: Masks) -> dict[str, int]:
    """params_total (all parameters), params_prunable, params_nonzero (all parameters counted)."""
    params = list(model.parameters())
    return {
        "params_total": sum(p.numel() for p in params),
        "params_prunable": masks.numel(),
        "params_nonzero": int(sum(int(p.count_nonzero()) for p in params)),
    }
