"""The local launcher: long-lived worker processes, one per device slot, fed jobs (alone or in packs) through a pipe each."""

from __future__ import annotations

import errno
import importlib
import multiprocessing as mp
import os
import signal
from collections import Counter, deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from launchers.base import LaunchResult
from scaling_sweep import packing
from scaling_sweep.errors import ConfigError
from scaling_sweep.estimate import Estimates, check_order, ordered
from scaling_sweep.packing import form_packs, pack_size
from scaling_sweep.spec import JobSpec
from scaling_sweep.sweep import SweepDir

# Glibc's defaults return freed memory to the OS after every small model's step; raising the
# thresholds measurably speeds narrow models (and a packed step, 15 % at the default width 0.5).
WORKER_ENV = {"MALLOC_MMAP_THRESHOLD_": "1000000000", "MALLOC_TRIM_THRESHOLD_": "1000000000"}


def visible_gpus() -> list[str]:
    """CUDA GPUs this process may use, found without importing torch."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]
    try:
        return [str(i) for i in range(len(os.listdir("/proc/driver/nvidia/gpus")))]
    except OSError:
        return []


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@dataclass
class Slot:
    """One worker: what it calls its device, which GPU it sees, how many CPU threads it uses."""

    device: str  # as the job sees it: cpu or cuda:0
    gpu: str | None  # physical GPU index exported as CUDA_VISIBLE_DEVICES, None for CPU workers
    threads: int


def make_slots(devices: Any, jobs_per_device: int, threads: int | None) -> list[Slot]:
    """Expand launcher.devices (auto | N | [cpu, cuda:0, ...]) into worker slots."""
    if jobs_per_device < 1:
        raise ConfigError(f"launcher.jobs_per_device={jobs_per_device}: must be >= 1")
    gpus = visible_gpus()
    if devices == "auto":
        names = [f"cuda:{g}" for g in gpus] if gpus else ["cpu"] * cpu_count()
    elif isinstance(devices, int) and not isinstance(devices, bool):
        names = ["cpu"] * devices
    elif isinstance(devices, (list, tuple)):
        names = [str(d) for d in devices]
    else:
        raise ConfigError(
            f"launcher.devices={devices!r}: use auto, a worker count, or a list like [cpu,cpu] or [cuda:0,cuda:1]"
        )
    if not names:
        raise ConfigError("launcher.devices=[]: give at least one device")
    slots: list[Slot] = []
    for name in names:
        if name == "cpu":
            slots.append(Slot("cpu", None, 0))
        elif name.startswith("cuda"):
            index = name.partition(":")[2] or "0"
            if gpus and index not in gpus:
                raise ConfigError(
                    f"launcher.devices: {name} is not visible; visible GPUs: {', '.join(gpus) or 'none'}"
                )
            if not gpus:
                raise ConfigError(f"launcher.devices: {name} requested but no CUDA GPU is visible; use cpu")
            slots += [Slot("cuda:0", index, 0) for _ in range(jobs_per_device)]
        else:
            raise ConfigError(f"launcher.devices: {name!r} is not a device; use cpu or cuda:N")
    per = threads if threads else max(1, cpu_count() // len(slots))
    for s in slots:
        s.threads = per
    return slots


@contextmanager
def _env(values: Mapping[str, str]) -> Iterator[None]:
    # Spawned children copy os.environ at start(): set it around start, then restore.
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _resolve(path: str | None) -> Any:
    if not path:
        return None
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def _worker(
    slot: Slot,
    sweep_dir: str,
    sweep_name: str,
    conn: Any,
    stop_flag: Any,
    parent_pid: int,
    train_fn_path: str | None,
) -> None:
    # Ctrl-C reaches the whole process group; only the parent decides, and tells us via stop_flag,
    # so that a running job checkpoints instead of dying mid-step. (Until this line runs SIGINT is
    # blocked: the parent starts us with it masked.)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    from scaling_sweep.job import run_job, run_pack

    train_fn = _resolve(train_fn_path)
    if train_fn is None:
        import torch  # once per worker, not once per job

        torch.set_num_threads(slot.threads)

    def stop() -> bool:
        # A lock-free flag: a stop() polled after every step must not wait on a lock that a
        # worker killed from outside may have died holding.
        return bool(stop_flag.value) or os.getppid() != parent_pid

    reported: set[str] = set()  # jobs of the current pack whose outcome went back

    def report(job_id: str, outcome: str) -> None:
        reported.add(job_id)
        conn.send((job_id, outcome, "", ""))

    while not stop():
        if not conn.poll(0.2):
            continue
        item = conn.recv()
        if item is None:
            break
        specs = [JobSpec.from_dict(d) for d in item]
        reported.clear()
        try:
            if len(specs) == 1:
                report(
                    specs[0].job_id,
                    run_job(
                        specs[0], sweep_dir, slot.device, stop=stop, train_fn=train_fn, sweep_name=sweep_name
                    ),
                )
            else:
                run_pack(specs, sweep_dir, slot.device, stop=stop, sweep_name=sweep_name, report=report)
        # run_job and run_pack record training failures themselves; this is the sweep layer failing
        except BaseException as e:
            disk = isinstance(e, OSError) and e.errno in QUIET_ERRNOS
            # A full disk is not the job's failure: `resume` continues it once there is room again.
            outcome = "interrupted" if disk else "failed"
            left = [s.job_id for s in specs if s.job_id not in reported]
            for i, job_id in enumerate(left):
                exiting = ("disk" if disk else "crash") if i == len(left) - 1 else ""
                conn.send((job_id, outcome, f"{type(e).__name__}: {e}", exiting))
            if disk:
                return  # a full or read-only disk: the line above says it once, not a traceback per worker
            raise


# Disk errors a worker reports in one line instead of a traceback (the parent then says it once).
QUIET_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)
# How often a job whose worker died (OOM killer, kill -9) is rerun in a new worker before it is
# left interrupted: once, so one stray kill costs nothing and a job that kills every worker stops.
RERUNS_AFTER_DEATH = 1


@dataclass
class _Worker:
    index: int
    proc: Any
    # The parent's end of a duplex pipe: packs (lists of specs; None: exit) go out, and
    # (job_id, outcome, detail, exiting: "" | "crash" | "disk") come back.
    conn: Any
    jobs: list[JobSpec] = field(default_factory=list)  # its pack's jobs still running; known even if it dies
    leaving: bool = False  # told to exit, or said it exits
    crashed: bool = False  # said it exits after an error of its own (not of a job)
    reaped: bool = False  # its exit has been handled


class LocalLauncher:
    """Runs jobs on this machine's devices with warm worker processes; blocks until they end."""

    name = "local"
    blocking = True

    def __init__(
        self,
        devices: Any = "auto",
        jobs_per_device: int = 1,
        threads_per_worker: int | None = None,
        train_fn: str | None = None,
        progress: bool = True,
        order: str = "cheapest",
        pack: Any = "auto",
    ) -> None:
        self.slots = make_slots(devices, jobs_per_device, threads_per_worker)
        # Most jobs per pack (scaling_sweep.packing); a replacement trainer trains one job at a time.
        self.pack = 1 if train_fn else pack_size(pack)
        self.train_fn = train_fn  # "module:function" replacing the trainer (benchmarks, tests)
        self.progress = progress
        self.order = check_order(order)
        # Expected seconds per job (scaling_sweep.estimate), set by the caller: they order the jobs
        # (launcher.order=cheapest) and drive the ETA. None: the given order, an ETA from finished jobs.
        self.estimates: Estimates | None = None

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> LocalLauncher:
        known = {"name", "devices", "jobs_per_device", "threads_per_worker", "order", "pack"}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ConfigError(
                f"launcher.{unknown[0]} is not an option of the local launcher; known: {', '.join(sorted(known))}"
            )
        per_device = cfg.get("jobs_per_device", 1)
        threads = cfg.get("threads_per_worker")
        # 0 used to mean the default silently; say so instead (null still means "the default").
        if isinstance(per_device, bool) or not isinstance(per_device, int) or per_device < 1:
            raise ConfigError(f"launcher.jobs_per_device={per_device!r}: must be an integer >= 1")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ConfigError(
                f"launcher.threads_per_worker={threads!r}: must be an integer >= 1, or null (CPUs / workers)"
            )
        return cls(
            cfg.get("devices", "auto"),
            per_device,
            threads,
            order=cfg.get("order", "cheapest"),
            pack=cfg.get("pack", "auto"),
        )

    def describe(self) -> str:
        devs = Counter(s.device if s.gpu is None else f"cuda:{s.gpu}" for s in self.slots)
        return ", ".join(f"{n} x {d}" for d, n in devs.items()) + f" ({self.slots[0].threads} thread(s) each)"

    def launch(self, sweep: SweepDir, specs: Sequence[JobSpec], *, fail_fast: bool = False) -> LaunchResult:
        from launchers.progress import SweepProgress

        if not specs:
            return LaunchResult()
        specs = ordered(specs, self.order, self.estimates)
        cost = self.estimates.seconds() if self.estimates else None
        # A pack's jobs end together: under `cheapest`, packs start costliest first, so that no worker
        # waits alone on the last long pack (the default sweep: 60 s against 73 s cheapest first).
        packs = form_packs(specs, self.pack, len(self.slots), cost, costliest_first=self.order == "cheapest")
        progress = SweepProgress(
            total=len(specs),
            enabled=self.progress,
            estimates=self.estimates.seconds() if self.estimates else None,
            workers=len(self.slots),
            order=[s.job_id for s in specs],
        )
        if any(len(p) > 1 for p in packs):
            first = ", the costliest first" if self.order == "cheapest" else ""
            progress.note(f"packed: {packing.describe(packs)}{first} (launcher.pack=off trains each alone)")
        pool = _Pool(self, sweep, packs, fail_fast, progress)
        return pool.run()


