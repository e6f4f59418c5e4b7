"""Early stops of a trajectory: before pruning would empty a layer, and on the chance plateau; resume and bookkeeping."""

from __future__ import annotations

import shutil
from dataclasses import asdict

import pytest

from scaling_sweep.job import level_count_problem, run_job
from scaling_sweep.results import read_rows
from scaling_sweep.schema import SECTION_TYPES, PruneOptions
from scaling_sweep.spec import JobSpec
from scaling_sweep.sweep import DONE, SweepDir, spec_levels
from scaling_sweep.train import checkpoint
from scaling_sweep.train.imp import chance_stop, run_imp
from scaling_sweep.train.pruning import MASK, Masks
from tests.train.test_imp import _run, _stop_after, without_wall

CHANCE = 0.9  # MNIST-1D has 10 classes
MARGIN = PruneOptions().chance_margin
STEPS_PER_LEVEL = 16  # the tiny job: 2 epochs of 8 steps

# The tiny MLP with two hidden layers, pruned by half per level: on the chance plateau from about
# level 5, and a layer would empty a level or two later. Checkpoints only at level ends (and on
# stop()): mid-level ones would only slow these many levels down.
DEEP = {"model": {"depth": 2}, "train": {"checkpoint_every": 0}, "prune": {"levels": 14, "rate": 0.5}}


def _deep(job, **prune):
    return job(model=DEEP["model"], train=DEEP["train"], prune={**DEEP["prune"], **prune})


def _at_chance(level: dict) -> bool:
    return level["test_error"] >= CHANCE - MARGIN


def test_deep_trajectory_stops_before_pruning_would_empty_a_layer(job, tmp_path):
    emitted: list[list[dict]] = []
    lines: list[str] = []
    config = job(train=DEEP["train"], prune={"levels": 40, "rate": 0.5, "stop_at_chance": 0})
    levels = run_imp(config, "cpu", tmp_path, emit=emitted.append, log=lines.append)
    stopped = levels.stopped
    last = stopped["level"]
    assert stopped["reason"] == "layer_empty" and last == len(levels) - 1 < 40
    assert [r["level"] for r in levels] == list(range(last + 1)) and emitted[-1] == levels
    assert all(r["density"] > 0 for r in levels)
    assert any(
        line.endswith(
            f"stopping after level {last}: pruning level {last + 1} would remove the last weights "
            f"of layer {stopped['layer']}"
        )
        for line in lines
    )
    # Every layer still has weights, and the stop was needed: one more level empties that layer.
    state = checkpoint.load(tmp_path)["model"]
    names = [k[: -len("." + MASK)] for k in state if k.endswith(MASK)]
    masks = Masks(
        [state[f"{n}.weight"].clone() for n in names], [state[f"{n}.{MASK}"].clone() for n in names]
    )
    assert all(bool(m.any()) for m in masks.masks)
    masks.prune_rate(0.5)
    assert not masks.masks[names.index(stopped["layer"])].any()


def test_trajectory_on_the_chance_plateau_stops_after_k_levels_and_goes_on_when_off(job, tmp_path):
    on = _run(_deep(job), tmp_path / "on")  # stop_at_chance=2 by default
    assert on.stopped["reason"] == "chance" and on.stopped["level"] == len(on) - 1 < 14
    assert all(_at_chance(r) for r in on[-2:])
    assert not _at_chance(on[-3])  # it stopped at the first moment it could
    assert not _at_chance(on[0])
    off = _run(_deep(job, stop_at_chance=0), tmp_path / "off")
    assert len(off) > len(on) and without_wall(off[: len(on)]) == without_wall(on)
    assert off.stopped is None or off.stopped["reason"] == "layer_empty"
    one = _run(_deep(job, stop_at_chance=1), tmp_path / "one")
    assert len(one) == len(on) - 1 and one.stopped["reason"] == "chance"


def test_chance_rule_counts_the_dense_level_only_when_it_is_at_chance():
    def rows(*errors: float) -> list[dict]:
        return [{"level": i, "test_error": e} for i, e in enumerate(errors)]

    k2 = PruneOptions(stop_at_chance=2, chance_margin=0.02)
    assert chance_stop(rows(0.5, 0.89), k2, 10) is None  # a trained dense level is not at chance
    assert chance_stop(rows(0.89, 0.885), k2, 10)["level"] == 1  # an untrained one is
    assert chance_stop(rows(0.5, 0.95, 0.91), k2, 10)["level"] == 2  # worse than chance counts
    assert chance_stop(rows(0.5, 0.87, 0.9), k2, 10) is None  # outside the margin
    assert chance_stop(rows(0.5, 0.9, 0.9), PruneOptions(stop_at_chance=0), 10) is None
    assert chance_stop(rows(0.3, 0.45), PruneOptions(stop_at_chance=1, chance_margin=0.1), 2)["level"] == 1


