"""The inner loop: train one level's steps from any position, and evaluate error and loss on a split."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager as ContextManager

import torch
import torch.nn as nn

from scaling_sweep.schema import TrainOptions
from scaling_sweep.train.data import TrainData
from scaling_sweep.train.pruning import Masks
from scaling_sweep.train.schedule import Budget, Optimizer, lr_at, set_lr
from scaling_sweep.train.seeds import derive_seed
from scaling_sweep.train.steps import CLASSIFICATION, Step


def autocast(device: torch.device, amp: bool) -> Callable[[], ContextManager]:
    """bf16 autocast on CUDA when `amp`; a no-op elsewhere (CPU bf16 is slower and changes numbers)."""
    if amp and device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


def epoch_seed(seed: int, level: int, epoch: int) -> int:
    """Seed of one epoch's data order and augmentation: a pure function, so a resume can rebuild it."""
    return derive_seed(seed, "data", level, epoch)


def train_steps(
    model: nn.Module,
    optimizer: Optimizer,
    data: TrainData,
    masks: Masks,
    opts: TrainOptions,
    budget: Budget,
    *,
    seed: int,
    level: int,
    start: int,
    after_step: Callable[[int, torch.Tensor], None],
    amp: Callable[[], ContextManager] = contextlib.nullcontext,
    step_fn: Step = CLASSIFICATION,
) -> None:
    """Train from step `start` of this level's schedule to the end of its budget.

    `step_fn` computes a batch's loss (cross-entropy unless the job names its own `train.step`).
    `after_step(step, loss)` runs after every optimizer step (checkpoints, logging, the stop poll);
    it may raise to end training early.
    """
    model.train()
    for step, x, y in level_batches(data, opts, budget, seed=seed, level=level, start=start):
        loss = optimizer_step(model, optimizer, masks, step_fn, x, y, lr_at(step, opts, budget), amp)
        after_step(step + 1, loss.detach())


def level_batches(
    data: TrainData, opts: TrainOptions, budget: Budget, *, seed: int, level: int, start: int
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """(step, x, y) from step `start` of this level's schedule to its end, each epoch in its seeded order."""
    step = start
    while step < budget.total_steps:
        epoch, skip = divmod(step, budget.steps_per_epoch)
        for x, y in data.train_batches(epoch_seed(seed, level, epoch), opts.batch_size, skip):
            yield step, x, y
            step += 1
            if step >= budget.total_steps:
                return


def optimizer_step(
    model: nn.Module,
    optimizer: Optimizer,
    masks: Masks,
    step_fn: Step,
    x: torch.Tensor,
    y: torch.Tensor,
    lr: float,
    amp: Callable[[], ContextManager] = contextlib.nullcontext,
) -> torch.Tensor:
    """One step on one batch: the loss, its gradient, the update, and the masks re-applied (momentum
    and weight decay would otherwise revive pruned weights). Returns the loss."""
    set_lr(optimizer, lr)
    with amp():
        loss = step_fn.loss(model, x, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    masks.apply()
    return loss


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    amp: Callable[[], ContextManager] = contextlib.nullcontext,
    step_fn: Step = CLASSIFICATION,
) -> tuple[float, float]:
    """(errors / count, summed loss / count) over all batches, in eval mode; sums stay on the device until the end.

    For classification: the fraction of wrong argmaxes and the mean cross-entropy per example.
    """
    was_training = model.training
    model.eval()
    errors = total_loss = None
    n = 0
    for x, y in batches:
        with amp():
            batch_loss, batch_errors, count = step_fn.measure(model, x, y)
        errors = batch_errors if errors is None else errors + batch_errors
        total_loss = batch_loss if total_loss is None else total_loss + batch_loss
        n += count
    model.train(was_training)
    if n == 0:
        return float("nan"), float("nan")
    return float(errors) / float(n), float(total_loss) / float(n)
