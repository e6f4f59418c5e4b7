"""The trainer's SGD and AdamW reproduce torch.optim's foreach implementations bit for bit."""

import copy

import pytest
import torch

from scaling_sweep.train.optim import SGD, AdamW


def _train_both(make_ours, make_reference, steps: int = 8):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 9), torch.nn.ReLU(), torch.nn.Linear(9, 4))
    ref = copy.deepcopy(net)
    ours, theirs = make_ours(net.parameters()), make_reference(ref.parameters())
    for _ in range(steps):
        x = torch.randn(5, 6)
        for model, opt in ((net, ours), (ref, theirs)):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    return list(net.parameters()), list(ref.parameters())


@pytest.mark.parametrize("momentum, nesterov, wd", [(0.0, False, 0.0), (0.9, False, 5e-4), (0.9, True, 1e-4)])
def test_sgd_matches_torch_optim_bitwise(momentum, nesterov, wd):
    ours, ref = _train_both(
        lambda p: SGD(p, lr=0.1, momentum=momentum, nesterov=nesterov, weight_decay=wd),
        lambda p: torch.optim.SGD(
            p, lr=0.1, momentum=momentum, nesterov=nesterov, weight_decay=wd, foreach=True
        ),
    )
    assert all(torch.equal(a, b) for a, b in zip(ours, ref))


def test_adamw_matches_torch_optim_bitwise():
    ours, ref = _train_both(
        lambda p: AdamW(p, lr=0.01, weight_decay=0.05),
        lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.05, foreach=True),
    )
    assert all(torch.equal(a, b) for a, b in zip(ours, ref))


def test_optimizer_state_round_trips_through_state_dict():
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    for make in (lambda p: SGD(p, 0.1, momentum=0.9), lambda p: AdamW(p, 0.01)):
        opt = make(net.parameters())
        net(torch.randn(4, 3)).sum().backward()
        opt.step()
        clone = make(net.parameters())
        clone.load_state_dict(copy.deepcopy(opt.state_dict()))
        for a, b in zip(opt.state_dict().values(), clone.state_dict().values()):
            if isinstance(a, list):
                assert all(torch.equal(x, y) for x, y in zip(a, b))
            else:
                assert a == b
