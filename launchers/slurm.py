"""The SLURM launcher: a sweep's jobs as submitit job arrays, submitted and left to run; the disk keeps the state.

`launch` cuts the jobs into array tasks: each pack of jobs that train together (`launcher.pack`,
scaling_sweep.packing) is one task, and jobs that train alone go `jobs_per_task` to a task. It
splits the tasks into arrays of at most the cluster's MaxArraySize, submits each through submitit
and records which job ids each task of each array runs in `slurm/arrays/<array id>.json`.
`slurm_states` and `cancel` read those records back and ask SLURM about all of them with one
`squeue` call. What runs inside a task is `slurm_task.py`.
"""

from __future__ import annotations

import datetime as dt
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from launchers import slurm_cluster
from launchers.base import LaunchResult
from launchers.slurm_task import SweepTask
from scaling_sweep.atomic import read_json, write_json
from scaling_sweep.errors import ConfigError
from scaling_sweep.estimate import Estimates, check_order, ordered
from scaling_sweep.packing import describe as describe_packs
from scaling_sweep.packing import form_packs, pack_size
from scaling_sweep.spec import JobSpec
from scaling_sweep.sweep import SweepDir

# When one job sits in several live tasks (a resubmission), show the most telling state.
_STATE_RANK = {"RUNNING": 0, "COMPLETING": 1, "CONFIGURING": 2, "REQUEUED": 3, "PENDING": 4}


@dataclass(frozen=True)
class SlurmOptions:
    """`configs/launcher/slurm.yaml`: resources per array task and how jobs are packed into tasks."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_min: int = 60
    gpus_per_task: int = 0
    cpus_per_task: int = 1
    mem_gb: float | None = None
    constraint: str | None = None
    array_parallelism: int = 64
    jobs_per_task: int = 1
    max_requeues: int = 3
    signal_delay_s: int = 120
    device: str = "auto"
    threads: int | None = None
    setup: tuple[str, ...] = ()
    sbatch: Mapping[str, Any] = field(default_factory=dict)
    job_name: str | None = None
    order: str = "cheapest"  # cheapest jobs first in the arrays (by the estimate), or grid: as declared
    pack: Any = "auto"  # jobs that share a model and recipe train as one stacked program in one task

    @classmethod
    def parse(cls, cfg: Mapping[str, Any]) -> SlurmOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known - {"name"})
        if unknown:
            raise ConfigError(
                f"launcher.{unknown[0]} is not an option of the slurm launcher; known: {', '.join(sorted(known))}"
            )
        values = {k: v for k, v in cfg.items() if k in known and v is not None}
        values["setup"] = tuple(str(line) for line in values.get("setup") or ())
        values["sbatch"] = dict(values.get("sbatch") or {})
        opts = cls(**values)
        for name in ("time_min", "cpus_per_task", "array_parallelism", "jobs_per_task"):
            if not isinstance(getattr(opts, name), int) or getattr(opts, name) < 1:
                raise ConfigError(f"launcher.{name}={getattr(opts, name)!r}: must be an integer >= 1")
        for name in ("gpus_per_task", "max_requeues", "signal_delay_s"):
            if not isinstance(getattr(opts, name), int) or getattr(opts, name) < 0:
                raise ConfigError(f"launcher.{name}={getattr(opts, name)!r}: must be an integer >= 0")
        if opts.mem_gb is not None and not (isinstance(opts.mem_gb, (int, float)) and opts.mem_gb > 0):
            raise ConfigError(f"launcher.mem_gb={opts.mem_gb!r}: must be a number of GB > 0, or null")
        if opts.device != "auto" and opts.device != "cpu" and not opts.device.startswith("cuda"):
            raise ConfigError(f"launcher.device={opts.device!r}: use auto, cpu or cuda")
        check_order(opts.order)
        pack_size(opts.pack)
        if opts.signal_delay_s >= opts.time_min * 60:
            raise ConfigError(
                f"launcher.signal_delay_s={opts.signal_delay_s}: must be shorter than the time limit "
                f"(launcher.time_min={opts.time_min} min)"
            )
        return opts

    def resolved_device(self) -> str:
        if self.device == "auto":
            return "cuda:0" if self.gpus_per_task else "cpu"
        return "cuda:0" if self.device == "cuda" else self.device


def _tasks(specs: Sequence[JobSpec], opts: SlurmOptions) -> list[tuple[list[JobSpec], bool]]:
    """Array tasks in the order of `specs`, each with whether its jobs train as one pack: each pack
    is one task (never split to fill the cluster: a smaller pack trains less efficiently, and
    `launcher.pack=N` caps its size), and jobs that train alone go `jobs_per_task` to a task."""
    tasks: list[tuple[list[JobSpec], bool]] = []
    alone: list[JobSpec] = []
    for unit in form_packs(specs, pack_size(opts.pack)):
        if len(unit) > 1:
            tasks.append((unit, True))
            continue
        alone += unit
        if len(alone) == opts.jobs_per_task:
            tasks.append((alone, False))
            alone = []
    return tasks + ([(alone, False)] if alone else [])


def _records(sweep: SweepDir) -> list[dict[str, Any]]:
    out = []
    for path in sorted((sweep.slurm_dir / "arrays").glob("*.json")):
        try:
            out.append(read_json(path))
        except (OSError, ValueError):
            continue  # a record being written right now; the next call sees it
    return out


def _live_tasks(sweep: SweepDir) -> list[tuple[list[str], slurm_cluster.QueuedTask]]:
    """(job ids, squeue line) for every task of this sweep's arrays that slurmctld still knows."""
    records = {r["array_id"]: r for r in _records(sweep)}
    if not records:
        return []
    out = []
    for task in slurm_cluster.queue(records):
        record = records.get(task.array_id)
        # After a controller reset job ids start again from 1: the name tells ours apart.
        if record is None or task.name != record["job_name"]:
            continue
        tasks = record["tasks"]
        index = task.index or 0
        if index < len(tasks):
            out.append((tasks[index], task))
    return out


