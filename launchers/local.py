"""The local launcher: long-lived worker processes, one per device slot, fed JobSpecs through a queue."""

from __future__ import annotations

import importlib
import multiprocessing as mp
import os
import queue
import signal
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from launchers.base import LaunchResult
from scaling_sweep.errors import ConfigError
from scaling_sweep.spec import JobSpec
from scaling_sweep.sweep import SweepDir

# Glibc's defaults return freed memory to the OS after every small model's step; raising the
# thresholds measurably speeds narrow models (DESIGN.md, speed facts).
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
    slot_index: int,
    slot: Slot,
    sweep_dir: str,
    sweep_name: str,
    tasks: Any,
    events: Any,
    stop_event: Any,
    parent_pid: int,
    train_fn_path: str | None,
) -> None:
    # Ctrl-C reaches the whole process group; only the parent decides, and tells us via stop_event,
    # so that a running job checkpoints instead of dying mid-step.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from scaling_sweep.job import run_job

    train_fn = _resolve(train_fn_path)
    if train_fn is None:
        import torch  # once per worker, not once per job

        torch.set_num_threads(slot.threads)

    def stop() -> bool:
        return stop_event.is_set() or os.getppid() != parent_pid

    while not stop():
        try:
            item = tasks.get(timeout=0.2)
        except queue.Empty:
            continue
        if item is None:
            break
        spec = JobSpec.from_dict(item)
        events.put(("start", slot_index, spec.job_id))
        try:
            outcome = run_job(
                spec, sweep_dir, slot.device, stop=stop, train_fn=train_fn, sweep_name=sweep_name
            )
        except (
            BaseException
        ) as e:  # run_job records training failures itself; this is the sweep layer failing
            events.put(("end", slot_index, spec.job_id, "failed", f"{type(e).__name__}: {e}"))
            raise
        events.put(("end", slot_index, spec.job_id, outcome, ""))


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
    ) -> None:
        self.slots = make_slots(devices, jobs_per_device, threads_per_worker)
        self.train_fn = train_fn  # "module:function" replacing the trainer (benchmarks, tests)
        self.progress = progress

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> LocalLauncher:
        known = {"name", "devices", "jobs_per_device", "threads_per_worker"}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ConfigError(
                f"launcher.{unknown[0]} is not an option of the local launcher; known: {', '.join(sorted(known))}"
            )
        return cls(
            cfg.get("devices", "auto"), int(cfg.get("jobs_per_device") or 1), cfg.get("threads_per_worker")
        )

    def describe(self) -> str:
        devs = Counter(s.device if s.gpu is None else f"cuda:{s.gpu}" for s in self.slots)
        return ", ".join(f"{n} x {d}" for d, n in devs.items()) + f" ({self.slots[0].threads} thread(s) each)"

    def launch(self, sweep: SweepDir, specs: Sequence[JobSpec], *, fail_fast: bool = False) -> LaunchResult:
        from launchers.progress import SweepProgress

        result = LaunchResult()
        if not specs:
            return result
        ctx = mp.get_context("spawn")
        tasks, events, stop_event = ctx.Queue(), ctx.Queue(), ctx.Event()
        n_workers = min(len(self.slots), len(specs))
        for spec in specs:
            tasks.put(spec.to_dict())
        for _ in range(n_workers):
            tasks.put(None)
        workers = []
        for i, slot in enumerate(self.slots[:n_workers]):
            env = dict(WORKER_ENV, OMP_NUM_THREADS=str(slot.threads), MKL_NUM_THREADS=str(slot.threads))
            if slot.gpu is not None:
                env["CUDA_VISIBLE_DEVICES"] = slot.gpu
            p = ctx.Process(
                target=_worker,
                name=f"scaling-sweep-worker-{i}",
                args=(
                    i,
                    slot,
                    str(sweep.path),
                    sweep.path.name,
                    tasks,
                    events,
                    stop_event,
                    os.getpid(),
                    self.train_fn,
                ),
                daemon=True,
            )
            with _env(env):
                p.start()
            workers.append(p)

        progress = SweepProgress(total=len(specs), enabled=self.progress)
        running: dict[int, str] = {}
        stopping = False
        try:
            with progress:
                for ev in _events(workers, events):
                    if ev[0] == "start":
                        running[ev[1]] = ev[2]
                        progress.update(running=len(running))
                        continue
                    _, slot_i, job_id, outcome, detail = ev
                    running.pop(slot_i, None)
                    result.outcomes[outcome] += 1
                    error = detail or sweep.read_state(job_id).get("error", "")
                    progress.job_ended(job_id, outcome, error, sweep.job_dir(job_id), running=len(running))
                    if outcome == "failed" and fail_fast and not stopping:
                        stopping = True
                        stop_event.set()
                        progress.note(
                            "--fail-fast: stopping; running jobs checkpoint and `resume` continues them"
                        )
        except KeyboardInterrupt:
            result.interrupted_by_user = True
            stop_event.set()
            progress.note("Ctrl-C: running jobs are checkpointing (Ctrl-C again to kill them)…")
            try:
                for ev in _events(workers, events):
                    if ev[0] == "end":
                        result.outcomes[ev[3]] += 1
            except KeyboardInterrupt:
                for p in workers:
                    p.terminate()
        for p in workers:
            p.join(timeout=30)
        result.interrupted_by_user = result.interrupted_by_user or stopping
        return result


def _events(workers: Sequence[Any], events: Any) -> Iterator[tuple]:
    """Worker events until every worker has exited and the queue is empty."""
    while any(p.is_alive() for p in workers) or not events.empty():
        try:
            yield events.get(timeout=0.2)
        except queue.Empty:
            continue
