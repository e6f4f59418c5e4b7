"""The sweep directory on disk: frozen config, per-job state and leases, rows files; the disk is the truth."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock
from filelock import Timeout as FileLockTimeout

from scaling_sweep.atomic import (
    digest_problem,
    json_text,
    pid_alive,
    read_digests,
    read_json,
    remove_stale_temps,
    sidecar,
    staged_text,
    write_digests,
    write_json,
    write_text,
)
from scaling_sweep.errors import ConfigError
from scaling_sweep.schema import last_level
from scaling_sweep.spec import JobSpec

# A lease not refreshed for STALE_S belongs to a dead (or suspended) process, on any host. Tests
# shorten it through the environment; every process of one sweep must agree on it.
STALE_S = float(os.environ.get("SCALING_SWEEP_LEASE_TIMEOUT_S") or 60.0)
HEARTBEAT_S = min(10.0, STALE_S / 6)  # how often a running job refreshes its lease
LOCK_TIMEOUT_S = (
    60.0  # the lease lock is held for a check and a rename: only a stopped process holds it this long
)

# On-disk job states (state.json "status"); "running" is only believed while the lease is live.
PENDING, RUNNING, DONE, FAILED, INTERRUPTED = "pending", "running", "done", "failed", "interrupted"


def _process_start(pid: int) -> str:
    # Start time distinguishes a live owner from a new process that reused its pid.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


HOST = socket.gethostname()


@dataclass
class JobStatus:
    """What the disk says about one job."""

    job_id: str
    status: str  # pending | running | done | failed | interrupted
    levels_done: int = 0
    levels_total: int | None = None  # rows a finished job has (fewer than planned after an early stop)
    stopped: dict[str, Any] | None = None  # state.json "stopped": where and why a trajectory ended early
    attempts: int = 0
    owner: str = ""  # host:pid of a live lease
    problems: list[str] = field(default_factory=list)  # unreadable rows/checkpoint files found
    error: str = ""  # first line of the last failure


class LeaseLost(Exception):
    """Another process took this job's lease over (ours went stale, e.g. while suspended): write nothing more."""


class Lease:
    """Ownership of one job by one process, refreshed by a heartbeat thread.

    Writes are fenced: `fence()` renews the lease (under the lease lock) right before a job writes a
    checkpoint, its rows or its state, and raises LeaseLost if the token in lease.json is no longer
    ours. A fresh heartbeat cannot be taken over for STALE_S, so the write that follows is ours alone.
    """

    def __init__(self, path: Path, token: str) -> None:
        self.path = path
        self.token = token
        self.lost = threading.Event()
        self._renewed = time.monotonic()  # monotonic: it keeps counting while the process is stopped
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{path.parent.name}", daemon=True)

    def _lock(self) -> FileLock:
        return FileLock(str(self.path.parent / ".lease.lock"), timeout=LOCK_TIMEOUT_S)

    def _record(self) -> dict[str, Any]:
        pid = os.getpid()
        return {
            "host": HOST,
            "pid": pid,
            "start": _process_start(pid),
            "token": self.token,
            "heartbeat": time.time(),
        }

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            if not self.renew():
                return

    def renew(self) -> bool:
        """Refresh the heartbeat if the lease is still ours; else mark it lost. True while held."""
        if self.lost.is_set():
            return False
        # The record is written and synced before the lock is taken, so the lock is held only for the
        # check and the rename: a process stopped (SIGSTOP, a frozen node) while holding it would block
        # the very takeover that fencing is for.
        with staged_text(self.path, json_text(self._record())) as commit:
            with self._lock():
                if not self.held():
                    self.lost.set()
                    return False
                commit()
        self._renewed = time.monotonic()
        return True

    def fence(self) -> None:
        """Call right before a write: raise LeaseLost unless the lease is (still) ours."""
        if not self.renew():
            raise LeaseLost(f"{self.path}: another process took this job over; this one writes nothing more")

    def check(self) -> None:
        """Cheap enough for every optimizer step: raise LeaseLost once the lease is known lost.

        After a gap of two heartbeats (the process was stopped, or starved) it renews at once rather
        than wait for the heartbeat thread: a stopped process may have been replaced meanwhile.
        """
        if self.lost.is_set() or time.monotonic() - self._renewed > 2 * HEARTBEAT_S:
            self.fence()

    def held(self) -> bool:
        try:
            return read_json(self.path).get("token") == self.token
        except (OSError, ValueError):
            return False

    def release(self) -> None:
        self._stop.set()
        with self._lock():
            if self.held():
                try:
                    self.path.unlink()
                except FileNotFoundError:
                    pass


