"""Budgets in epochs or steps, and the learning rate as a function of the step."""

import math

import pytest

from scaling_sweep.schema import TrainOptions
from scaling_sweep.train.schedule import Budget, lr_at, make_optimizer


def test_budget_counts_epochs_or_steps_and_says_which():
    assert Budget.of(TrainOptions(epochs=3), steps_per_epoch=10) == Budget(10, 30, "epochs")
    assert Budget.of(TrainOptions(epochs=3, steps=7), steps_per_epoch=10) == Budget(10, 7, "steps")


def test_multistep_milestones_are_in_budget_units():
    opts = TrainOptions(lr=1.0, schedule="multistep", milestones=[2, 4], gamma=0.1, epochs=6)
    budget = Budget.of(opts, steps_per_epoch=10)
    assert [lr_at(s, opts, budget) for s in (0, 19, 20, 39, 40, 59)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01]
    )
    by_steps = TrainOptions(lr=1.0, schedule="multistep", milestones=[2, 4], gamma=0.1, steps=6)
    budget = Budget.of(by_steps, steps_per_epoch=10)
    assert [lr_at(s, by_steps, budget) for s in range(6)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_cosine_decays_from_lr_to_zero_after_linear_warmup():
    opts = TrainOptions(lr=0.4, schedule="cosine", warmup=4, steps=104)
    budget = Budget.of(opts, steps_per_epoch=10)
    assert [lr_at(s, opts, budget) for s in range(4)] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert lr_at(4, opts, budget) == pytest.approx(0.4)
    assert lr_at(54, opts, budget) == pytest.approx(0.2)
    assert lr_at(103, opts, budget) == pytest.approx(0.2 * (1 + math.cos(math.pi * 99 / 100)))


def test_constant_schedule_and_unknown_names():
    opts = TrainOptions(lr=0.3, schedule="constant", epochs=1)
    assert lr_at(5, opts, Budget.of(opts, 10)) == 0.3
    # The plan refuses unknown names (schema.check_train); here one is a bug, not a message.
    with pytest.raises(KeyError):
        lr_at(0, TrainOptions(schedule="step"), Budget(1, 1, "epochs"))
    with pytest.raises(KeyError):
        make_optimizer([], TrainOptions(optimizer="adam"))
