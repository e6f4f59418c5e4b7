"""What one batch computes: the loss to train on, and (loss sum, errors, count) to evaluate; ours (classification) or a user's `train.step`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F

from scaling_sweep.errors import ConfigError
from scaling_sweep.targets import Target, resolve

Number = torch.Tensor | int | float


class Step(Protocol):
    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The mean loss over the batch, to backpropagate."""
        ...

    def measure(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, Number, Number]:
        """(summed loss in float64, errors, count) of a batch: error = errors / count, loss = sum / count."""
        ...


class Classification:
    """The built-in step: cross-entropy of the logits, an error for every wrong argmax."""

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(x), y)

    def measure(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, Number, Number]:
        logits = model(x).float()
        return F.cross_entropy(logits, y, reduction="sum").double(), (logits.argmax(1) != y).sum(), y.numel()


class UserStep:
    """A user's `step(model, x, y, **kwargs) -> (loss, errors, count)`.

    loss: the mean loss over the batch (a differentiable scalar); errors: the sum of an error-like
    measure over the batch's predictions (tensor or number); count: how many predictions that is.
    The summed loss it reports for evaluation is loss x count.
    """

    def __init__(self, fn: Callable[..., Any], kwargs: Mapping[str, Any], path: str) -> None:
        self.fn, self.kwargs, self.path = fn, dict(kwargs), path

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, Number, Number]:
        out = self.fn(model, x, y, **self.kwargs)
        if not (isinstance(out, (tuple, list)) and len(out) == 3 and isinstance(out[0], torch.Tensor)):
            got = (
                f"{type(out).__name__} of {len(out)}"
                if isinstance(out, (tuple, list))
                else type(out).__name__
            )
            raise ConfigError(
                f"train.step._target_={self.path}: returned {got}; a step returns (loss tensor, errors, count)"
            )
        if out[0].numel() != 1:
            raise ConfigError(
                f"train.step._target_={self.path}: its loss has shape {tuple(out[0].shape)}; it must be the "
                f"batch's mean loss, one number"
            )
        return out[0], out[1], out[2]

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = self(model, x, y)[0]
        if not loss.requires_grad:
            raise ConfigError(
                f"train.step._target_={self.path}: its loss does not require grad; return the loss the model's "
                f"output computes, not a detached copy or a number"
            )
        return loss

    def measure(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, Number, Number]:
        loss, errors, count = self(model, x, y)
        return loss.detach().double().reshape(()) * count, errors, count


CLASSIFICATION = Classification()


def make_step(target: Target | None) -> Step:
    """The user's step when `train.step` names one (`target`), else classification."""
    if target is None:
        return CLASSIFICATION
    return UserStep(resolve(target), target.kwargs, target.path)
