"""End to end on this machine: real MNIST-1D trainings through the CLI and the local worker pool.

Covers the spine's promises: a sweep's rows land once per job and level; a finished job is
never retrained; kill -9 or Ctrl-C at any moment, then `resume`, ends with exactly the rows of an
uninterrupted run (bit-identical numbers on CPU); failures are recorded and the sweep goes on.
"""

from __future__ import annotations

import json
import os
import re
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


def test_garbage_inside_a_rows_file_and_flipped_checkpoint_bytes_rerun_to_the_same_rows(reference, tmp_path):
    """Damage that keeps a file's length: status names it, resume reruns that job from its last good
    checkpoint, and every row ends as in the uninterrupted run, exactly once."""
    cli("run", f"out_dir={tmp_path}", *SWEEP)
    sweep_dir = tmp_path / "smoke"
    rows = sorted(_rows_files(sweep_dir))
    damaged = rows[0]
    data = bytearray(damaged.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16] = b"\xff" * 16
    damaged.write_bytes(bytes(data))
    ckpt = sweep_dir / "jobs" / rows[1].stem / "ckpt" / "checkpoint.pt"
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 0xFF
    ckpt.write_bytes(bytes(data))
    st = status(sweep_dir)
    assert any(damaged.name in p for p in st["problems"]), st["problems"]
    assert st["counts"]["done"] < 6
    cli("resume", str(sweep_dir))
    cli("collect", str(sweep_dir))
    assert metrics(sweep_dir) == reference
    assert status(sweep_dir)["counts"]["done"] == 6


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


def _worker_pid_mid_job(sweep_dir: Path, parent: int) -> int | None:
    """The pid of a worker (not the parent) that holds a job's lease and has checkpointed it."""
    for lease in sweep_dir.glob("jobs/*/lease.json"):
        try:
            pid = int(json.loads(lease.read_text())["pid"])
        except (OSError, ValueError, KeyError):
            continue
        done = (lease.parent / "state.json").is_file() and '"done"' in (
            lease.parent / "state.json"
        ).read_text()
        if pid != parent and not done and any((lease.parent / "ckpt").glob("*.pt")):
            return pid
    return None


def test_a_worker_killed_from_outside_is_replaced_and_its_job_rerun(reference, tmp_path):
    sweep_dir = tmp_path / "smoke"
    proc = _start(tmp_path)
    pid: list[int] = []

    def found() -> bool:
        p = _worker_pid_mid_job(sweep_dir, proc.pid)
        pid.extend([p] if p else [])
        return bool(pid)

    _wait_for(found)
    os.kill(pid[0], signal.SIGKILL)  # what the OOM killer does: one worker, not the run
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert f"(pid {pid[0]}) died (killed by signal 9)" in out
    assert re.search(r"rerunning (it|them) in a new worker", out), out  # a job alone, or a pack
    st = status(sweep_dir)
    assert st["counts"]["done"] == 6, out
    assert metrics(sweep_dir) == reference  # resumed from its checkpoint: the same numbers


def _kill_own_worker(config, device, ckpt_dir, emit, stop=None, log=None):
    """A train_fn that dies as a job killed by the OOM killer would."""
    os.kill(os.getpid(), signal.SIGKILL)


def _launch_two_jobs(tmp_path, train_fn: str, progress: bool):
    """Two smoke jobs through one local worker whose trainer is `train_fn` (a function of this module)."""
    from launchers.local import LocalLauncher
    from scaling_sweep.cli import load_new

    loaded = load_new(
        ["sweep=smoke", f"out_dir={tmp_path}", "grid.model.width=[0.25,0.5]", "grid.data.fraction=[1]"]
    )
    loaded.sweep.create("name: smoke\n")
    launcher = LocalLauncher(["cpu"], train_fn=f"{__name__}:{train_fn}", progress=progress)
    return launcher.launch(loaded.sweep, loaded.plan.specs)


def test_a_job_that_kills_every_worker_is_left_interrupted(tmp_path, capsys):
    result = _launch_two_jobs(tmp_path, "_kill_own_worker", progress=True)
    out = capsys.readouterr().out
    # Each job is rerun once in a new worker, then reported; the launch goes on to the next job.
    assert result.outcomes["interrupted"] == 2 and not result.interrupted_by_user, out
    assert out.count("died (killed by signal 9)") == 4 and out.count("left interrupted") == 2, out


def _fill_the_disk(config, device, ckpt_dir, emit, stop=None, log=None):
    """A train_fn after which the disk is full: the job's next state write fails with ENOSPC."""
    import errno

    from scaling_sweep.sweep import SweepDir

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(ckpt_dir))

    SweepDir.write_state = full
    return []


def test_a_full_disk_in_a_worker_ends_the_launch_with_one_line(tmp_path, capsys):
    result = _launch_two_jobs(tmp_path, "_fill_the_disk", progress=False)
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    lines = [line for line in (out.out + out.err).splitlines() if "No space left on device" in line]
    assert len(lines) == 1, out.out + out.err
    # not the job's failure: it is left for `resume` once there is room, and the launch stops
    assert result.outcomes == {"interrupted": 1} and lines[0].startswith("stopping: OSError: [Errno 28]")


