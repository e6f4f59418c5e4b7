"""The training budget (epochs or steps), the optimizer, and the learning rate as a pure function of the step."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from scaling_sweep.schema import TrainOptions
from scaling_sweep.train.optim import SGD, AdamW

Optimizer = SGD | AdamW


@dataclass(frozen=True)
class Budget:
    """How long one level trains, counted in optimizer steps."""

    steps_per_epoch: int
    total_steps: int
    unit: str  # "epochs" or "steps": which one the config fixed

    @classmethod
    def of(cls, opts: TrainOptions, steps_per_epoch: int) -> Budget:
        if opts.steps is not None:
            return cls(steps_per_epoch, int(opts.steps), "steps")
        return cls(steps_per_epoch, int(opts.epochs) * steps_per_epoch, "epochs")

    def to_steps(self, amount: int) -> int:
        """A count in budget units (milestones) as optimizer steps."""
        return amount * self.steps_per_epoch if self.unit == "epochs" else amount


# Names, epochs and steps were checked when the sweep was planned (schema.check_train): an unknown
# name here is a bug, and raises a plain KeyError.
def make_optimizer(params: Iterable[torch.nn.Parameter], opts: TrainOptions) -> Optimizer:
    """A fresh optimizer (IMP restarts the optimizer state at every level)."""
    if opts.optimizer == "sgd":
        return SGD(
            params, lr=opts.lr, momentum=opts.momentum, nesterov=opts.nesterov, weight_decay=opts.weight_decay
        )
    if opts.optimizer == "adamw":
        return AdamW(params, lr=opts.lr, weight_decay=opts.weight_decay)
    raise KeyError(opts.optimizer)


def lr_at(step: int, opts: TrainOptions, budget: Budget) -> float:
    """Learning rate for the optimizer step that follows `step` steps of this level's schedule."""
    if step < opts.warmup:
        return opts.lr * (step + 1) / opts.warmup
    if opts.schedule == "constant":
        return opts.lr
    if opts.schedule == "multistep":
        passed = sum(1 for m in opts.milestones if step >= budget.to_steps(m))
        return opts.lr * opts.gamma**passed
    if opts.schedule == "cosine":
        span = max(1, budget.total_steps - opts.warmup)
        progress = min(1.0, (step - opts.warmup) / span)
        return opts.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise KeyError(opts.schedule)


def set_lr(optimizer: Optimizer, lr: float) -> None:
    optimizer.lr = lr