class _Pool:
    """One launch: the workers, the jobs not yet handed out, and what came back.

    The parent hands each worker one pack at a time (one job, or jobs that train together) over its
    own pipe, so it always knows which jobs a worker holds; a worker that dies (OOM killer, kill -9)
    is noticed through its process sentinel, its jobs are rerun in a fresh worker (resuming from
    their checkpoints), and nothing
    shared (a queue lock) can be left held by the dead process.
    """

    def __init__(
        self,
        launcher: LocalLauncher,
        sweep: SweepDir,
        packs: Sequence[list[JobSpec]],
        fail_fast: bool,
        progress: Any,
    ) -> None:
        self.launcher, self.sweep, self.fail_fast, self.progress = launcher, sweep, fail_fast, progress
        self.ctx = mp.get_context("spawn")
        self.stop_flag = self.ctx.RawValue("b", 0)
        self.todo: deque[list[JobSpec]] = deque(packs)
        self.workers: list[_Worker] = []
        self.deaths: Counter = Counter()  # job_id -> workers lost while running it
        self.restarts_left = 2 * len(launcher.slots) + sum(map(len, packs))  # a bound on replacements
        self.result = LaunchResult()
        self.stopping = False

    def run(self) -> LaunchResult:
        with self.progress:
            try:
                for i in range(min(len(self.launcher.slots), len(self.todo))):
                    self._start(i)
                self._loop()
            except KeyboardInterrupt:  # also while workers start: the ones started take no new job
                self.result.interrupted_by_user = True
                self._stop("Ctrl-C: running jobs are checkpointing (Ctrl-C again to kill them)…")
                try:
                    self._loop()
                except KeyboardInterrupt:
                    for w in self.workers:
                        w.proc.terminate()
        for w in self.workers:
            w.proc.join(timeout=30)
        self.result.interrupted_by_user = self.result.interrupted_by_user or self.stopping
        return self.result

    def _start(self, index: int) -> None:
        slot = self.launcher.slots[index]
        env = dict(WORKER_ENV, OMP_NUM_THREADS=str(slot.threads), MKL_NUM_THREADS=str(slot.threads))
        if slot.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = slot.gpu
        ours, theirs = self.ctx.Pipe()
        p = self.ctx.Process(
            target=_worker,
            name=f"scaling-sweep-worker-{index}",
            args=(
                slot,
                str(self.sweep.path),
                self.sweep.path.name,
                theirs,
                self.stop_flag,
                os.getpid(),
                self.launcher.train_fn,
            ),
            daemon=True,
        )
        # The child inherits a blocked SIGINT, so a Ctrl-C while it imports cannot print a
        # traceback from it; one arriving here meanwhile is delivered to us when we unblock.
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            with _env(env):
                p.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        theirs.close()  # so that the worker's death reads as EOF on ours
        w = _Worker(index, p, ours)
        self.workers.append(w)
        self._hand_out(w)

    def _running(self) -> int:
        return sum(len(w.jobs) for w in self.workers)

    def _hand_out(self, w: _Worker) -> None:
        pack = self.todo.popleft() if self.todo and not self.stopping else None
        try:
            w.conn.send([job.to_dict() for job in pack] if pack else None)
        except OSError:  # it died already; its sentinel tells the loop, which replaces it
            if pack:
                self.todo.appendleft(pack)
            return
        w.jobs, w.leaving = list(pack or []), pack is None
        for job in w.jobs:
            self.progress.job_started(job.job_id)
        self.progress.update(running=self._running())

    def _loop(self) -> None:
        from multiprocessing.connection import wait

        while live := [w for w in self.workers if not w.reaped]:
            wait([w.conn for w in live] + [w.proc.sentinel for w in live], timeout=0.5)
            for w in live:
                # A worker's messages are in the pipe before it exits (send is synchronous), so
                # reading them first tells a finished job from one that died with its worker.
                exited = w.proc.exitcode is not None
                self._receive(w)
                if exited:
                    self._exited(w)

    def _receive(self, w: _Worker) -> None:
        while w.conn.poll():
            try:
                job_id, outcome, detail, exiting = w.conn.recv()
            except (EOFError, OSError):
                return  # the worker is gone; _exited deals with its job
            w.jobs = [j for j in w.jobs if j.job_id != job_id]
            self.result.outcomes[outcome] += 1
            error = detail or self.sweep.read_state(job_id).get("error", "")
            self.progress.job_ended(
                job_id, outcome, error, self.sweep.job_dir(job_id), running=self._running()
            )
            if exiting:
                w.leaving = w.crashed = True
            if exiting == "disk" and not self.stopping:
                self._stop(f"stopping: {detail}")
            if outcome == "failed" and self.fail_fast and not self.stopping:
                self._stop("--fail-fast: stopping; running jobs checkpoint and `resume` continues them")
            if not w.leaving and not w.jobs:
                self._hand_out(w)

    def _exited(self, w: _Worker) -> None:
        w.reaped = True
        jobs, w.jobs = w.jobs, []
        if not jobs and w.leaving and not w.crashed:
            return  # told to exit, and it did
        if jobs:
            self._lost(w, jobs)
        if self.todo and not self.stopping and self.restarts_left > 0:
            self.restarts_left -= 1
            self._start(w.index)

    def _lost(self, w: _Worker, jobs: list[JobSpec]) -> None:
        """A worker died running `jobs` (OOM killer, kill -9): rerun them once in a new worker, else report them."""
        code = w.proc.exitcode
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        running = f"job {jobs[0].job_id}" if len(jobs) == 1 else f"a pack of {len(jobs)} jobs"
        died = f"worker {w.index} (pid {w.proc.pid}) died ({how}) running {running}"
        for job in jobs:
            self.deaths[job.job_id] += 1
        again = [j for j in jobs if self.deaths[j.job_id] <= RERUNS_AFTER_DEATH]
        if not self.stopping and again and self.restarts_left > 0:
            self.todo.appendleft(again)
            self.progress.note(
                f"[yellow]{died}[/yellow]: rerunning {'it' if len(again) == 1 else 'them'} in a new worker, "
                "from the last checkpoint"
            )
            jobs = [j for j in jobs if j not in again]
        for job in jobs:
            self.result.outcomes["interrupted"] += 1
            self.progress.job_ended(
                job.job_id, "interrupted", "", self.sweep.job_dir(job.job_id), running=self._running()
            )
            twice = " again" if self.deaths[job.job_id] > 1 else ""
            self.progress.note(
                f"[red]{died}{twice}[/red]; job {job.job_id} is left interrupted (`resume` continues it)"
            )

    def _stop(self, message: str) -> None:
        self.stopping = True
        self.stop_flag.value = 1
        self.progress.note(message)
