"""Which jobs train together (launcher.pack): the setting, what may vary in a pack, how packs are cut."""

from __future__ import annotations

import pytest

from scaling_sweep.errors import ConfigError
from scaling_sweep.packing import AUTO_SIZE, describe, form_packs, pack_key, pack_size, unpackable
from scaling_sweep.spec import JobSpec


def spec(width: float = 0.25, fraction: float = 1.0, seed: int = 0, **train) -> JobSpec:
    return JobSpec(
        model={"name": "cnn1d", "width": width, "depth": 3},
        data={"name": "mnist1d", "fraction": fraction},
        train={"optimizer": "sgd", "lr": 0.4, "batch_size": 128, **train},
        prune={"method": "imp", "rate": 0.4, "levels": 3},
        seed=seed,
    )


def grid(widths=(0.25, 0.5, 1.0), fractions=(0.25, 0.5, 1.0), seeds=(0, 1, 2)) -> list[JobSpec]:
    return [spec(w, f, s) for w in widths for f in fractions for s in seeds]


def test_the_setting_reads_auto_off_and_counts_and_names_what_it_accepts():
    assert pack_size("auto") == AUTO_SIZE
    assert pack_size("off") == pack_size(False) == 1  # YAML reads a bare off as false
    assert pack_size(4) == 4
    for bad in ("on", 0, -2, True, 2.5):
        with pytest.raises(ConfigError, match=r"launcher.pack=.*auto.*off.*integer >= 1"):
            pack_size(bad)


def test_a_pack_varies_only_seed_and_data_fraction():
    assert pack_key(spec(seed=0, fraction=0.25)) == pack_key(spec(seed=5, fraction=1.0))
    assert pack_key(spec(width=0.25)) != pack_key(spec(width=0.5))
    assert pack_key(spec(lr=0.4)) != pack_key(spec(lr=0.1))


def test_jobs_without_a_stacked_program_train_alone_and_say_why():
    assert unpackable(spec()) == ""
    vgg = JobSpec({"name": "cifar_vgg", "width": 1}, {"name": "cifar10", "fraction": 1}, {}, {}, 0)
    assert "cifar_vgg has no stacked program" in unpackable(vgg)
    assert "packs train with SGD" in unpackable(spec(optimizer="adamw"))
    user = JobSpec({"_target_": "mine.Net"}, {"name": "mnist1d", "fraction": 1}, {}, {}, 0)
    assert "user components" in unpackable(user)
    packs = form_packs([spec(), spec(seed=1), vgg, spec(optimizer="adamw")], AUTO_SIZE)
    assert sorted(len(p) for p in packs) == [1, 1, 2]


def test_the_default_grid_packs_by_width_and_starts_the_costliest_pack_first():
    specs = grid()
    per_step = {0.25: 1.6, 0.5: 2.5, 1.0: 3.5}  # ms per step alone, as plan's calibration finds them
    cost = {s.job_id: per_step[s.model["width"]] * s.data["fraction"] for s in specs}
    packs = form_packs(specs, AUTO_SIZE, workers=2, cost=cost, costliest_first=True)
    assert sorted(j.job_id for p in packs for j in p) == sorted(s.job_id for s in specs)  # each job once
    for p in packs:
        assert len({pack_key(j) for j in p}) == 1
    # One pack per width, the costliest first: no worker waits alone on the widest pack at the end.
    assert [(p[0].model["width"], len(p)) for p in packs] == [(1.0, 9), (0.5, 9), (0.25, 9)]
    assert describe(packs) == "27 jobs in 3 packs of 9"
    # Packs are halved only to keep every worker busy (a smaller pack runs less efficiently).
    one_width = [s for s in specs if s.model["width"] == 0.5]
    assert sorted(len(p) for p in form_packs(one_width, AUTO_SIZE, workers=2, cost=cost)) == [4, 5]
    assert [len(p) for p in form_packs(one_width, AUTO_SIZE, workers=1, cost=cost)] == [9]


def test_packs_are_cut_from_the_jobs_alone_not_from_their_launch_order():
    specs = grid(widths=(0.25,))
    once = form_packs(specs, 4, workers=1)
    again = form_packs(list(reversed(specs)), 4, workers=1)
    assert sorted(sorted(j.job_id for j in p) for p in once) == sorted(
        sorted(j.job_id for j in p) for p in again
    )
    assert [len(p) for p in once] == [3, 3, 3]  # 9 jobs at most 4 a pack: near-equal parts
    # Launched in the order of their first job: the caller's order (cheapest first) still rules.
    assert once[0][0].job_id == min(j.job_id for j in once[0])
    first = {j.job_id for j in again[0]}
    assert specs[-1].job_id in first


def test_off_or_a_replacement_trainer_means_one_job_at_a_time():
    specs = grid(widths=(0.25,), fractions=(1.0,))
    assert form_packs(specs, 1, workers=2) == [[s] for s in specs]
    assert describe(form_packs(specs, 1)) == "3 jobs, one per worker (unpacked)"