def test_a_suspended_worker_whose_job_was_taken_over_writes_nothing(tmp_path):
    """SIGSTOP past the lease timeout, `resume` takes the job over and finishes it, SIGCONT: the
    old worker must stop at its next step without writing a checkpoint, rows or state."""
    env = cli_env(SCALING_SWEEP_LEASE_TIMEOUT_S="3")
    args = [f"out_dir={tmp_path}", "sweep=smoke", "grid.model.width=[1]", "grid.data.fraction=[1]"]
    args += ["train.epochs=4", "launcher.devices=[cpu]", "fit.enabled=false"]
    sweep_dir = tmp_path / "smoke"
    old = subprocess.Popen(
        [*CLI, "run", "--no-progress", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    logs = lambda: list(sweep_dir.glob("jobs/*/log.txt"))  # noqa: E731
    _wait_for(lambda: logs() and "level 0 epoch 1" in logs()[0].read_text())
    os.killpg(old.pid, signal.SIGSTOP)
    try:
        time.sleep(4)  # past the 3 s lease timeout
        p = subprocess.run(
            [*CLI, "resume", "--no-progress", str(sweep_dir)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert p.returncode == 0, p.stdout + p.stderr
        job_dir = logs()[0].parent
        files = [*sweep_dir.glob("rows/*.parquet"), job_dir / "state.json", *job_dir.glob("ckpt/*")]
        before = {f: f.read_bytes() for f in files}
        assert json.loads((job_dir / "state.json").read_text())["status"] == "done"
    finally:
        os.killpg(old.pid, signal.SIGCONT)
    out, _ = old.communicate(timeout=300)
    assert old.returncode == 0, out
    assert "busy 1" in out  # reported as held elsewhere, not done
    assert {f: f.read_bytes() for f in files} == before
    assert sorted(job_dir.glob("ckpt/*")) == sorted(f for f in files if f.parent.name == "ckpt")
    log = (job_dir / "log.txt").read_text()
    assert log.count(f"level {LEVELS - 1} done") == 1 and "lease lost" in log
    st = status(sweep_dir)
    assert st["counts"]["done"] == 1 and st["job_list"][0]["attempts"] == 2


def _read_only(sweep_dir: Path, *args: str) -> subprocess.CompletedProcess:
    """The CLI with sweep_dir mounted read-only (EROFS, which root cannot bypass as it bypasses modes)."""
    import shlex
    import shutil

    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1)")
    mount = f"mount --bind -o ro {shlex.quote(str(sweep_dir))} {shlex.quote(str(sweep_dir))}"
    cmd = f"{mount} && exec {shlex.join([*CLI, *args])}"
    p = subprocess.run(
        ["unshare", "-m", "sh", "-c", cmd],
        cwd=ROOT,
        env=cli_env(),
        text=True,
        capture_output=True,
        timeout=300,
    )
    if "mount" in p.stderr or "unshare" in p.stderr:
        pytest.skip(f"cannot mount read-only here: {p.stderr.strip()[:200]}")
    return p


def test_a_read_only_sweep_can_be_read_and_fitted_elsewhere(tmp_path):
    sweep_dir = tmp_path / "smoke"
    args = ["sweep=smoke", "grid.model.width=[0.25,0.5]", "fit.enabled=false"]
    cli("run", f"out_dir={tmp_path}", *args)
    (sweep_dir / "results.parquet").unlink()  # the fit must read rows/ itself
    before = sorted((p.relative_to(sweep_dir), p.stat().st_mtime_ns) for p in sweep_dir.rglob("*"))
    st = _read_only(sweep_dir, "status", "--json", str(sweep_dir))
    assert st.returncode == 0 and json.loads(st.stdout)["counts"]["done"] == 4, st.stderr
    fit = _read_only(sweep_dir, "plot", str(sweep_dir), "--out", str(tmp_path / "plots"))
    assert fit.returncode == 0 and "wrote" in fit.stdout, fit.stdout + fit.stderr
    assert any((tmp_path / "plots").glob("*.png"))
    # what must write fails with one line naming the directory
    for command, where in (("collect", sweep_dir), ("plot", sweep_dir / "fit")):
        p = _read_only(sweep_dir, command, str(sweep_dir))
        assert p.returncode == 1 and p.stderr == "", p.stdout + p.stderr
        assert p.stdout.strip() == f"error: {where}: Read-only file system"
    assert sorted((p.relative_to(sweep_dir), p.stat().st_mtime_ns) for p in sweep_dir.rglob("*")) == before


def test_a_ctrl_c_caught_inside_execd_code_still_exits_130(tmp_path):
    """CPython remembers a KeyboardInterrupt that escaped exec'd code (dataclasses build their methods
    with exec, so a Ctrl-C during an import can land there) even once it is caught and handled, and
    then ends `python -m` with SIGINT (-2) instead of the exit status: the command must not."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import scaling_sweep.config\n"
        "scaling_sweep.config.compose = lambda *a, **k: exec('raise KeyboardInterrupt')\n"
    )
    env = cli_env(PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]))
    p = subprocess.run(
        [*CLI, "run", "--no-progress", f"out_dir={tmp_path}", *SWEEP],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (p.returncode, p.stdout.strip(), p.stderr) == (130, "interrupted", "")


def test_a_ctrl_c_while_composing_waits_until_the_config_is_composed():
    """Hydra's global state, interrupted halfway, fails its cleanup with an unrelated AttributeError."""
    from scaling_sweep import config

    held = False
    with pytest.raises(KeyboardInterrupt):
        with config._ctrl_c_after():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # a Ctrl-C that was not held would have raised by now
            held = True
    assert held


@pytest.mark.parametrize("after_s", [0.3, 1.0])  # while composing; while workers start
def test_an_early_ctrl_c_is_one_line_and_exit_130(tmp_path, after_s):
    proc = _start(tmp_path, "--no-progress")
    time.sleep(after_s)
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "Traceback" not in out, out
    assert out.strip().splitlines()[-1].startswith(("interrupted", "stopped; continue with")), out
