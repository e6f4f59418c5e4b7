"""The sweep directory: leases (exclusive, stale takeover), job status read from disk, damaged files found."""

from __future__ import annotations

import json
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