def slurm_states(sweep: SweepDir) -> dict[str, str]:
    """job_id -> SLURM state of the task that runs it, for this sweep's jobs slurmctld still knows (one squeue call)."""
    states: dict[str, str] = {}
    for job_ids, task in _live_tasks(sweep):
        for job_id in job_ids:
            old = states.get(job_id)
            if old is None or _STATE_RANK.get(task.state, 9) < _STATE_RANK.get(old, 9):
                states[job_id] = task.state
    return states


def cancel(sweep: SweepDir) -> int:
    """scancel this sweep's pending and running SLURM tasks; returns how many tasks were live."""
    live = [task for _, task in _live_tasks(sweep) if task.state not in slurm_cluster.TERMINAL]
    slurm_cluster.scancel({task.array_id for task in live})
    return len(live)


class SlurmLauncher:
    """Submits jobs as SLURM job arrays through submitit and returns at once."""

    name = "slurm"
    blocking = False

    def __init__(self, options: SlurmOptions) -> None:
        self.options = options
        # Expected seconds per job (scaling_sweep.estimate), set by the caller: with order=cheapest the
        # arrays' first task indices, which SLURM starts first, get the cheapest jobs.
        self.estimates: Estimates | None = None

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], check_cluster: bool = True) -> SlurmLauncher:
        """Parse `launcher.*`; with check_cluster, also fail now on a missing sbatch or an unknown partition."""
        launcher = cls(SlurmOptions.parse(cfg))
        if check_cluster:
            launcher.check_cluster()
        return launcher

    def check_cluster(self) -> None:
        slurm_cluster.require("sbatch")
        slurm_cluster.require("srun")  # submitit starts the task with srun inside the batch script
        slurm_cluster.check_partition(self.options.partition)

    def describe(self) -> str:
        o = self.options
        parts = [
            f"partition {o.partition or '(default)'}",
            f"{o.time_min} min",
            f"{o.cpus_per_task} cpu",
        ]
        if o.gpus_per_task:
            parts.append(f"{o.gpus_per_task} gpu")
        if o.mem_gb:
            parts.append(f"{o.mem_gb:g} GB")
        packs = "off" if pack_size(o.pack) == 1 else f"packs of up to {pack_size(o.pack)} jobs a task"
        parts.append(
            f"{o.jobs_per_task} job(s) per task, {packs}, at most {o.array_parallelism} tasks running per array"
        )
        return ", ".join(parts)

    def launch(self, sweep: SweepDir, specs: Sequence[JobSpec], *, fail_fast: bool = False) -> LaunchResult:
        """Submit the jobs not already queued or running on the cluster; `fail_fast` has no meaning here."""
        result = LaunchResult()
        self.check_cluster()
        on_cluster = {j for j, s in slurm_states(sweep).items() if s not in slurm_cluster.TERMINAL}
        todo = [s for s in specs if s.job_id not in on_cluster]
        if on_cluster & {s.job_id for s in specs}:
            result.outcomes["queued"] = len(specs) - len(todo)
        if not todo:
            result.message = f"nothing to submit ({result.outcomes['queued']} jobs already queued or running)"
            return result
        tasks = _tasks(ordered(todo, self.options.order, self.estimates), self.options)
        packed = [jobs for jobs, is_pack in tasks if is_pack]
        limit = slurm_cluster.max_array_size()
        arrays = []
        for start in range(0, len(tasks), limit):
            chunk = tasks[start : start + limit]
            try:
                arrays.append(self._submit(sweep, chunk))
            except ConfigError as e:
                if arrays:
                    raise ConfigError(f"{e} (arrays {', '.join(arrays)} were submitted before this)") from e
                raise
        result.outcomes["submitted"] = len(todo)
        queued = f"; {result.outcomes['queued']} already on the cluster" if on_cluster else ""
        packs = f" ({describe_packs(packed)}, a task each)" if packed else ""
        result.message = (
            f"submitted {len(todo)} jobs as {len(tasks)} SLURM task(s){packs} in "
            f"{'array' if len(arrays) == 1 else 'arrays'} {', '.join(arrays)}{queued}; "
            f"logs in {sweep.slurm_dir / 'logs'}"
        )
        return result

    # -- submission ------------------------------------------------------------------------------
    def _submit(self, sweep: SweepDir, tasks: list[tuple[list[JobSpec], bool]]) -> str:
        from submitit.core.utils import FailedJobError

        executor = self._executor(sweep)
        device = self.options.resolved_device()
        threads = self.options.threads or self.options.cpus_per_task
        name = executor.parameters["job_name"]
        try:
            with executor.batch():
                jobs = [
                    executor.submit(
                        SweepTask(
                            str(sweep.path.resolve()),
                            sweep.path.name,
                            [s.to_dict() for s in group],
                            device,
                            threads,
                            pack=is_pack,
                        )
                    )
                    for group, is_pack in tasks
                ]
        except FailedJobError as e:
            raise ConfigError(
                f"sbatch rejected the submission: {slurm_cluster.one_line(str(e))} "
                f"(check launcher.partition/account/qos/time_min/mem_gb/sbatch)"
            ) from e
        array_id = jobs[0].job_id.split("_")[0]
        write_json(
            sweep.slurm_dir / "arrays" / f"{array_id}.json",
            {
                "array_id": array_id,
                "job_name": name,
                "array": "_" in jobs[0].job_id,
                "tasks": [[s.job_id for s in group] for group, _ in tasks],
                "submitted_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            },
        )
        return array_id

    def _executor(self, sweep: SweepDir) -> Any:
        import submitit

        o = self.options
        executor = submitit.SlurmExecutor(
            folder=sweep.slurm_dir.resolve() / "logs" / "%j", max_num_timeout=o.max_requeues
        )
        params: dict[str, Any] = {
            "job_name": o.job_name or f"ss-{sweep.path.name}",
            "time": o.time_min,
            "cpus_per_task": o.cpus_per_task,
            "array_parallelism": o.array_parallelism,
            "signal_delay_s": o.signal_delay_s,
            "setup": self._setup_lines(),
        }
        for key in ("partition", "account", "qos", "constraint"):
            if getattr(o, key):
                params[key] = getattr(o, key)
        if o.gpus_per_task:
            params["gpus_per_task"] = o.gpus_per_task
        if o.mem_gb:
            params["mem"] = f"{int(o.mem_gb * 1024)}M"
        if o.sbatch:
            params["additional_parameters"] = dict(o.sbatch)
        executor.update_parameters(**params)
        return executor

    def _setup_lines(self) -> list[str]:
        from launchers.local import WORKER_ENV

        threads = str(self.options.threads or self.options.cpus_per_task)
        env = dict(WORKER_ENV, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        lines = [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
        root = Path(__file__).resolve().parent.parent
        if (root / "pyproject.toml").is_file():
            # Running from a checkout: the task must import this very code, wherever sbatch starts it.
            lines.append(f"export PYTHONPATH={shlex.quote(str(root))}${{PYTHONPATH:+:$PYTHONPATH}}")
        return lines + list(self.options.setup)
