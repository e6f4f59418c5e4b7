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
    monkeypatch.setitem(spec_mod.ADDED_OPTIONS, "train", {"label_smoothing": 0.0})
    assert _spec(train__label_smoothing=0.0).job_id == before
    assert _spec(train__label_smoothing=0.1).job_id != before


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
