"""Sweeps on a real SLURM cluster through the CLI: arrays, timeout requeue with resume, scancel + resume, jobs per task, packs, splitting.

CI runs these against the single-node cluster of `.ci/slurm-up.sh`; elsewhere they are skipped
when no `sbatch` is on PATH.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from launchers import slurm_cluster
from scaling_sweep.sweep import SweepDir
from tests.integration.conftest import (
    LEVELS,
    cli,
    max_array_size,
    records,
    release_requeued,
    rows,
    squeue,
    status,
    wait_done,
    wait_for,
)
from tests.test_targets import MODEL

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm")]

CLUSTER = [
    "sweep=smoke",
    "launcher=slurm",
    "launcher.array_parallelism=2",
    "launcher.time_min=10",
    "launcher.signal_delay_s=60",
    "fit.enabled=false",
]
SMOKE = [*CLUSTER, "launcher.pack=off"]  # a task per job: the tests below count and cancel tasks
ONE_JOB = ["grid.model.width=[0.5]", "grid.data.fraction=[1.0]"]


def run(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return cli("run", f"out_dir={out}", *SMOKE, *extra)


def live(job: str) -> bool:
    return any(s not in slurm_cluster.TERMINAL for s in squeue(job))


def log_reached(log: Path, text: str) -> bool:
    return log.exists() and text in log.read_text()


def assert_resumed_from_checkpoint(log: Path, levels: int) -> None:
    """The job's second attempt continued from a checkpoint (wherever the signal landed); no level ran twice."""
    text = log.read_text()
    resumed = re.search(r"resumed at level (\d+), step (\d+)", text)
    assert resumed and (int(resumed.group(1)), int(resumed.group(2))) != (0, 0), text
    assert all(text.count(f"level {k} done") == 1 for k in range(levels)), text


def assert_every_row_once(sweep: Path, n_jobs: int, levels: int = LEVELS) -> None:
    r = rows(sweep)
    assert len(r) == len(set(r)), "duplicate rows"
    assert len(r) == n_jobs * levels


def test_smoke_sweep_runs_as_one_array_and_writes_every_row_once(tmp_path):
    p = run(tmp_path)
    assert "submitted 4 jobs as 4 SLURM task(s) in array" in p.stdout
    sweep = tmp_path / "smoke"
    [record] = records(sweep)
    assert record["array"] and len(record["tasks"]) == 4
    wait_done(sweep, 4)
    assert_every_row_once(sweep, 4)


def test_status_shows_slurm_states_from_one_squeue_call_and_cancel_stops_the_sweep(tmp_path, monkeypatch):
    run(tmp_path, "launcher.array_parallelism=1", "train.epochs=100")  # still queued when asked
    sweep = tmp_path / "smoke"
    [record] = records(sweep)
    calls = []
    real_run = slurm_cluster.run
    monkeypatch.setattr(slurm_cluster, "run", lambda args: calls.append(args[0]) or real_run(args))
    from launchers.slurm import slurm_states

    states = slurm_states(SweepDir(sweep))
    assert calls == ["squeue"]
    assert len(states) == 4 and "PENDING" in states.values()
    shown = {j["job_id"]: j["slurm"] for j in status(sweep)["job_list"]}
    assert "PENDING" in shown.values()
    # resume leaves alone what is already queued or running on the cluster
    assert "nothing to submit" in cli("resume", str(sweep)).stdout

    p = cli("cancel", str(sweep))
    n = int(re.search(r"cancelled (\d+) SLURM array tasks", p.stdout).group(1))
    assert n >= 2  # the first task may have finished already
    wait_for(lambda: not live(record["array_id"]), 60, "the array to leave the queue", sweep)
    counts = status(sweep)["counts"]
    assert counts["running"] == 0 and counts["done"] < 4