def test_finished_early_trajectory_is_never_trained_further_on_resume(job, tmp_path):
    config = _deep(job)
    reference = _run(config, tmp_path / "reference")
    last = reference.stopped["level"]

    # Run again on its checkpoint: the same levels and stop, emitted once, nothing trained.
    emitted: list[list[dict]] = []
    again = run_imp(
        config, "cpu", tmp_path / "reference", emit=emitted.append, stop=lambda: pytest.fail("trained")
    )
    assert emitted == [reference] and again == reference and again.stopped == reference.stopped

    # Killed between the last level's checkpoint and the one recording the stop: the resume
    # decides the same stop from that checkpoint, without training.
    between = tmp_path / "between"
    between.mkdir()
    shutil.copy(tmp_path / "reference" / checkpoint.PREVIOUS, between / checkpoint.LATEST)
    saved = checkpoint.load(between)
    assert saved["stopped"] is None and saved["level"] == last + 1 and saved["step"] is None
    resumed = _run(config, between, stop=lambda: pytest.fail("trained"))
    assert resumed == reference and resumed.stopped == reference.stopped
    assert checkpoint.load(between)["stopped"] == reference.stopped

    # Stopped mid-way through the last level it trains: the resume ends at the same place.
    with pytest.raises(Exception, match="stopped at level"):
        _run(config, tmp_path / "mid", stop=_stop_after(STEPS_PER_LEVEL * last + 5))
    resumed = _run(config, tmp_path / "mid")
    assert without_wall(resumed) == without_wall(reference) and resumed.stopped == reference.stopped


def test_checkpoint_from_before_early_stops_existed_still_resumes(job, tmp_path):
    config = job(prune={"levels": 1})
    levels = _run(config, tmp_path)
    saved = checkpoint.load(tmp_path)
    del (
        saved["stopped"],
        saved["identity"]["prune"]["stop_at_chance"],
        saved["identity"]["prune"]["chance_margin"],
    )
    del saved["format"]
    (tmp_path / checkpoint.PREVIOUS).unlink()
    checkpoint.save(tmp_path, saved)
    assert _run(config, tmp_path, stop=lambda: pytest.fail("trained")) == levels
    with pytest.raises(ValueError, match="another job"):  # not the default: another job
        _run(job(prune={"levels": 1, "stop_at_chance": 0}), tmp_path)


def test_oneshot_to_a_density_that_empties_a_layer_keeps_the_dense_row(job, tmp_path):
    config = job(model={"depth": 2}, prune={"method": "oneshot", "density": 1e-4, "levels": 0})
    levels = _run(config, tmp_path)
    assert len(levels) == 1 and levels.stopped["reason"] == "layer_empty" and levels.stopped["level"] == 0


def _spec(config: dict) -> JobSpec:
    sections = {s: {**asdict(SECTION_TYPES[s]()), **config[s]} for s in SECTION_TYPES}
    return JobSpec(**sections, seed=config["seed"])


def test_job_that_stopped_early_is_done_with_its_levels_and_never_retrained(job, tmp_path):
    spec = _spec(_deep(job))
    sweep = SweepDir(tmp_path)
    assert run_job(spec, tmp_path) == "done"
    state = sweep.read_state(spec.job_id)
    stopped = state["stopped"]
    n = stopped["level"] + 1
    assert state["status"] == DONE and stopped["reason"] == "chance"
    assert state["levels_total"] == state["levels_done"] == n < spec_levels(spec) == 15
    assert len(read_rows(sweep.rows_path(spec.job_id))) == n
    assert sweep.is_done(spec.job_id, spec_levels(spec))
    st = sweep.job_status(spec.job_id, spec_levels(spec))
    assert (st.status, st.levels_done, st.levels_total, st.stopped) == (DONE, n, n, stopped)
    assert run_job(spec, tmp_path) == "skipped"

    # A lost rows file: the job is not done; rerunning it rebuilds the rows from the checkpoint.
    sweep.rows_path(spec.job_id).unlink()
    assert sweep.job_status(spec.job_id, spec_levels(spec)).status == "interrupted"
    assert run_job(spec, tmp_path) == "done"
    assert sweep.read_state(spec.job_id)["stopped"] == stopped
    assert len(read_rows(sweep.rows_path(spec.job_id))) == n
    log = (sweep.job_dir(spec.job_id) / "log.txt").read_text()
    assert log.count("level 0 done") == 1 and log.count(stopped["detail"]) >= 2


def test_fewer_levels_without_a_recorded_stop_still_fail_the_job():
    assert level_count_problem(15, 15, None) == ""
    assert "returned 3 levels, expected 15" in level_count_problem(3, 15, None)
    assert level_count_problem(7, 15, {"level": 6}) == ""
    assert "stopped after level 6 but returned 5" in level_count_problem(5, 15, {"level": 6})
