"""End to end on this machine: real MNIST-1D trainings through the CLI and the local worker pool.

Covers the spine's promises: a sweep's rows land once per job and level; a finished job is
never retrained; kill -9 or Ctrl-C at any moment, then `resume`, ends with exactly the rows of an
uninterrupted run (bit-identical numbers on CPU); failures are recorded and the sweep goes on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import CLI, ROOT, cli_env

# Six small real trainings of a few seconds each: long enough to be interrupted mid-job.
SWEEP = [
    "sweep=smoke",
    "grid.model.width=[0.25,0.5,1]",
    "grid.data.fraction=[0.5,1]",
    "train.epochs=4",
    "launcher.devices=[cpu,cpu]",
    "fit.enabled=false",
]
LEVELS = 3  # smoke: prune.levels=2 -> levels 0, 1, 2


def cli(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run(
        [*CLI, *args], cwd=ROOT, env=cli_env(), text=True, capture_output=True, timeout=600, **kw
    )
    if check and p.returncode != 0:
        raise AssertionError(f"{args} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def status(sweep_dir: Path) -> dict:
    return json.loads(cli("status", "--json", str(sweep_dir)).stdout)


def metrics(sweep_dir: Path) -> dict:
    table = pq.read_table(sweep_dir / "results.parquet").to_pylist()
    keys = [(r["job_id"], r["level"]) for r in table]
    assert len(keys) == len(set(keys)), "duplicate rows"
    return {
        (r["job_id"], r["level"]): (r["test_error"], r["test_loss"], r["train_loss"], r["density"])
        for r in table
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The same sweep run once without interruption."""
    out = tmp_path_factory.mktemp("reference")
    cli("run", f"out_dir={out}", *SWEEP)
    return metrics(out / "smoke")


def _start(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*CLI, "run", f"out_dir={out}", *SWEEP, *extra],
        cwd=ROOT,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _wait_for(predicate, timeout: float = 300) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def _rows_files(sweep_dir: Path) -> list[Path]:
    return list((sweep_dir / "rows").glob("*.parquet")) if (sweep_dir / "rows").is_dir() else []


def test_sweep_writes_every_level_once_and_never_retrains(reference, tmp_path):
    assert len(reference) == 6 * LEVELS
    assert len({job for job, _ in reference}) == 6
    first = cli("run", f"out_dir={tmp_path}", *SWEEP)
    assert f"results: {tmp_path}/smoke/results.parquet (18 rows)" in first.stdout
    assert metrics(tmp_path / "smoke") == reference  # the same job gives the same numbers
    stamps = {p.name: p.stat().st_mtime_ns for p in _rows_files(tmp_path / "smoke")}
    again = cli("run", f"out_dir={tmp_path}", *SWEEP)
    assert "0 jobs to run (6 done left alone)" in again.stdout
    assert {p.name: p.stat().st_mtime_ns for p in _rows_files(tmp_path / "smoke")} == stamps
    st = status(tmp_path / "smoke")
    assert st["counts"]["done"] == 6 and st["to_run"] == 0
    assert all(j["attempts"] == 1 and j["levels_done"] == LEVELS for j in st["job_list"])


