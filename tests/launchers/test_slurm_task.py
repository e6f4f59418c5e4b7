"""What one SLURM array task does at its end, run here in-process (no cluster needed)."""

from __future__ import annotations

import os
import signal

import pytest
from omegaconf import OmegaConf

from launchers.slurm_task import JobsFailed, SweepTask
from scaling_sweep import config as config_mod
from scaling_sweep.grid import expand
from scaling_sweep.sweep import SweepDir


@pytest.fixture(autouse=True)
def restore_signals():
    """A task installs its own SLURM signal handlers; the test process gets its own back."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGUSR2, signal.SIGTERM)}
    yield
    for sig, handler in before.items():
        signal.signal(sig, handler)


def _task(tmp_path, *overrides: str) -> tuple[SweepDir, list, SweepTask]:
    """A smoke sweep on disk and one array task holding all its jobs."""
    cfg = config_mod.compose(
        [f"out_dir={tmp_path}", "name=s", "sweep=smoke", "grid.model.width=[0.25]", "grid.data.fraction=[1]"]
        + list(overrides)
    )
    sweep = SweepDir(tmp_path / "s")
    sweep.create(config_mod.to_yaml(cfg))
    specs = expand(OmegaConf.to_container(cfg, resolve=True)).specs
    return sweep, specs, SweepTask(str(sweep.path), "s", [s.to_dict() for s in specs])


def test_a_task_whose_training_failed_raises_so_sacct_says_failed(tmp_path):
    not_cifar = tmp_path / "not-cifar"  # exists, so the plan passes; holds no CIFAR files, so training fails
    not_cifar.mkdir()
    sweep, specs, task = _task(tmp_path, "+grid.data.name=[mnist1d,cifar10]", f"data.root={not_cifar}")
    with pytest.raises(JobsFailed, match=r"1 of 2 jobs failed .*scaling-sweep retry"):
        task()
    states = {s.job_id: sweep.read_state(s.job_id)["status"] for s in specs}
    assert sorted(states.values()) == ["done", "failed"]  # the other job still ran to the end


def test_a_finished_task_ignores_late_time_limit_signals(tmp_path):
    _, specs, task = _task(tmp_path)
    assert task() == {specs[0].job_id: "done"}
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_IGN == signal.getsignal(signal.SIGTERM)
    os.kill(os.getpid(), signal.SIGUSR2)  # as SLURM's warning would, while the task exits


def _measured(sweep: SweepDir, job_id: str) -> list[tuple]:
    import pyarrow.parquet as pq

    rows = pq.read_table(sweep.rows_path(job_id)).to_pylist()
    return [(r["level"], r["density"], r["test_loss"], r["train_loss"], r["test_error"]) for r in rows]


def test_a_packed_task_trains_as_one_program_and_resumes_each_job_after_a_stop(tmp_path):
    two = "grid.data.fraction=[0.5,1]"  # one model and recipe: one pack
    whole, specs, task = _task(tmp_path / "whole", two)
    task.pack = True
    assert task.run_all(lambda: False) == {s.job_id: "done" for s in specs}
    for s in specs:
        assert (
            "packed: 2 jobs train as one stacked program" in (whole.job_dir(s.job_id) / "log.txt").read_text()
        )

    cut, _, task = _task(tmp_path / "cut", two)
    task.pack = True
    polls = iter(range(10**6))
    assert set(task.run_all(lambda: next(polls) >= 40).values()) == {"interrupted"}  # a stop mid-level
    assert task.run_all(lambda: False) == {s.job_id: "done" for s in specs}  # as a requeued task would
    for s in specs:
        # Each job from its own checkpoint: the uninterrupted numbers, bit for bit, each level once.
        assert _measured(cut, s.job_id) == _measured(whole, s.job_id)
        assert len(_measured(cut, s.job_id)) == len({row[0] for row in _measured(cut, s.job_id)}) > 1
