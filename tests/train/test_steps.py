"""Training steps: classification's loss and metrics, a user's (loss, errors, count), one-line errors for what is not one."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from scaling_sweep.errors import ConfigError
from scaling_sweep.train.loop import evaluate
from scaling_sweep.train.steps import CLASSIFICATION, UserStep


def _batches(n_batches: int = 3):
    g = torch.Generator().manual_seed(0)
    return [
        (torch.randn(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(n_batches)
    ]


def test_a_user_step_of_classification_evaluates_as_the_built_in_one():
    def classify(model, x, y, scale=1.0):
        logits = model(x) * scale
        return F.cross_entropy(logits, y), (logits.argmax(1) != y).sum(), y.numel()

    model = nn.Linear(4, 3)
    built_in = evaluate(model, _batches())
    user = evaluate(model, _batches(), step_fn=UserStep(classify, {"scale": 1.0}, "pkg.classify"))
    assert user[0] == built_in[0] and user[1] == pytest.approx(built_in[1], rel=1e-6)
    x, y = _batches(1)[0]
    assert torch.equal(CLASSIFICATION.loss(model, x, y), F.cross_entropy(model(x), y))


def test_counts_weight_the_loss_and_divide_the_errors():
    def per_token(model, x, y):  # two predictions per example, the second batch twice the loss
        loss = model(x).sum() * 0 + float(len(x))
        return loss, torch.tensor(1), 2 * len(x)

    batches = [(torch.zeros(1, 4), None), (torch.zeros(2, 4), None)]
    error, loss = evaluate(nn.Linear(4, 1), batches, step_fn=UserStep(per_token, {}, "pkg.per_token"))
    assert error == 2 / 6 and loss == pytest.approx((1 * 2 + 2 * 4) / 6)


@pytest.mark.parametrize(
    ("returns", "message"),
    [
        (lambda m, x, y: m(x).mean(), r"returned Tensor; a step returns \(loss tensor, errors, count\)"),
        (lambda m, x, y: (m(x).mean(), 0), r"returned tuple of 2; a step returns"),
        (lambda m, x, y: (m(x), 0, 1), r"its loss has shape \(8, 3\); it must be the batch's mean loss"),
        (lambda m, x, y: (m(x).mean().detach(), 0, 1), r"its loss does not require grad"),
    ],
)
def test_a_step_that_returns_something_else_fails_in_one_line(returns, message):
    step = UserStep(returns, {}, "pkg.step")
    x, y = _batches(1)[0]
    with pytest.raises(ConfigError, match=rf"^train.step._target_=pkg.step: {message}") as e:
        step.loss(nn.Linear(4, 3), x, y)
    assert "\n" not in str(e.value)
