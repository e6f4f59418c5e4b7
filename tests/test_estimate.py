"""Estimates before launch: plan's seconds per job and in total, rates from finished jobs, the expected
IMP depth, cheapest-first order (local and SLURM), launcher.order, and the ETA of the progress bar."""

from __future__ import annotations

import json

import pytest
import torch

from scaling_sweep import estimate
from scaling_sweep.cli import main
from scaling_sweep.errors import ConfigError
from scaling_sweep.grid import expand
from scaling_sweep.spec import JobSpec
from tests.conftest import composed

SMOKE = ["sweep=smoke", "launcher.devices=1"]


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err


def test_plan_json_has_an_estimate_per_job_and_a_total(capsys, tmp_path):
    code, out = run_cli(capsys, "plan", "--json", f"out_dir={tmp_path}", *SMOKE)
    assert code == 0, out
    data = json.loads(out)
    jobs = data["job_list"]
    assert len(jobs) == 4 and all(j["estimate_s"] > 0 and j["estimate_source"] == "calibration" for j in jobs)
    # Each figure is rounded to the millisecond on its own: the sum of the rounded parts may differ
    # from the rounded total by half a millisecond a part.
    rounding = 5e-4 * (len(jobs) + 1)
    assert data["estimate_total_s"] == pytest.approx(sum(j["estimate_s"] for j in jobs), abs=rounding)
    assert data["estimate_to_run_s"] == data["estimate_total_s"] and data["workers"] == 1
    # One worker runs them one after another; of one model, more data costs more.
    assert data["estimate_wall_s"] == pytest.approx(data["estimate_total_s"], rel=1e-3, abs=rounding)
    by_axes = {(j["axes"]["model.width"], j["axes"]["data.fraction"]): j["estimate_s"] for j in jobs}
    assert by_axes[0.25, 1.0] > by_axes[0.25, 0.5] and by_axes[0.5, 1.0] > by_axes[0.5, 0.5]
    assert all(j["estimate_max_s"] >= j["estimate_s"] for j in jobs)


def test_plan_screen_shows_the_estimate_columns_and_line(capsys, tmp_path):
    code, out = run_cli(capsys, "plan", f"out_dir={tmp_path}", *SMOKE)
    assert code == 0, out
    assert "flops/example" in out and "estimate" in out and "params" in out
    assert "of device time for 4 jobs to run, about" in out and "on 1 worker(s)" in out


def test_estimate_from_finished_jobs_matches_their_measured_time(capsys, tmp_path):
    """After one seed ran, a plan with a second seed predicts its jobs from the first seed's rows."""
    from scaling_sweep.cli import load_new
    from scaling_sweep.config import to_yaml
    from scaling_sweep.job import run_job

    loaded = load_new([f"out_dir={tmp_path}", *SMOKE])
    loaded.sweep.create(to_yaml(loaded.cfg))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a launcher's worker on this machine: no threads waiting on a busy core
    try:
        for spec in loaded.plan.specs:  # in this process, where torch is warm: no worker start to wait for
            assert run_job(spec, loaded.sweep.path, "cpu", sweep_name="smoke") == "done"
    finally:
        torch.set_num_threads(threads)
    code, out = run_cli(capsys, "plan", "--json", f"out_dir={tmp_path}", *SMOKE, "grid.seed=[0,1]")
    assert code == 0, out
    jobs = json.loads(out)["job_list"]

    def config(job: dict) -> tuple:
        return tuple(sorted((k, v) for k, v in job["axes"].items() if k != "seed"))

    done = {config(j): j for j in jobs if j["status"] == "done"}
    predicted = [j for j in jobs if j["status"] == "pending"]
    assert len(done) == len(predicted) == 4
    for j in predicted:
        twin = done[config(j)]
        assert twin["estimate_source"] == "measured" and j["estimate_source"] == "finished jobs"
        assert j["estimate_levels"] == twin["levels_done"]
        # Per job, as close as the levels' own spread on a shared machine allows; in total, the fit
        # (least squares with an intercept, or the mean rate) gives back what was measured.
        assert j["estimate_s"] == pytest.approx(twin["estimate_s"], rel=0.5)
    total = sum(j["estimate_s"] for j in predicted)
    assert total == pytest.approx(sum(done[config(j)]["estimate_s"] for j in predicted), rel=0.02)


def _spec(width: float, fraction: float, seed: int = 0, **prune) -> JobSpec:
    return expand(
        composed(
            "model=mlp",
            f"grid.model.width=[{width}]",
            f"grid.data.fraction=[{fraction}]",
            f"grid.seed=[{seed}]",
            *(f"prune.{k}={v}" for k, v in prune.items()),
        )
    ).specs[0]