def test_timeout_signal_mid_job_checkpoints_requeues_and_resumes(tmp_path):
    import submitit

    run(tmp_path, *ONE_JOB, "prune.levels=1", "train.epochs=200")  # ~3 s a level: the signal lands mid-job
    sweep = tmp_path / "smoke"
    [record] = records(sweep)
    [[job_id]] = record["tasks"]
    slurm_job = record["array_id"]  # one task: a plain job, not an array
    log = sweep / "jobs" / job_id / "log.txt"
    wait_for(lambda: log_reached(log, "level 0 epoch 5 "), 90, "training to start", sweep)

    submitit.SlurmJob(folder=sweep / "slurm" / "logs" / "%j", job_id=slurm_job)._interrupt(timeout=True)
    release_requeued(slurm_job)
    state = wait_done(sweep, 1)

    assert_resumed_from_checkpoint(log, levels=2)
    assert state[job_id].attempts == 2
    task_log = next((sweep / "slurm" / "logs").glob(f"{slurm_job}/*_log.out")).read_text()
    assert "caught SIGUSR2" in task_log and "Requeued job" in task_log
    r = rows(sweep)
    assert sorted(r) == [(job_id, level) for level in range(2)]


def test_preempted_packed_task_requeues_skips_its_finished_job_and_resumes_the_other(tmp_path):
    import submitit

    run(
        tmp_path,
        "grid.model.width=[0.25,0.5]",
        "grid.data.fraction=[1.0]",
        "launcher.jobs_per_task=2",
        "prune.levels=1",
        "train.epochs=100",
    )
    sweep = tmp_path / "smoke"
    [record] = records(sweep)
    [[first, second]] = record["tasks"]
    slurm_job = record["array_id"]
    log = sweep / "jobs" / second / "log.txt"
    wait_for(lambda: log_reached(log, "level 0 epoch 5 "), 120, "the second job to train", sweep)

    # Preemption as submitit simulates it: SIGTERM, then its own signal.
    submitit.SlurmJob(folder=sweep / "slurm" / "logs" / "%j", job_id=slurm_job)._interrupt(timeout=False)
    release_requeued(slurm_job)
    state = wait_done(sweep, 2)

    assert state[first].attempts == 1 and state[second].attempts == 2
    assert_resumed_from_checkpoint(log, levels=2)
    task_log = next((sweep / "slurm" / "logs").glob(f"{slurm_job}/*_log.out")).read_text()
    assert f"job {first}: skipped" in task_log
    assert_every_row_once(sweep, 2, levels=2)


def test_a_pack_is_one_task_and_a_preempted_pack_resumes_each_job_from_its_checkpoint(tmp_path):
    import json

    import submitit

    # Two jobs of one width, data fractions 0.5 and 1: one pack, trained as one stacked program.
    p = cli(
        "run", f"out_dir={tmp_path}", *CLUSTER, "grid.model.width=[0.5]", "prune.levels=1", "train.epochs=100"
    )
    assert "submitted 2 jobs as 1 SLURM task(s) (2 jobs in 1 pack of 2, a task each)" in p.stdout
    sweep = tmp_path / "smoke"
    [record] = records(sweep)
    [jobs] = record["tasks"]
    slurm_job = record["array_id"]
    logs = [sweep / "jobs" / job / "log.txt" for job in jobs]
    wait_for(
        lambda: all(log_reached(log, "level 0 epoch 5 ") for log in logs), 120, "the pack to train", sweep
    )

    submitit.SlurmJob(folder=sweep / "slurm" / "logs" / "%j", job_id=slurm_job)._interrupt(timeout=False)
    release_requeued(slurm_job)
    state = wait_done(sweep, 2)

    for job, log in zip(jobs, logs):
        assert state[job].attempts == 2
        assert_resumed_from_checkpoint(log, levels=2)
        assert "packed: 2 jobs train as one stacked program" in log.read_text()
    assert len({json.loads((sweep / "jobs" / j / "state.json").read_text())["pid"] for j in jobs}) == 1
    assert_every_row_once(sweep, 2, levels=2)