def lease_is_live(record: dict[str, Any], now: float | None = None) -> bool:
    """A lease is live while its heartbeat is fresh and, on this host, its process still runs.

    A heartbeat from the future (clock skew between hosts, a bad write) counts as fresh only up to
    STALE_S ahead; further ahead it would block the job for that long, so it is stale.
    """
    now = time.time() if now is None else now
    if abs(now - float(record.get("heartbeat", 0))) > STALE_S:
        return False
    if record.get("host") == HOST:
        pid = int(record.get("pid", 0))
        return pid > 0 and pid_alive(pid) and _process_start(pid) == record.get("start", "")
    return True


class SweepDir:
    """One sweep's directory: `sweep.yaml`, `jobs/<id>/`, `rows/<id>.parquet`, `results.parquet`, `fit/`."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    # -- layout --------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "sweep.yaml"

    @property
    def results_path(self) -> Path:
        return self.path / "results.parquet"

    @property
    def slurm_dir(self) -> Path:
        return self.path / "slurm"

    @property
    def fit_dir(self) -> Path:
        return self.path / "fit"

    def job_dir(self, job_id: str) -> Path:
        return self.path / "jobs" / job_id

    def rows_path(self, job_id: str) -> Path:
        return self.path / "rows" / f"{job_id}.parquet"

    def ckpt_dir(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "ckpt"

    # -- the frozen config ---------------------------------------------------------------
    def exists(self) -> bool:
        return self.config_path.is_file()

    def read_config(self) -> str:
        """sweep.yaml's text, checked against the digest recorded at creation (a damaged one is refused)."""
        if not self.exists():
            raise ConfigError(
                f"{self.path}: no sweep.yaml here; is this a sweep directory made by `scaling-sweep run`?"
            )
        path = self.config_path
        recover = (
            f"restore it from a backup or another copy of this sweep (its jobs/*/spec.json still hold every "
            f"job's spec); if you edited it on purpose, delete {sidecar(path)}"
        )
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: unreadable ({e}); {recover}") from e
        if not text.strip():
            raise ConfigError(f"{path} is empty; {recover}")
        problem = digest_problem(path)
        if problem:
            raise ConfigError(f"{path} is damaged: {problem}; {recover}")
        try:
            import yaml

            parsed = yaml.safe_load(text)
        except Exception as e:
            raise ConfigError(f"{path} is not valid YAML ({str(e).splitlines()[0]}); {recover}") from e
        missing = [k for k in ("name", "grid") if not isinstance(parsed, dict) or k not in parsed]
        if missing:
            raise ConfigError(f"{path} has no {' or '.join(missing)}: not a whole sweep config; {recover}")
        return text

    def append_extension(self, entry: Mapping[str, Any]) -> None:
        """Add an extension (grid, deeper pruning) at the end of sweep.yaml; the text before it stays as it is."""
        import yaml

        text = self.read_config()
        if not text.endswith("\n"):
            text += "\n"
        parsed = yaml.safe_load(text)
        if "extensions" not in parsed:
            text += "extensions:\n"
        item = yaml.safe_dump([dict(entry)], sort_keys=False, default_flow_style=False)
        text += "".join(f"  {line}\n" if line else "\n" for line in item.rstrip("\n").split("\n"))
        # The new digest is accepted before the new text lands, so a crash between the two writes
        # leaves a sweep.yaml that still reads (the old text, whose digest stays accepted too).
        accepted = read_digests(sidecar(self.config_path)) or []
        write_digests(sidecar(self.config_path), [*accepted, hashlib.sha256(text.encode()).hexdigest()])
        write_text(self.config_path, text)

    def write_origin(self, job_id: str, shallower: Sequence[str]) -> None:
        """Record which shallower jobs of the same trajectory a deeper job continues from (deepest first)."""
        path = self.job_dir(job_id) / "origin.json"
        if not path.is_file():
            write_json(path, {"continues": list(shallower)})

    def read_origin(self, job_id: str) -> list[str]:
        try:
            return [str(i) for i in read_json(self.job_dir(job_id) / "origin.json")["continues"]]
        except (OSError, ValueError, KeyError, TypeError):
            return []

    def write_store(self, store: str | None) -> None:
        """Which store (scaling_sweep.store) the jobs of the current launch publish to; null: none."""
        write_json(self.path / "store.json", {"store": store})

    def read_store(self) -> str | None:
        try:
            value = read_json(self.path / "store.json")["store"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return str(value) if value else None

    @property
    def import_paths_path(self) -> Path:
        return self.path / "import_paths.json"

    def write_import_paths(self, paths: Sequence[str]) -> None:
        """Record where user components (`_target_`) import from, once, so any process can reopen the sweep."""
        if not self.import_paths_path.is_file():
            write_json(self.import_paths_path, {"import_paths": list(paths)})

    def read_import_paths(self) -> list[str]:
        """The directories recorded at creation (none for sweeps made before they were recorded)."""
        try:
            return [str(p) for p in json.loads(self.import_paths_path.read_text())["import_paths"]]
        except (OSError, ValueError, KeyError, TypeError):
            return []

    def create(self, config_yaml: str) -> None:
        """Freeze the config at first launch; a sweep directory never changes its config afterwards."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            (self.path / "jobs").mkdir(exist_ok=True)
            (self.path / "rows").mkdir(exist_ok=True)
            probe = self.path / f".write-test-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise ConfigError(
                f"out_dir: cannot write to {self.path} ({e.strerror}); pass out_dir=/a/writable/dir"
            ) from e
        if not self.exists():
            write_digests(sidecar(self.config_path), [hashlib.sha256(config_yaml.encode()).hexdigest()])
            write_text(self.config_path, config_yaml)
        self.remove_stale_temps()

    def remove_stale_temps(self, job_id: str | None = None) -> list[Path]:
        """Temp files of writers killed mid-write (SIGKILL skips their clean-up): the job's, or the sweep's."""
        if job_id is not None:
            jd = self.job_dir(job_id)
            return remove_stale_temps([jd, jd / "ckpt"]) + remove_stale_temps(
                [self.path / "rows"], prefix=f".{job_id}."
            )
        jobs = self.path / "jobs"
        job_dirs = [jobs / j for j in os.listdir(jobs)] if jobs.is_dir() else []
        dirs = [
            self.path,
            self.path / "rows",
            self.slurm_dir,
            jobs,
            *job_dirs,
            *(d / "ckpt" for d in job_dirs),
        ]
        return remove_stale_temps(dirs)

    # -- job state -----------------------------------------------------------------------
    def write_spec(self, spec: JobSpec) -> None:
        path = self.job_dir(spec.job_id) / "spec.json"
        if not path.exists():
            write_json(path, spec.to_dict())

    def read_state(self, job_id: str) -> dict[str, Any]:
        try:
            return read_json(self.job_dir(job_id) / "state.json")
        except FileNotFoundError:
            return {}
        except ValueError:
            return {"status": PENDING, "problem": "state.json unreadable"}

    def write_state(self, job_id: str, **fields: Any) -> dict[str, Any]:
        state = self.read_state(job_id)
        state.pop("problem", None)
        state.update(fields, updated_at=time.time())
        write_json(self.job_dir(job_id) / "state.json", state)
        return state

    @contextmanager
    def lease(self, job_id: str) -> Iterator[Lease | None]:
        """Take the job's lease (None if a live process holds it); a stale lease is taken over."""
        jd = self.job_dir(job_id)
        jd.mkdir(parents=True, exist_ok=True)
        path = jd / "lease.json"
        lease = Lease(path, uuid.uuid4().hex)
        try:
            with lease._lock():
                try:
                    current = read_json(path)
                except (OSError, ValueError):
                    current = None
                if current is not None and lease_is_live(current):
                    yield_value = None
                else:
                    write_json(path, lease._record())
                    yield_value = lease
        except FileLockTimeout:
            # A holder of the lease lock that never lets go is a stopped process: treat the job as held
            # elsewhere (busy) rather than fail it; a later resume takes it over once that one is gone.
            yield_value = None
        if yield_value is None:
            yield None
            return
        lease._thread.start()
        try:
            yield lease
        finally:
            lease.release()

    def is_done(self, job_id: str, levels_total: int) -> bool:
        """Done = state.json says so and the rows file holds every level (lease not consulted).

        `levels_total` is the planned count; a trajectory that stopped early needs only its own.
        """
        state = self.read_state(job_id)
        if state.get("status") != DONE:
            return False
        n, _ = check_rows(self.rows_path(job_id))
        return n is not None and n >= expected_levels(state, levels_total)

    def job_status(self, job_id: str, levels_total: int | None = None, verify: bool = True) -> JobStatus:
        """Read one job's status from its directory; `verify` checks rows and checkpoint files."""
        jd = self.job_dir(job_id)
        st = JobStatus(job_id, PENDING, levels_total=levels_total)
        if not jd.is_dir():
            return st
        state = self.read_state(job_id)
        st.attempts = int(state.get("attempts", 0))
        st.error = state.get("error", "")
        if state.get("problem"):
            st.problems.append(f"{jd / 'state.json'}: {state['problem']}")
        status = state.get("status", PENDING)
        try:
            lease = read_json(jd / "lease.json")
        except (OSError, ValueError):
            lease = None
        ahead = float(lease.get("heartbeat", 0)) - time.time() if isinstance(lease, dict) else 0.0
        if ahead > STALE_S:
            st.problems.append(
                f"{jd / 'lease.json'}: heartbeat {ahead:.0f} s in the future (clock skew or a bad write); "
                f"treated as stale, so the job can be taken over"
            )
        if lease is not None and lease_is_live(lease):
            st.status = RUNNING
            st.owner = f"{lease.get('host')}:{lease.get('pid')}"
        elif status in (DONE, FAILED):
            st.status = status
        elif status in (RUNNING, INTERRUPTED):
            st.status = INTERRUPTED  # a dead owner or a clean stop: resume continues it
        rows = self.rows_path(job_id)
        if not verify:
            st.levels_done = int(state.get("levels_done", 0))  # what the job last wrote; rows not read
        elif rows.exists():
            n, problem = check_rows(rows)
            if n is None:
                st.problems.append(f"{rows}: {problem}; the job reruns from its checkpoint")
            else:
                st.levels_done = n
        if st.status == DONE:
            expected = expected_levels(state, levels_total)
            if state.get("stopped"):
                st.stopped, st.levels_total = dict(state["stopped"]), expected
            if verify and st.levels_done < expected:
                st.problems.append(
                    f"{rows}: {st.levels_done} of {expected} levels; the job reruns from its checkpoint"
                )
                st.status = INTERRUPTED
        if verify and st.status != DONE:
            st.problems += unreadable_checkpoints(self.ckpt_dir(job_id))
        return st

    def statuses(self, specs: Sequence[JobSpec], verify: bool = True) -> dict[str, JobStatus]:
        """Status of every job; jobs never started cost one directory listing in total."""
        started = set(os.listdir(self.path / "jobs")) if (self.path / "jobs").is_dir() else set()
        out = {}
        for spec in specs:
            total = spec_levels(spec)
            if spec.job_id in started:
                out[spec.job_id] = self.job_status(spec.job_id, total, verify=verify)
            else:
                out[spec.job_id] = JobStatus(spec.job_id, PENDING, levels_total=total)
        return out


def expected_levels(state: dict[str, Any], planned: int | None) -> int:
    """Rows a done job must have: what state.json recorded when it stopped early, else the plan's count."""
    if state.get("stopped") or planned is None:
        return int(state.get("levels_total", planned or 0))
    return int(planned)


def check_rows(path: Path) -> tuple[int | None, str]:
    """(row count, "") of a trustworthy rows file, else (None, why not): see results.check_rows."""
    if not path.exists():
        return None, "missing"
    from scaling_sweep.results import check_rows as check  # pyarrow only when rows are read

    return check(path)


def unreadable_checkpoints(ckpt_dir: Path) -> list[str]:
    """Checkpoints the trainer will not use: damaged content (checksum), or truncated, found without torch.

    torch.save writes zip archives: a truncated one has no central directory. The digests of both
    checkpoint files are kept in one sidecar, `.checkpoint.pt.sha256` (train/checkpoint.py).
    """
    if not ckpt_dir.is_dir():
        return []
    bad = []
    digests = sidecar(ckpt_dir / "checkpoint.pt")
    for p in sorted(ckpt_dir.glob("*.pt")):
        try:
            problem = digest_problem(p, digests) or (
                "" if zipfile.is_zipfile(p) else "truncated or unreadable"
            )
        except OSError as e:
            problem = f"unreadable ({e.strerror})"
        if problem:
            bad.append(f"{p}: checkpoint {problem}; the job resumes from the previous good one")
    return bad


def spec_levels(spec: JobSpec) -> int:
    """Rows a finished job has: levels 0..L (as the trainer counts them; one-shot: dense + pruned)."""
    return last_level(spec.prune) + 1
