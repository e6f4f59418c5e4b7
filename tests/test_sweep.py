"""The sweep directory: leases (exclusive, stale takeover), job status read from disk, damaged files found."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from scaling_sweep import sweep as sweep_mod
from scaling_sweep.atomic import write_json
from scaling_sweep.results import write_rows
from scaling_sweep.sweep import SweepDir


def test_a_held_lease_is_not_given_twice(tmp_path):
    sweep = SweepDir(tmp_path)
    with sweep.lease("a" * 16) as first:
        assert first is not None
        with sweep.lease("a" * 16) as second:
            assert second is None
        assert sweep.job_status("a" * 16).status == "running"
    # Released on exit: the next process gets it.
    with sweep.lease("a" * 16) as again:
        assert again is not None


def test_lease_of_a_killed_process_is_taken_over_at_once(tmp_path):
    sweep = SweepDir(tmp_path)
    job = "b" * 16
    code = (
        "import sys, time; sys.path.insert(0, {!r})\n"
        "from scaling_sweep.sweep import SweepDir\n"
        "with SweepDir({!r}).lease({!r}) as l:\n"
        "    print('held', flush=True); time.sleep(60)\n"
    ).format(str(sweep_mod.__file__).rsplit("/scaling_sweep/", 1)[0], str(tmp_path), job)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    with sweep.lease(job) as lease:
        assert lease is None  # alive: busy
    p.kill()
    p.wait()
    with sweep.lease(job) as lease:
        assert lease is not None  # dead pid on this host: stale without waiting for the heartbeat


def test_lease_from_another_host_expires_by_heartbeat(tmp_path):
    sweep = SweepDir(tmp_path)
    job = "c" * 16
    record = {"host": "node-elsewhere", "pid": 1, "start": "", "token": "x", "heartbeat": time.time()}
    write_json(sweep.job_dir(job) / "lease.json", record)
    with sweep.lease(job) as lease:
        assert lease is None
    record["heartbeat"] = time.time() - sweep_mod.STALE_S - 1
    write_json(sweep.job_dir(job) / "lease.json", record)
    with sweep.lease(job) as lease:
        assert lease is not None


def _row(job: str, level: int) -> dict:
    import datetime as dt

    from scaling_sweep.results import SCHEMA

    row = {c: None for c in SCHEMA.names}
    row.update(sweep="s", job_id=job, level=level, finished_at=dt.datetime.now(dt.timezone.utc))
    return row


def test_truncated_rows_file_is_reported_and_the_job_is_not_done(tmp_path):
    sweep = SweepDir(tmp_path)
    job = "d" * 16
    write_rows(sweep.rows_path(job), [_row(job, 0), _row(job, 1)])
    sweep.write_state(job, status="done", levels_total=2)
    assert sweep.job_status(job, 2).status == "done"
    assert sweep.is_done(job, 2)
    data = sweep.rows_path(job).read_bytes()
    sweep.rows_path(job).write_bytes(data[: len(data) // 2])
    st = sweep.job_status(job, 2)
    assert st.status == "interrupted"
    assert any("truncated or unreadable rows file" in p for p in st.problems)
    assert not sweep.is_done(job, 2)


def test_done_state_with_missing_levels_is_rerun(tmp_path):
    sweep = SweepDir(tmp_path)
    job = "e" * 16
    write_rows(sweep.rows_path(job), [_row(job, 0)])
    sweep.write_state(job, status="done", levels_total=3)
    st = sweep.job_status(job, 3)
    assert st.status == "interrupted" and "1 of 3 levels" in st.problems[0]


def test_truncated_checkpoint_is_reported(tmp_path):
    import zipfile

    sweep = SweepDir(tmp_path)
    job = "f" * 16
    ckpt = sweep.ckpt_dir(job)
    ckpt.mkdir(parents=True)
    with zipfile.ZipFile(ckpt / "good.pt", "w") as z:
        z.writestr("data.pkl", b"x" * 1000)
    data = (ckpt / "good.pt").read_bytes()
    (ckpt / "latest.pt").write_bytes(data[:100])
    sweep.write_state(job, status="running")
    st = sweep.job_status(job, 2)
    assert st.status == "interrupted"
    assert [p for p in st.problems if "latest.pt" in p] and not [p for p in st.problems if "good.pt" in p]


def test_unreadable_state_json_counts_as_pending_with_a_problem(tmp_path):
    sweep = SweepDir(tmp_path)
    job = "0" * 16
    sweep.job_dir(job).mkdir(parents=True)
    (sweep.job_dir(job) / "state.json").write_text('{"status": "do')
    st = sweep.job_status(job, 2)
    assert st.status == "pending" and "state.json" in st.problems[0]
    json.loads(json.dumps(st.__dict__))  # statuses serialise for --json


# -- issue 9: damaged files, fenced writes, future heartbeats, permissions, stale temp files ------


def _done_job(sweep: SweepDir, job: str, levels: int = 2) -> None:
    write_rows(sweep.rows_path(job), [_row(job, lv) for lv in range(levels)])
    sweep.write_state(job, status="done", levels_total=levels)


def test_garbage_inside_a_rows_file_fails_its_checksum_and_collect_skips_it(tmp_path, capsys):
    from scaling_sweep.results import collect, read_table

    sweep = SweepDir(tmp_path)
    bad, good = "1" * 16, "2" * 16
    _done_job(sweep, bad)
    _done_job(sweep, good)
    path = sweep.rows_path(bad)
    data = bytearray(path.read_bytes())
    data[40:48] = b"garbage!"  # the footer stays whole: only the checksum can tell
    path.write_bytes(bytes(data))
    st = sweep.job_status(bad, 2)
    assert st.status == "interrupted" and not sweep.is_done(bad, 2)
    assert [p for p in st.problems if str(path) in p and "checksum" in p]
    table = collect(sorted((tmp_path / "rows").glob("*.parquet")), tmp_path / "results.parquet")
    assert set(table.column("job_id").to_pylist()) == {good}
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and "resume" in err[0]
    assert read_table(tmp_path).num_rows == 2  # fit's reader skips it the same way


def test_a_rows_file_holding_another_jobs_rows_is_damaged(tmp_path, capsys):
    from scaling_sweep.results import collect

    sweep = SweepDir(tmp_path)
    mine, other = "3" * 16, "4" * 16
    _done_job(sweep, other)
    write_rows(sweep.rows_path(mine), [_row(other, 0), _row(other, 1)])  # a valid file, wrong job
    sweep.write_state(mine, status="done", levels_total=2)
    st = sweep.job_status(mine, 2)
    assert st.status == "interrupted" and not sweep.is_done(mine, 2)
    assert any(f"holds rows of job {other}, not of {mine}" in p for p in st.problems)
    table = collect(sorted((tmp_path / "rows").glob("*.parquet")), tmp_path / "results.parquet")
    assert table.column("job_id").to_pylist() == [other, other]  # no duplicates
    assert f"holds rows of job {other}" in capsys.readouterr().err


def test_a_checkpoint_failing_its_checksum_is_reported(tmp_path):
    from scaling_sweep.atomic import sidecar, write_digests

    sweep = SweepDir(tmp_path)
    job = "5" * 16
    ckpt = sweep.ckpt_dir(job)
    ckpt.mkdir(parents=True)
    (ckpt / "checkpoint.pt").write_bytes(b"not what was written")
    write_digests(sidecar(ckpt / "checkpoint.pt"), ["0" * 64])
    sweep.write_state(job, status="running")
    st = sweep.job_status(job, 2)
    assert any("checkpoint.pt: checkpoint content differs" in p for p in st.problems)


def _frozen_sweep(tmp_path) -> SweepDir:
    sweep = SweepDir(tmp_path / "s")
    sweep.create("name: s\ngrid:\n  seed: [0, 1]\n")
    return sweep


def test_a_damaged_sweep_yaml_is_refused_with_what_to_do(tmp_path):
    import pytest

    from scaling_sweep.errors import ConfigError

    sweep = _frozen_sweep(tmp_path)
    assert sweep.read_config().startswith("name: s")
    for text, why in (
        ("", "is empty"),
        ("name: s\ngrid:\n  seed: [0]\n", "checksum fails"),  # cut: still YAML, another sweep
        ("\x00\x01 ]]]", "checksum fails"),
    ):
        sweep.config_path.write_text(text)
        with pytest.raises(ConfigError, match=why) as e:
            sweep.read_config()
        assert "spec.json" in str(e.value) and "\n" not in str(e.value)
    # Without a recorded digest (older sweeps) the structure is checked.
    sweep_mod.sidecar(sweep.config_path).unlink()
    sweep.config_path.write_text(": : [")
    with pytest.raises(ConfigError, match="not valid YAML"):
        sweep.read_config()
    sweep.config_path.write_text("just a string\n")
    with pytest.raises(ConfigError, match="has no name or grid"):
        sweep.read_config()


def test_status_of_a_damaged_sweep_yaml_is_one_line(tmp_path):
    from tests.conftest import CLI, ROOT, cli_env

    sweep = _frozen_sweep(tmp_path)
    sweep.config_path.write_text("name: s\n")
    p = subprocess.run(
        [*CLI, "status", str(sweep.path)], cwd=ROOT, env=cli_env(), capture_output=True, text=True
    )
    assert p.returncode == 2 and "Traceback" not in p.stdout + p.stderr
    assert "sweep.yaml is damaged" in p.stdout and len(p.stdout.strip().splitlines()) == 1


def test_a_heartbeat_from_the_future_is_stale_and_status_says_so(tmp_path):
    sweep = SweepDir(tmp_path)
    job = "6" * 16
    future = time.time() + sweep_mod.STALE_S + 3600
    record = {"host": "node-elsewhere", "pid": 1, "start": "", "token": "x", "heartbeat": future}
    write_json(sweep.job_dir(job) / "lease.json", record)
    sweep.write_state(job, status="running")
    st = sweep.job_status(job, 2)
    assert st.status == "interrupted" and any("in the future" in p for p in st.problems)
    with sweep.lease(job) as lease:
        assert lease is not None
    record["heartbeat"] = time.time() + 5  # a little skew is tolerated: still live
    write_json(sweep.job_dir(job) / "lease.json", record)
    with sweep.lease(job) as lease:
        assert lease is None


def test_a_lease_taken_over_fences_every_write(tmp_path):
    import pytest

    sweep = SweepDir(tmp_path)
    job = "7" * 16
    with sweep.lease(job) as lease:
        lease.fence()  # ours: renews
        lease.check()
        record = json.loads((sweep.job_dir(job) / "lease.json").read_text())
        write_json(sweep.job_dir(job) / "lease.json", {**record, "token": "someone-else"})
        lease.check()  # cheap poll: not noticed before a heartbeat gap...
        lease._renewed -= 3 * sweep_mod.HEARTBEAT_S  # ...like a process stopped for a while
        with pytest.raises(sweep_mod.LeaseLost):
            lease.check()
        with pytest.raises(sweep_mod.LeaseLost):
            lease.fence()
    # Release leaves the other owner's lease alone.
    assert json.loads((sweep.job_dir(job) / "lease.json").read_text())["token"] == "someone-else"


def test_run_job_whose_lease_is_taken_over_writes_nothing_and_is_busy(tmp_path):
    from scaling_sweep.grid import expand
    from scaling_sweep.job import run_job
    from scaling_sweep.spec import JobSpec
    from tests.conftest import composed

    spec: JobSpec = expand(
        composed("sweep=smoke", "grid.model.width=[0.25]", "grid.data.fraction=[1]")
    ).specs[0]
    sweep = SweepDir(tmp_path)
    lease_path = sweep.job_dir(spec.job_id) / "lease.json"

    def train(config, device, ckpt_dir, emit, stop, log):
        levels = [dict(level=0)]
        record = json.loads(lease_path.read_text())
        write_json(lease_path, {**record, "token": "resume-took-over"})
        emit(levels)  # fenced: raises before writing
        raise AssertionError("emit wrote after the lease was lost")

    assert run_job(spec, tmp_path, train_fn=train) == "busy"
    assert not sweep.rows_path(spec.job_id).exists()
    assert sweep.read_state(spec.job_id)["status"] == "running"  # as the start left it; never "done"


def test_files_follow_the_umask(tmp_path):
    code = (
        "import os, sys; sys.path.insert(0, {root!r})\n"
        "from scaling_sweep.atomic import write_text\n"
        "write_text({path!r}, 'x')\n"
        "print(oct(os.stat({path!r}).st_mode & 0o777))\n"
    )
    root = str(sweep_mod.__file__).rsplit("/scaling_sweep/", 1)[0]
    for mask, mode in ((0o022, "0o644"), (0o077, "0o600"), (0o002, "0o664")):
        path = str(tmp_path / f"f{mask}")
        p = subprocess.run(
            [sys.executable, "-c", code.format(root=root, path=path)],
            capture_output=True,
            text=True,
            preexec_fn=lambda m=mask: os.umask(m),
        )
        assert p.stdout.strip() == mode, p.stderr


def test_stale_temp_files_are_removed_when_a_sweep_is_opened(tmp_path):
    from scaling_sweep.atomic import HOST

    sweep = _frozen_sweep(tmp_path)
    jd = sweep.job_dir("8" * 16)
    jd.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    killed = jd / f".state.json.{dead.pid}@{HOST}.abc123_x.tmp"  # its writer is gone
    live = jd / f".state.json.{os.getpid()}@{HOST}.abc123_x.tmp"  # a writer still at work
    old = sweep.path / "rows" / f".{'8' * 16}.parquet.1@node-elsewhere.zz9.tmp"  # another host's, old
    foreign = sweep.path / ".notes.tmp"  # not our naming: never touched
    for p in (killed, live, old, foreign):
        p.write_text("partial")
    os.utime(old, (1, 1))
    sweep.create("name: s\ngrid:\n  seed: [0, 1]\n")  # what `run` calls on the existing sweep
    assert not killed.exists() and not old.exists()
    assert live.exists() and foreign.exists()


def test_a_lease_lock_held_by_a_stopped_process_makes_the_job_busy_not_failed(tmp_path, monkeypatch):
    """A process stopped while it holds the lease lock never lets go: taking the lease says busy."""
    import threading

    from filelock import FileLock

    from scaling_sweep import sweep as sweep_mod

    monkeypatch.setattr(sweep_mod, "LOCK_TIMEOUT_S", 0.3)
    sweep = SweepDir(tmp_path / "s")
    (sweep.job_dir("j") / "x").parent.mkdir(parents=True)
    held, release = threading.Event(), threading.Event()

    def stopped_holder() -> None:
        with FileLock(str(sweep.job_dir("j") / ".lease.lock")):
            held.set()
            release.wait(10)

    t = threading.Thread(target=stopped_holder)
    t.start()
    try:
        held.wait(5)
        with sweep.lease("j") as lease:
            assert lease is None
    finally:
        release.set()
        t.join()
    with sweep.lease("j") as lease:  # once it lets go, the lease is taken as usual
        assert lease is not None
