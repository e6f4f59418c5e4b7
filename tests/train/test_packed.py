"""Packed execution: K jobs as one stacked program give each job its own numbers, checkpoints and rows."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from scaling_sweep.schema import ModelOptions
from scaling_sweep.train.imp import Interrupted, run_imp
from scaling_sweep.train.models import build_model
from scaling_sweep.train.optim import SGD
from scaling_sweep.train.packed import Member, NotStackable, Stack, program, run_pack
from scaling_sweep.train.pruning import Masks, attach_masks


def config(seed: int, fraction: float, width: float = 0.25, model: str = "cnn1d", **train) -> dict:
    return {
        "seed": seed,
        "model": {"name": model, "width": width, "depth": 3 if model == "cnn1d" else 1},
        "data": {"name": "mnist1d", "fraction": fraction},
        "train": {"epochs": 1, "lr": 0.05, "schedule": "cosine", "checkpoint_every": 0, **train},
        "prune": {
            "method": "imp",
            "rate": 0.4,
            "levels": 2,
            "include_output_layer": True,
            "stop_at_chance": 0,
        },
    }


def losses(levels) -> list[tuple[float, float, float]]:
    return [(lv["test_loss"], lv["train_loss"], lv["density"]) for lv in levels]


@pytest.mark.parametrize("name", ["cnn1d", "mlp"])
def test_a_stacked_step_is_each_models_own_step_pruned_weights_stay_zero(name):
    torch.manual_seed(0)
    models = []
    for _ in range(3):
        m = build_model(ModelOptions(name=name, width=0.25, depth=3 if name == "cnn1d" else 1), (1, 40), 10)
        attach_masks(m, True, None, None)
        masks = Masks.of(m)
        masks.prune(masks.count_for_rate(0.5))  # each model its own (magnitude) masks
        masks.apply()
        models.append(m)
    alone = [copy.deepcopy(m) for m in models]
    stack = Stack(models, momentum=0.9, nesterov=False, weight_decay=5e-4)
    optimizers = [SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4) for m in alone]
    for _step in range(3):
        x, y = torch.randn(3, 128, 1, 40), torch.randint(0, 10, (3, 128))
        lrs = [0.1, 0.05, 0.02]  # each job at its own point of its schedule
        packed_losses = stack.step([0, 1, 2], x, y, lrs)
        for k, (m, opt) in enumerate(zip(alone, optimizers)):
            opt.lr = lrs[k]
            loss = F.cross_entropy(m(x[k]), y[k])
            opt.zero_grad()
            loss.backward()
            opt.step()
            Masks.of(m).apply()
            assert packed_losses[k].item() == pytest.approx(loss.item(), abs=1e-5)
    for k, m in enumerate(alone):
        for key, value in m.state_dict().items():
            stacked = (stack.params | stack.buffers)[key][k]
            assert torch.allclose(stacked.float(), value.float(), atol=1e-5), key
            if key.endswith("_mask"):
                weight = stack.params[key.removesuffix("_mask")][k]
                assert torch.all(weight[value == 0] == 0), f"{key}: a pruned weight came back"


def test_layers_without_a_stacked_form_are_refused_by_name():
    model = nn.Module()
    model.body = nn.Sequential(nn.Flatten(), nn.Linear(40, 8), nn.Dropout(0.1))
    model.head = nn.Linear(8, 10)
    with pytest.raises(NotStackable, match=r"body.2: Dropout has no stacked form"):
        program(model)


def test_a_packed_job_matches_it_alone_and_does_not_depend_on_its_pack_mates(tmp_path):
    # Three jobs of two data fractions: different steps per epoch, short last batches, own rates.
    configs = [config(0, 0.25), config(1, 0.25), config(0, 0.5)]
    alone = [run_imp(c, "cpu", tmp_path / f"alone{i}", emit=lambda rows: None) for i, c in enumerate(configs)]
    packed = run_pack(
        [Member(c, tmp_path / f"pack{i}", emit=lambda rows: None) for i, c in enumerate(configs)], "cpu"
    )
    worst = 0.0
    for a, p in zip(alone, packed):
        assert not isinstance(p, BaseException), p
        assert len(p) == len(a) == 3
        assert [lv["steps"] for lv in p] == [lv["steps"] for lv in a]
        for (la, ta, da), (lp, tp, dp) in zip(losses(a), losses(p)):
            assert dp == da  # the same weights pruned
            worst = max(worst, abs(la - lp), abs(ta - tp))
    assert worst < 1e-4, f"largest difference from training alone: {worst:.2e}"
    # The same job in another pack (another mate, another slot): the very same numbers.
    other = run_pack(
        [
            Member(config(7, 1.0), tmp_path / "mate", emit=lambda rows: None),
            Member(configs[2], tmp_path / "again", emit=lambda rows: None),
        ],
        "cpu",
    )
    assert losses(other[1]) == losses(packed[2])


def test_a_stopped_pack_resumes_to_the_uninterrupted_numbers_with_checkpoints_per_job(tmp_path):
    configs = [config(0, 0.25), config(1, 0.5)]
    full = run_pack(
        [Member(c, tmp_path / f"full{i}", emit=lambda rows: None) for i, c in enumerate(configs)], "cpu"
    )
    polls = iter(range(10**6))
    members = [Member(c, tmp_path / f"cut{i}", emit=lambda rows: None) for i, c in enumerate(configs)]
    stopped = run_pack(members, "cpu", stop=lambda: next(polls) == 20)  # mid-level 1 of the short job
    assert all(isinstance(r, Interrupted) for r in stopped)
    assert all((tmp_path / f"cut{i}" / "checkpoint.pt").is_file() for i in range(2))
    emitted: list = []
    members = [Member(c, tmp_path / f"cut{i}", emit=emitted.append) for i, c in enumerate(configs)]
    resumed = run_pack(members, "cpu")
    assert [losses(r) for r in resumed] == [losses(r) for r in full]  # bit-identical
    # Each job resumes as it would alone: a lone run_imp on a packed checkpoint continues it.
    assert losses(run_imp(configs[0], "cpu", tmp_path / "cut0", emit=lambda rows: None)) == losses(full[0])


def test_a_member_that_fails_ends_alone_and_the_others_finish(tmp_path):
    def broken(rows):
        if len(rows) == 2:
            raise RuntimeError("disk on fire")

    members = [
        Member(config(0, 0.25), tmp_path / "a", emit=broken),
        Member(config(1, 0.25), tmp_path / "b", emit=lambda rows: None),
    ]
    results = run_pack(members, "cpu")
    assert isinstance(results[0], RuntimeError) and "disk on fire" in str(results[0])
    assert len(results[1]) == 3
