"""JobSpec identity: canonical JSON, what the id ignores, and ids pinned against innocent refactors."""

from __future__ import annotations

import json

from scaling_sweep import spec as spec_mod
from scaling_sweep.spec import JobSpec
from tests.conftest import composed


def _spec(**changes) -> JobSpec:
    cfg = composed()
    sections = {s: dict(cfg[s]) for s in ("model", "data", "train", "prune")}
    for path, v in changes.items():
        section, key = path.split("__")
        sections[section][key] = v
    return JobSpec(**sections, seed=0)


def test_canonical_json_is_sorted_compact_json_of_identity():
    s = _spec()
    assert s.canonical_json == json.dumps(s.identity(), sort_keys=True, separators=(",", ":"))
    assert len(s.job_id) == 16 and int(s.job_id, 16) >= 0


def test_execution_settings_do_not_change_the_id():
    base = _spec()
    assert (
        _spec(data__root="/elsewhere", data__num_workers=16, train__checkpoint_every=7).job_id == base.job_id
    )
    assert _spec(train__lr=0.05).job_id != base.job_id
    assert _spec(model__width=2.0).job_id != base.job_id


def test_seed_and_axes_display():
    a = _spec()
    b = JobSpec(a.model, a.data, a.train, a.prune, seed=1, axes={"seed": 1})
    assert a.job_id != b.job_id
    assert JobSpec(a.model, a.data, a.train, a.prune, seed=0, axes={"x": 1}).job_id == a.job_id


def test_added_option_at_its_default_keeps_old_ids(monkeypatch):
    before = _spec().job_id
    monkeypatch.setitem(
        spec_mod.ADDED_OPTIONS, "train", {**spec_mod.ADDED_OPTIONS["train"], "label_smoothing": 0.0}
    )
    assert _spec(train__label_smoothing=0.0).job_id == before
    assert _spec(train__label_smoothing=0.1).job_id != before


def test_early_stop_options_enter_the_id_only_when_not_at_their_defaults():
    base = _spec()
    assert base.prune["stop_at_chance"] == 2 and base.prune["chance_margin"] == 0.02
    assert "stop_at_chance" not in base.canonical_json and "chance_margin" not in base.canonical_json
    without = {k: v for k, v in base.prune.items() if k not in ("stop_at_chance", "chance_margin")}
    assert JobSpec(base.model, base.data, base.train, without, seed=0).job_id == base.job_id
    assert _spec(prune__stop_at_chance=0).job_id != base.job_id
    assert _spec(prune__chance_margin=0.05).job_id != base.job_id


def test_spec_json_round_trip_checks_the_id():
    s = _spec()
    d = s.to_dict()
    assert JobSpec.from_dict(d).job_id == s.job_id
    d["train"]["lr"] = 123.0
    try:
        JobSpec.from_dict(d)
    except ValueError as e:
        assert s.job_id in str(e)
    else:
        raise AssertionError("a tampered spec.json must not load")


# Ids of finished results in the wild. If one of these changes, every finished job of that kind
# would be orphaned: an option added to the trainer must default to the old behaviour and be
# listed in spec.ADDED_OPTIONS. Change a pin only when the training itself changed on purpose.
PINNED_SPEC = {
    "model": {"name": "mlp", "width": 1.0, "depth": 2},
    "data": {
        "name": "mnist1d",
        "fraction": 0.5,
        "data_seed": 0,
        "balanced": False,
        "augment": False,
        "root": None,
        "cache_dir": None,
        "num_workers": 4,
    },
    "train": {
        "optimizer": "sgd",
        "lr": 0.1,
        "momentum": 0.9,
        "nesterov": False,
        "weight_decay": 0.0005,
        "schedule": "cosine",
        "milestones": [],
        "gamma": 0.1,
        "warmup": 0,
        "epochs": 10,
        "steps": None,
        "batch_size": 128,
        "eval_batch_size": 1000,
        "amp": True,
        "channels_last": True,
        "compile": False,
        "checkpoint_every": 1,
        "log_every": 0,
    },
    "prune": {
        "method": "imp",
        "levels": 6,
        "density": None,
        "rate": 0.2,
        "rewind": "init",
        "include_output_layer": False,
    },
    "seed": 0,
}


def test_pinned_id_of_a_literal_spec():
    assert JobSpec.from_dict(PINNED_SPEC).job_id == "057086b9563644be"


def test_pinned_ids_of_the_shipped_sweeps():
    from scaling_sweep.grid import expand

    # Changed on purpose when the default sweep got its new recipe (rate 0.4, 10 epochs at lr 0.4, output
    # layer pruned) and cifar10_resnet its rewinding to epoch 2; the one-shot pin composes the default sweep.
    first = {
        "mnist1d_imp": ((), "ea9f884b9dc153f2"),
        "smoke": (("sweep=smoke",), "37160aefa5218dba"),
        "cifar10_resnet": (("sweep=cifar10_resnet", "data.root=/"), "ee87024d11b7fefb"),
        "oneshot": (("prune=oneshot", "+grid.prune.density=[0.5]"), "51763563d327dd50"),
    }
    got = {name: expand(composed(*overrides)).specs[0].job_id for name, (overrides, _) in first.items()}
    assert got == {name: pin for name, (_, pin) in first.items()}