def test_rates_fitted_to_finished_levels_predict_a_job_of_the_same_kind_exactly():
    # wall_s = 4 ms a step + 50 ms a level; the two fractions make two step counts to fit the line to.
    finished = []
    for fraction in (0.25, 1.0):
        spec = _spec(1.0, fraction)
        b = estimate.budget(spec)
        rows = [
            {"level": i, "steps": b.dense_steps, "wall_s": 0.004 * b.dense_steps + 0.05} for i in range(5)
        ]
        finished.append((spec, rows))
    pending = _spec(1.0, 0.5, seed=1)
    est = estimate.estimate([pending], threads=1, device=None, finished=finished).jobs[pending.job_id]
    steps = estimate.budget(pending).dense_steps
    # The depth of jobs of another fraction is not taken: the expected-levels rule gives it.
    levels = estimate.expected_levels(pending.prune, *_counts(pending))
    assert est.source == "finished jobs" and est.levels == levels
    assert est.seconds == pytest.approx(
        estimate.JOB_S + levels * (0.004 * steps + 0.05 + estimate.LEVEL_S), rel=1e-6
    )


def test_levels_trained_in_a_pack_give_no_rates_only_lone_ones_do(tmp_path):
    """A packed job's wall_s is its whole pack's time: taken as its own, it would double a plan's estimate."""
    from scaling_sweep.cli import load_new
    from scaling_sweep.config import to_yaml
    from scaling_sweep.job import run_job, run_pack

    loaded = load_new([f"out_dir={tmp_path}", *SMOKE, "grid.model.width=[0.5]"])
    loaded.sweep.create(to_yaml(loaded.cfg))
    packed, alone = loaded.plan.specs  # fractions 0.5 and 1 of one width
    assert run_pack([packed], loaded.sweep.path, "cpu", sweep_name="smoke") == {packed.job_id: "done"}
    assert run_job(alone, loaded.sweep.path, "cpu", sweep_name="smoke") == "done"
    finished = dict((s.job_id, rows) for s, rows in estimate.finished_rows(loaded.sweep, loaded.plan.specs))
    assert {r["pack"] for r in finished[packed.job_id]} == {1} == {r["pack"] for r in finished[alone.job_id]}
    assert estimate.rates_from_rows(finished[packed.job_id]) is not None  # a pack of one: stepped alone

    loaded.sweep.write_state(packed.job_id, pack=9)  # as a pack of 9 records it
    finished = dict((s.job_id, rows) for s, rows in estimate.finished_rows(loaded.sweep, loaded.plan.specs))
    assert {r["pack"] for r in finished[packed.job_id]} == {9}
    assert estimate.rates_from_rows(finished[packed.job_id]) is None
    assert estimate.rates_from_rows(
        finished[packed.job_id] + finished[alone.job_id]
    ) == estimate.rates_from_rows(finished[alone.job_id])


def _counts(spec: JobSpec) -> tuple[int, int, int]:
    c = estimate.census_of(spec)
    return c.params_prunable, c.prunable_tensors, 10


def test_expected_levels_stop_at_two_weights_per_class_or_the_planned_depth():
    prune = {"method": "imp", "levels": 16, "rate": 0.4, "stop_at_chance": 2}
    # The default sweep's cnn1d: 7,904 / 2,416 / 824 prunable weights in 4 tensors, 10 classes.
    assert [estimate.expected_levels(prune, n, 4, 10) for n in (7904, 2416, 824)] == [13, 11, 9]
    assert estimate.expected_levels({**prune, "levels": 5}, 7904, 4, 10) == 6  # planned: a cap
    assert estimate.expected_levels({**prune, "stop_at_chance": 0}, 7904, 4, 10) == 16  # layers only
    assert estimate.expected_levels(prune, None, None, None) == 17  # unknown: the planned levels


def test_cheapest_first_by_estimate_and_grid_order_kept():
    specs = [_spec(w, f) for w in (1.0, 0.25) for f in (1.0, 0.25)]
    est = estimate.Estimates(
        {
            s.job_id: estimate.JobEstimate(
                10 * s.model["width"] + s.data["fraction"], None, 1, 1, "calibration"
            )
            for s in specs
        }
    )
    cheapest = estimate.ordered(specs, "cheapest", est)
    assert [(s.model["width"], s.data["fraction"]) for s in cheapest] == [
        (0.25, 0.25),
        (0.25, 1.0),
        (1.0, 0.25),
        (1.0, 1.0),
    ]
    assert estimate.ordered(specs, "grid", est) == specs
    # Without seconds, params x examples trained ranks them.
    work = estimate.Estimates(
        {s.job_id: estimate.JobEstimate(None, None, 1, 1, "unknown", work=s.model["width"]) for s in specs}
    )
    assert [s.model["width"] for s in estimate.ordered(specs, "cheapest", work)] == [0.25, 0.25, 1.0, 1.0]