def test_kill_9_at_any_moment_then_resume_gives_the_uninterrupted_rows(reference, tmp_path):
    sweep_dir = tmp_path / "smoke"
    proc = _start(tmp_path)
    # Kill the whole run (parent and workers) once some job has written rows and others are mid-training.
    _wait_for(lambda: len(_rows_files(sweep_dir)) >= 2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = status(sweep_dir)
    assert before["counts"]["done"] < 6, "killed too late to test anything"
    done_before = {j["job_id"] for j in before["job_list"] if j["status"] == "done"}
    cli("resume", str(sweep_dir))
    after = status(sweep_dir)
    assert after["counts"]["done"] == 6
    for j in after["job_list"]:
        if j["job_id"] in done_before:
            assert j["attempts"] == 1  # finished jobs were not run again
    assert metrics(sweep_dir) == reference


def test_ctrl_c_checkpoints_running_jobs_and_resume_continues_them(reference, tmp_path):
    sweep_dir = tmp_path / "smoke"
    proc = _start(tmp_path)
    _wait_for(lambda: any(sweep_dir.glob("jobs/*/ckpt/*.pt")))
    os.killpg(proc.pid, signal.SIGINT)  # what the terminal sends to the foreground group
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, out
    assert "continue with `scaling-sweep resume" in out
    st = status(sweep_dir)
    if st["counts"]["done"] == 6:
        pytest.skip("every job finished before Ctrl-C arrived")
    assert st["counts"]["interrupted"] + st["counts"]["pending"] > 0
    cli("resume", str(sweep_dir))
    assert metrics(sweep_dir) == reference


def test_two_processes_on_one_sweep_never_train_a_job_twice(reference, tmp_path):
    sweep_dir = tmp_path / "smoke"
    cli("plan", f"out_dir={tmp_path}", *SWEEP)
    a = _start(tmp_path)
    b = _start(tmp_path)
    for p in (a, b):
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, out
    st = status(sweep_dir)
    assert st["counts"]["done"] == 6
    assert all(j["attempts"] == 1 for j in st["job_list"])
    logs = [(sweep_dir / "jobs" / j["job_id"] / "log.txt").read_text() for j in st["job_list"]]
    assert all(log.count("level 0 done") == 1 for log in logs)
    assert metrics(sweep_dir) == reference


def test_a_failing_job_is_recorded_and_the_sweep_goes_on(tmp_path):
    empty_root = tmp_path / "not-cifar"
    empty_root.mkdir()
    args = [
        "sweep=smoke",
        f"out_dir={tmp_path}",
        "grid.model.width=[0.25]",
        "grid.data.fraction=[1]",
        "+grid.data.name=[mnist1d,cifar10]",
        f"data.root={empty_root}",
        "fit.enabled=false",
    ]
    p = cli("run", *args, check=False)
    assert p.returncode == 1
    assert "1 jobs failed" in p.stdout and "retry" in p.stdout
    st = status(tmp_path / "smoke")
    assert st["counts"]["done"] == 1 and st["counts"]["failed"] == 1
    failed = next(j for j in st["job_list"] if j["status"] == "failed")
    error = (tmp_path / "smoke" / "jobs" / failed["job_id"] / "error.txt").read_text()
    assert "Traceback" in error and str(empty_root) in error
    r = cli("retry", str(tmp_path / "smoke"), check=False)
    assert r.returncode == 1 and "1 jobs to run (1 done left alone)" in r.stdout
    assert status(tmp_path / "smoke")["counts"]["failed"] == 1
    again = json.loads(cli("status", "--json", str(tmp_path / "smoke")).stdout)
    assert next(j for j in again["job_list"] if j["status"] == "failed")["attempts"] == 2


def test_fail_fast_stops_the_sweep(tmp_path):
    empty_root = tmp_path / "not-cifar"
    empty_root.mkdir()
    args = [
        "sweep=smoke",
        f"out_dir={tmp_path}",
        "+grid.data.name=[cifar10,mnist1d]",
        f"data.root={empty_root}",
        "grid.model.width=[0.25,0.5,1,2]",
        "launcher.devices=[cpu]",
        "fit.enabled=false",
    ]
    p = cli("run", "--fail-fast", *args, check=False)
    assert p.returncode != 0 and "--fail-fast" in p.stdout
    st = status(tmp_path / "smoke")
    assert st["counts"]["failed"] >= 1 and st["to_run"] >= 1


def test_deep_imp_trajectories_stop_early_and_end_done(tmp_path):
    """40 levels at rate 0.5 would take these tiny MLPs to density 0; every trajectory stops
    before (on the chance plateau or before a layer empties), and the sweep ends clean, fit and
    plots included (rows at chance and at tiny densities must not break them)."""
    args = [
        "sweep=smoke",
        f"out_dir={tmp_path}",
        "prune.levels=40",
        "prune.rate=0.5",
        "launcher.devices=[cpu,cpu]",
        "fit.enabled=true",
        "fit.bootstrap=20",
    ]
    sweep_dir = tmp_path / "smoke"
    plan = cli("plan", *args)
    assert "IMP trajectories stop early after 2 consecutive levels at chance" in plan.stdout
    run = cli("run", *args)  # exits 0
    assert "Traceback" not in run.stdout + run.stderr
    assert (sweep_dir / "fit" / "error_vs_density.png").is_file()
    st = status(sweep_dir)
    assert st["counts"]["done"] == 4 and st["to_run"] == 0 and not st["problems"]
    for j in st["job_list"]:
        assert j["stopped"]["reason"] in ("chance", "layer_empty")
        assert j["levels_done"] == j["levels_total"] == j["stopped"]["level"] + 1 < 41
    table = pq.read_table(sweep_dir / "results.parquet").to_pylist()
    assert len(table) == sum(j["levels_total"] for j in st["job_list"])
    assert min(r["density"] for r in table) > 0
    assert "(stopped " in cli("status", str(sweep_dir)).stdout
    again = cli("run", *args)
    assert "0 jobs to run (4 done left alone)" in again.stdout
