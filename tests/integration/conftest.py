"""SLURM fixtures: the cluster (skipped without sbatch, required when .ci/slurm-up.sh brought one up), CLI and waiting helpers."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import CLI, ROOT, cli_env

SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
LEVELS = 3  # smoke: prune.levels=2 -> levels 0, 1, 2


def ci_conf() -> Path | None:
    """slurm.conf of the cluster .ci/slurm-up.sh started (it leaves a marker), else None."""
    conf = Path(os.environ.get("SLURM_CONF") or SYSTEM_CONF).resolve()
    return conf if (conf.parent.parent / ".slurm-ci").is_file() else None


def _required() -> bool:
    # CI brings the cluster up before the tests: there a missing cluster is a failure, not a skip.
    return os.environ.get("SCALING_SWEEP_REQUIRE_SLURM") == "1" or ci_conf() is not None


@pytest.fixture(scope="session")
def slurm() -> None:
    """A SLURM cluster that answers; skip (or fail in CI) with the reason otherwise."""
    reason = None
    if shutil.which("sbatch") is None:
        reason = "no sbatch on PATH: start a test cluster with `bash .ci/slurm-up.sh` (CI does)"
    else:
        # "planned" and "completing" are passing states of a usable node, seen between jobs.
        try:
            p = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=15)
            if p.returncode != 0 or not re.search(r"idle|mixed|allocated|planned|completing", p.stdout):
                reason = f"sinfo shows no usable node ({(p.stderr or p.stdout).strip()[:200]})"
        except subprocess.TimeoutExpired:
            reason = "sinfo did not answer in 15 s: slurmctld is down"
    if reason:
        if _required():
            pytest.fail(reason)
        pytest.skip(reason)


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([*CLI, *args], cwd=ROOT, env=cli_env(), text=True, capture_output=True, timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"{args} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def status(sweep_dir: Path) -> dict:
    return json.loads(cli("status", "--json", str(sweep_dir)).stdout)


def records(sweep_dir: Path) -> list[dict]:
    """The launcher's array records, oldest first."""
    paths = sorted((sweep_dir / "slurm" / "arrays").glob("*.json"), key=lambda p: int(p.stem))
    return [json.loads(p.read_text()) for p in paths]


def squeue(job: str) -> list[str]:
    """States of a job or array's tasks that slurmctld still knows."""
    p = subprocess.run(["squeue", "-h", "-r", "-o", "%T", "-j", job], capture_output=True, text=True)
    return p.stdout.split()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, sweep_dir: Path | None = None) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{task_logs(sweep_dir)}")


def task_logs(sweep_dir: Path | None, tail: int = 15) -> str:
    """The end of every submitit log of the sweep: what a failed wait shows."""
    if sweep_dir is None:
        return ""
    out = []
    for p in sorted((sweep_dir / "slurm" / "logs").glob("*/*_log.*")):
        lines = p.read_text(errors="replace").splitlines()[-tail:]
        out.append(f"--- {p}\n" + "\n".join(lines))
    return "\n".join(out)


def wait_done(sweep_dir: Path, n_jobs: int, timeout: float = 120) -> dict[str, object]:
    """Wait until every job is done (failing early on a failed job); returns job_id -> JobStatus."""
    from scaling_sweep.cli import load_existing

    loaded = load_existing(str(sweep_dir))
    state: dict = {}

    def finished() -> bool:
        nonlocal state
        state = loaded.sweep.statuses(loaded.plan.specs)
        failed = {j: s.error for j, s in state.items() if s.status == "failed"}
        assert not failed, f"failed jobs: {failed}\n{task_logs(sweep_dir)}"
        return sum(s.status == "done" for s in state.values()) == n_jobs

    wait_for(finished, timeout, f"{n_jobs} jobs done", sweep_dir)
    return state


def rows(sweep_dir: Path) -> list[tuple[str, int]]:
    """(job_id, level) of every row in the collected results."""
    import pyarrow.parquet as pq

    cli("collect", str(sweep_dir))
    return [(r["job_id"], r["level"]) for r in pq.read_table(sweep_dir / "results.parquet").to_pylist()]


def release_requeued(job: str, timeout: float = 60) -> None:
    """A requeued job waits ~2 min before it is eligible again; tests make it eligible now.

    Not at once, though: slurmd revokes the old run's credential with a one-second timestamp, and
    a run started within that second is killed ("Job credential revoked"). Hence the 2 s pause.
    """
    pending_since: list[float] = []

    def released() -> bool:
        if squeue(job) != ["PENDING"]:
            return False
        pending_since.append(time.time())
        if time.time() - pending_since[0] < 2.0:
            return False
        p = subprocess.run(["scontrol", "update", f"jobid={job}", "StartTime=now"], capture_output=True)
        return p.returncode == 0

    wait_for(released, timeout, f"job {job} requeued and released")


def _restart_slurmctld(conf: Path) -> None:
    pidfile = Path(re.search(r"^SlurmctldPidFile=(\S+)", conf.read_text(), re.M).group(1))
    pid = int(pidfile.read_text())
    subprocess.run(["scontrol", "shutdown", "slurmctld"], check=True, capture_output=True)
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), 30, "slurmctld to stop")
    subprocess.run(["slurmctld"], env=dict(os.environ, SLURM_CONF=str(conf)), check=True)
    wait_for(
        lambda: subprocess.run(["scontrol", "ping"], capture_output=True).returncode == 0, 30, "slurmctld"
    )
    # slurmd registers again on reconfigure instead of at its next ping (minutes away).
    subprocess.run(["scontrol", "reconfigure"], capture_output=True)
    wait_for(
        lambda: "idle" in subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True).stdout,
        60,
        "the node to be idle again",
    )


@contextmanager
def max_array_size(n: int) -> Iterator[None]:
    """Lower the CI cluster's MaxArraySize (slurmctld reads it only at start: two restarts)."""
    conf = ci_conf()
    if conf is None:
        pytest.skip("changing MaxArraySize needs the cluster of .ci/slurm-up.sh (it restarts slurmctld)")
    original = conf.read_text()
    conf.write_text(re.sub(r"^MaxArraySize=\d+", f"MaxArraySize={n}", original, flags=re.M))
    try:
        _restart_slurmctld(conf)
        yield
    finally:
        conf.write_text(original)
        _restart_slurmctld(conf)