def test_local_and_slurm_launchers_hand_out_the_cheapest_first(tmp_path, monkeypatch):
    from launchers import local, slurm
    from scaling_sweep.sweep import SweepDir

    specs = [_spec(w, 1.0) for w in (2.0, 0.5, 1.0)]
    est = estimate.Estimates(
        {s.job_id: estimate.JobEstimate(s.model["width"], None, 1, 1, "calibration") for s in specs}
    )
    seen: dict[str, list[float]] = {}

    class Pool:
        def __init__(self, launcher, sweep, packs, fail_fast, progress):
            seen["local"] = [s.model["width"] for pack in packs for s in pack]

        def run(self):
            return local.LaunchResult()

    monkeypatch.setattr(local, "_Pool", Pool)
    launcher = local.LocalLauncher(["cpu"], progress=False)
    launcher.estimates = est
    launcher.launch(SweepDir(tmp_path), specs)
    assert seen["local"] == [0.5, 1.0, 2.0]
    grid = local.LocalLauncher.from_config({"name": "local", "devices": ["cpu"], "order": "grid"})
    grid.estimates = est
    grid.launch(SweepDir(tmp_path), specs)
    assert seen["local"] == [2.0, 0.5, 1.0]

    submitted = []
    sl = slurm.SlurmLauncher(slurm.SlurmOptions())
    sl.estimates = est
    monkeypatch.setattr(sl, "check_cluster", lambda: None)
    monkeypatch.setattr(slurm, "slurm_states", lambda sweep: {})
    monkeypatch.setattr(slurm.slurm_cluster, "max_array_size", lambda: 1000)
    monkeypatch.setattr(sl, "_submit", lambda sweep, tasks: submitted.extend(tasks) or "1")
    sl.launch(SweepDir(tmp_path), specs)
    assert [(group[0].model["width"], packed) for group, packed in submitted] == [
        (0.5, False),
        (1.0, False),
        (2.0, False),
    ]


def test_a_bad_order_is_one_line(capsys, tmp_path):
    code, out = run_cli(capsys, "run", f"out_dir={tmp_path}", *SMOKE, "launcher.order=fastest")
    assert code == 2 and out.strip().splitlines() == [
        "error: launcher.order='fastest': use cheapest (cheapest jobs first, by the estimate) or grid "
        "(the order the grid declares)"
    ]
    assert not any(tmp_path.iterdir())
    from launchers.slurm import SlurmOptions

    with pytest.raises(ConfigError, match=r"^launcher.order='size': use cheapest"):
        SlurmOptions.parse({"order": "size"})


def test_eta_hands_queued_jobs_to_free_workers_and_learns_from_finished_ones(monkeypatch, tmp_path):
    from launchers import progress as progress_mod

    clock = [100.0]
    monkeypatch.setattr(progress_mod.time, "monotonic", lambda: clock[0])
    p = progress_mod.SweepProgress(
        total=3, enabled=False, estimates={"a": 10.0, "b": 10.0, "c": 20.0}, workers=2, order=["a", "b", "c"]
    )
    with p:
        assert p.eta() == 30.0  # a and b at once, then c after one of them
        p.job_started("a")
        p.job_started("b")
        clock[0] += 20.0  # both took twice their estimate
        p.job_ended("a", "done", "", tmp_path, running=1)
        p.job_ended("b", "done", "", tmp_path, running=0)
        p.job_started("c")
        assert p.eta() == pytest.approx(40.0)  # c is expected to take twice its 20 s too
        clock[0] += 30.0
        assert p.eta() == pytest.approx(10.0)


def test_wall_clock_of_jobs_on_workers():
    assert estimate.wall_clock([1, 1, 1, 1], 2) == 2
    assert estimate.wall_clock([3, 1, 1, 1], 2) == 3
    assert estimate.wall_clock([1], 2, busy=[5.0]) == 5


def test_plan_without_estimates_leaves_out_counts_and_times(capsys, tmp_path):
    assert main(["plan", "--json", "--no-estimate", "sweep=smoke", f"out_dir={tmp_path}"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["jobs"] == 4 and "estimate_total_s" not in data
    assert not {"estimate_s", "params", "flops_per_example"} & set(data["job_list"][0])