def test_scancel_half_the_array_then_resume_finishes_the_sweep(tmp_path):
    # Long enough levels (~1.5 s each here) that SIGTERM lands mid-job even on a slow machine.
    run(tmp_path, "train.epochs=100")
    sweep = tmp_path / "smoke"
    [record] = records(sweep)
    array = record["array_id"]
    first = record["tasks"][0][0]
    log = sweep / "jobs" / first / "log.txt"
    wait_for(lambda: log_reached(log, "level 0 epoch 2 "), 90, "the first task to train", sweep)
    # A running task (SIGTERM: it checkpoints and exits) and one still pending (2 run at once).
    subprocess.run(["scancel", f"{array}_0", f"{array}_2"], check=True)
    wait_for(lambda: not live(array), 120, "the rest of the array to finish", sweep)
    before = status(sweep)["counts"]
    assert before["done"] == 2 and before["interrupted"] + before["pending"] == 2, before

    p = cli("resume", str(sweep))
    assert "submitted 2 jobs" in p.stdout
    state = wait_done(sweep, 4)
    assert_resumed_from_checkpoint(log, LEVELS)  # continued from the SIGTERM checkpoint
    assert state[first].attempts == 2
    assert_every_row_once(sweep, 4)


def test_jobs_per_task_runs_several_jobs_in_one_task(tmp_path):
    import json

    p = run(tmp_path, "launcher.jobs_per_task=2")
    assert "submitted 4 jobs as 2 SLURM task(s)" in p.stdout
    sweep = tmp_path / "smoke"
    [record] = records(sweep)
    assert [len(t) for t in record["tasks"]] == [2, 2]
    wait_done(sweep, 4)
    for task in record["tasks"]:
        pids = {json.loads((sweep / "jobs" / j / "state.json").read_text())["pid"] for j in task}
        assert len(pids) == 1, f"jobs {task} ran in different processes"
    assert_every_row_once(sweep, 4)


def test_arrays_are_split_at_the_clusters_max_array_size(tmp_path):
    sweep = tmp_path / "smoke"
    with max_array_size(3):
        p = run(tmp_path)
        assert "in arrays" in p.stdout
        assert [len(r["tasks"]) for r in records(sweep)] == [3, 1]
        wait_done(sweep, 4)
    assert_every_row_once(sweep, 4)


def test_unknown_partition_is_refused_before_anything_is_written(tmp_path):
    p = cli("run", f"out_dir={tmp_path}", *SMOKE, "launcher.partition=nope", check=False)
    assert p.returncode == 2
    assert "launcher.partition='nope' is not a partition of this cluster; known: " in p.stdout
    assert not (tmp_path / "smoke").exists()


def test_rejected_sbatch_prints_slurms_message(tmp_path):
    p = cli("run", f"out_dir={tmp_path}", *SMOKE, "launcher.mem_gb=100000", check=False)
    assert p.returncode == 2
    assert "sbatch rejected the submission" in p.stdout and "Batch job submission failed" in p.stdout


def test_array_tasks_import_a_user_model_from_the_config_dir(tmp_path):
    # The module lives only in the --config-dir: the tasks find it through the sweep's recorded import paths.
    import uuid

    import pyarrow.parquet as pq

    conf = tmp_path / "conf"
    (conf / "model").mkdir(parents=True)
    module = f"slurm_user_{uuid.uuid4().hex[:8]}"
    (conf / f"{module}.py").write_text(MODEL)
    (conf / "model" / "user_mlp.yaml").write_text(f"_target_: {module}.UserMLP\nwidth: 1.0\nhidden: 16\n")
    run(tmp_path, "--config-dir", str(conf), "model=user_mlp", *ONE_JOB)
    sweep = tmp_path / "smoke"
    wait_done(sweep, 1)
    assert_every_row_once(sweep, 1)
    table = pq.read_table(sweep / "results.parquet").to_pylist()
    assert {r["model"] for r in table} == {"UserMLP"} and table[-1]["density"] < 1
