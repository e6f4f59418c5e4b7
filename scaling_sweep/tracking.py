"""Mirrors of each job's rows in the trackers labs already watch (TensorBoard, MLflow, W&B): opt-in, never fatal.

The rows files stay the source of truth. A job's `Mirror` sends every level once to each tracker named in
the sweep's `tracking.to`, one tracker run per job (named by its id, tagged with its axes, its canonical
config as parameters), and remembers in jobs/<id>/tracked.json what each tracker has logged, so a resumed
job never logs a level twice. A tracker that is missing or raises costs one warning line, never the job.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from scaling_sweep.atomic import write_json
from scaling_sweep.errors import ConfigError
from scaling_sweep.spec import dotted

# What each tracker receives per level, with the level as the step.
METRICS = ("test_error", "test_loss", "train_error", "density", "params_nonzero")
SETTINGS_FILE = "tracking.json"  # in the sweep directory: the settings of the latest launch
RECORD_FILE = "tracked.json"  # in jobs/<id>/: per tracker, where it logs, its run and the levels sent
WANDB_MODES = ("offline", "online", "disabled")


@dataclass
class TrackingOptions:
    """The `tracking` config node (an execution setting: it never changes a job id)."""

    to: list[str] = field(default_factory=list)  # tensorboard, mlflow, wandb (any of them, or none)
    mlflow_uri: str | None = None  # default: a file store in <sweep>/mlruns
    project: str | None = None  # MLflow experiment and W&B project; default: the sweep's name
    wandb_mode: str | None = None  # default: $WANDB_MODE if set, else offline


def options(node: Any) -> TrackingOptions:
    """The `tracking` node (a mapping, or a bare list of tracker names) checked; one-line ConfigError if bad."""
    if node is None:
        return TrackingOptions()
    if isinstance(node, (str, list, tuple)):
        node = {"to": node}
    if not isinstance(node, Mapping):
        raise ConfigError(f"tracking={node!r}: give a list of trackers, e.g. tracking=[tensorboard,mlflow]")
    known = [f.name for f in fields(TrackingOptions)]
    unknown = [k for k in node if k not in known]
    if unknown:
        raise ConfigError(f"tracking.{unknown[0]} is unknown; known: {', '.join(known)}")
    opts = TrackingOptions(**node)
    names = [opts.to] if isinstance(opts.to, str) else list(opts.to or [])  # `to: mlflow` means [mlflow]
    for name in names:
        if name not in TRACKERS:
            raise ConfigError(f"tracking={name!r} is unknown; known trackers: {', '.join(TRACKERS)}")
    opts.to = list(dict.fromkeys(names))
    if opts.wandb_mode is not None and opts.wandb_mode not in WANDB_MODES:
        raise ConfigError(f"tracking.wandb_mode={opts.wandb_mode!r}: choose {', '.join(WANDB_MODES)}")
    for key in ("mlflow_uri", "project"):
        value = getattr(opts, key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ConfigError(f"tracking.{key}={value!r}: must be a non-empty string")
    return opts


def record(sweep_dir: str | os.PathLike, node: Any) -> None:
    """Write the effective settings of a launch to <sweep>/tracking.json, which jobs read before sweep.yaml.

    sweep.yaml is frozen at the first launch; `resume DIR tracking=[mlflow]` reaches the jobs through this file.
    """
    write_json(Path(sweep_dir) / SETTINGS_FILE, asdict(options(node)))


def settings(sweep_dir: str | os.PathLike) -> TrackingOptions:
    """The settings a job of this sweep uses: tracking.json of the latest launch, else sweep.yaml's node."""
    path = Path(sweep_dir)
    launched = path / SETTINGS_FILE
    if launched.is_file():
        return options(json.loads(launched.read_text()))
    from scaling_sweep.sweep import SweepDir

    sweep = SweepDir(path)
    if not sweep.exists():  # a bare directory (tests, a caller of run_job of its own): nothing to mirror
        return TrackingOptions()
    import yaml

    return options((yaml.safe_load(sweep.read_config()) or {}).get("tracking"))


@dataclass(frozen=True)
class Job:
    """What a tracker needs to know of a job."""

    job_id: str
    sweep: str  # the sweep's name
    sweep_dir: Path
    axes: dict[str, str]  # grid axis -> this job's value: the tags
    config: dict[str, Any]  # the canonical config (what the job id hashes): the parameters

    @property
    def params(self) -> dict[str, str]:
        return {k: _text(v) for k, v in dotted(self.config).items()}


# -- trackers ------------------------------------------------------------------------------
# Each opens (or reopens) the job's run in __init__, sets `resumed` (True: the run of `previous` was
# found and continues, so the levels it holds count), and keeps in `state` what a later process needs
# to reopen it. Packages are imported there, so only configured trackers are ever imported.


class TensorBoard:
    """Event files in <sweep>/tensorboard/<job id>/: `tensorboard --logdir <sweep>/tensorboard`."""

    @staticmethod
    def where(job: Job, opts: TrackingOptions) -> str:
        return str(job.sweep_dir / "tensorboard" / job.job_id)

    def __init__(self, job: Job, opts: TrackingOptions, previous: Mapping[str, Any] | None) -> None:
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        where = self.where(job, opts)
        self.resumed = previous is not None and Path(where).is_dir()
        self.writer = SummaryWriter(log_dir=where)
        self.state: dict[str, Any] = {}
        if not self.resumed:
            self.writer.add_text("job", _describe(job))

    def log(self, levels: Sequence[Mapping[str, Any]]) -> None:
        for m in levels:
            for key, value in _metrics(m).items():
                self.writer.add_scalar(key, value, global_step=int(m["level"]))
        self.writer.flush()

    def close(self, status: str | None) -> None:
        self.writer.close()


class MLflow:
    """One run per job in the experiment named by `project` (the sweep); a local file store unless mlflow_uri."""

    STATUS = {"done": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}

    @staticmethod
    def where(job: Job, opts: TrackingOptions) -> str:
        return opts.mlflow_uri or (job.sweep_dir / "mlruns").resolve().as_uri()

    def __init__(self, job: Job, opts: TrackingOptions, previous: Mapping[str, Any] | None) -> None:
        uri = self.where(job, opts)
        if uri.startswith("file:"):
            # MLflow 3 keeps the file store only on request; it is what a sweep directory needs
            # (no server, no database, many worker processes writing runs side by side).
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow import MlflowClient
        from mlflow.entities import Param

        self.client = MlflowClient(tracking_uri=uri)
        run_id = (previous or {}).get("run_id")
        self.resumed = bool(run_id) and self._exists(run_id)
        if self.resumed:
            self.client.update_run(run_id, status="RUNNING")
        else:
            tags = {"job_id": job.job_id, "sweep": job.sweep, **job.axes}
            with self._lock(job):  # a file store's runs are files of the experiment: one writer at a time
                run = self.client.create_run(self._experiment(job, opts), run_name=job.job_id, tags=tags)
            run_id = run.info.run_id
            params = [Param(k, v) for k, v in job.params.items()]
            for i in range(0, len(params), 100):  # MLflow takes at most 100 parameters per batch
                self.client.log_batch(run_id, params=params[i : i + 100])
        self.run_id = run_id
        self.state = {"run_id": run_id}

    def _exists(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_run(run_id).info.lifecycle_stage == "active"
        except MlflowException:
            return False

    @staticmethod
    def _lock(job: Job) -> Any:
        from filelock import FileLock

        return FileLock(str(job.sweep_dir / ".mlflow-experiment.lock"))

    def _experiment(self, job: Job, opts: TrackingOptions) -> str:
        """The experiment's id, created by the first job to ask; call with `_lock` held.

        Workers start jobs at the same moment; a file store would give each its own experiment of one name.
        """
        name = opts.project or job.sweep
        found = self.client.get_experiment_by_name(name)
        return found.experiment_id if found else self.client.create_experiment(name)

    def log(self, levels: Sequence[Mapping[str, Any]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, int(m["level"])) for m in levels for k, v in _metrics(m).items()]
        for i in range(0, len(metrics), 1000):  # MLflow's batch limit
            self.client.log_batch(self.run_id, metrics=metrics[i : i + 1000])

    def close(self, status: str | None) -> None:
        if status in self.STATUS:  # else another process holds the job now: its run stays open
            self.client.set_terminated(self.run_id, self.STATUS[status])


class WandB:
    """One run per job, its id the job id (so a resumed job continues it); offline unless configured."""

    @staticmethod
    def where(job: Job, opts: TrackingOptions) -> str:
        return f"{_wandb_mode(opts)}:{opts.project or job.sweep}:{job.sweep_dir}"

    def __init__(self, job: Job, opts: TrackingOptions, previous: Mapping[str, Any] | None) -> None:
        import wandb

        settings = wandb.Settings(
            mode=_wandb_mode(opts),
            silent=True,
            console="off",  # the job's stdout is the launcher's, not W&B's
            disable_git=True,
            save_code=False,
            x_disable_stats=True,
        )
        self.run = wandb.init(
            project=opts.project or job.sweep,
            id=job.job_id,
            name=job.job_id,
            dir=str(job.sweep_dir),  # W&B writes to <sweep>/wandb/
            config=job.config,
            tags=[f"{k}={v}"[:64] for k, v in job.axes.items()],  # W&B's limit on a tag
            resume="allow",
            reinit="create_new",  # each job's run stands alone, whatever else this process runs
            settings=settings,
        )
        self.resumed = previous is not None
        self.state: dict[str, Any] = {"run_id": self.run.id}

    def log(self, levels: Sequence[Mapping[str, Any]]) -> None:
        for m in levels:
            self.run.log(_metrics(m), step=int(m["level"]))

    def close(self, status: str | None) -> None:
        self.run.finish(exit_code=0 if status in ("done", None) else 1)


def _wandb_mode(opts: TrackingOptions) -> str:
    return opts.wandb_mode or os.environ.get("WANDB_MODE") or "offline"


TRACKERS: dict[str, type] = {"tensorboard": TensorBoard, "mlflow": MLflow, "wandb": WandB}


# -- one job's mirror ----------------------------------------------------------------------

_warned: set[str] = set()  # trackers this process has warned about on stderr (once each)


class Mirror:
    """A job's trackers: `log(levels)` after each level (run_job's emit), `close()` when the job ends.

    Never raises: the first failure of a tracker is one warning line in jobs/<id>/log.txt (and, once per
    process, on stderr), and that tracker is left alone for the rest of the job.
    """

    def __init__(self, sweep: Any, spec: Any, sweep_name: str) -> None:
        self.sweep = sweep
        self.job = Job(
            job_id=spec.job_id,
            sweep=sweep_name,
            sweep_dir=Path(sweep.path).resolve(),
            axes={k: _text(v) for k, v in dict(spec.axes).items()},
            config=spec.identity(),
        )
        self.open: dict[str, Any] = {}
        self.off: set[str] = set()
        self.record: dict[str, Any] = {}
        try:
            self.opts = settings(sweep.path)
            if self.opts.to:
                self.record = _read(self._record_path)
        except Exception as e:
            self.opts = TrackingOptions()
            self._warn("tracking", f"settings unreadable ({_one_line(e)}); no tracker mirrors this job")

    @property
    def _record_path(self) -> Path:
        return self.sweep.job_dir(self.job.job_id) / RECORD_FILE

    def log(self, levels: Sequence[Mapping[str, Any]]) -> None:
        """Send each tracker the levels it has not logged yet (on resume, the first call sends none)."""
        changed = False
        for name in self.opts.to:
            if name not in self.off:
                try:
                    changed |= self._log(name, levels)
                except Exception as e:
                    self._fail(name, e)
        if changed:
            try:
                write_json(self._record_path, self.record)
            except Exception as e:
                self._fail("tracking", e)

    def _log(self, name: str, levels: Sequence[Mapping[str, Any]]) -> bool:
        cls = TRACKERS[name]
        where = cls.where(self.job, self.opts)
        entry = self.record.get(name)
        if not entry or entry.get("where") != where:  # never logged, or to somewhere else
            entry = None
        done = set(entry["levels"]) if entry else set()
        new = [m for m in levels if int(m["level"]) not in done]
        if not new:
            return False
        if name not in self.open:
            tracker = self.open[name] = cls(self.job, self.opts, entry)
            if not tracker.resumed:  # the run it had is gone: this one gets every level
                done, new = set(), list(levels)
            self.record[name] = entry = {"where": where, **tracker.state, "levels": sorted(done)}
        self.open[name].log(new)
        entry["levels"] = sorted(set(entry["levels"]) | {int(m["level"]) for m in new})
        return True

    def close(self) -> None:
        """End each opened tracker run as the job's state says it ended (running: another process has it)."""
        if not self.open:
            return
        try:
            status = self.sweep.read_state(self.job.job_id).get("status")
        except Exception:
            status = None
        for name, tracker in self.open.items():
            try:
                tracker.close(None if status == "running" else status)
            except Exception as e:
                if name not in self.off:  # one that failed before has said so already
                    self._fail(name, e)
        self.open.clear()

    def _fail(self, name: str, e: BaseException) -> None:
        self.off.add(name)
        if isinstance(e, ImportError):
            why = f"not importable ({_one_line(e)}); pip install 'scaling-sweep[{name}]'"
        else:
            why = f"failed ({type(e).__name__}: {_one_line(e)})"
        self._warn(name, f"{why}; the job goes on without it")

    def _warn(self, name: str, message: str) -> None:
        line = f"tracking: {name} {message}"
        try:
            log = self.sweep.job_dir(self.job.job_id) / "log.txt"
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "a") as f:
                f.write(f"{dt.datetime.now().isoformat(timespec='seconds')} warning: {line}\n")
        except OSError:
            pass
        if name not in _warned:
            _warned.add(name)
            print(f"warning: job {self.job.job_id}: {line}", file=sys.stderr, flush=True)


# -- helpers -------------------------------------------------------------------------------


def _metrics(level: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(level[k]) for k in METRICS if level.get(k) is not None}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _describe(job: Job) -> str:
    axes = "\n".join(f"- {k} = {v}" for k, v in job.axes.items())
    return (
        f"job `{job.job_id}` of sweep `{job.sweep}`\n\n{axes}\n\n    {json.dumps(job.config, sort_keys=True)}"
    )


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):  # written atomically, so unreadable only if the disk damaged it
        return {}
    return data if isinstance(data, dict) else {}


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def backfill(sweep: Any, specs: Sequence[Any], sweep_name: str) -> int:
    """Send the rows of finished jobs to the trackers that have not seen them (a tracker added on `resume`).

    Each job's record (tracked.json) says what each tracker has, so this sends only what is missing;
    returns how many jobs got something.
    """
    from scaling_sweep.results import read_rows

    if not settings(sweep.path).to:
        return 0
    sent = 0
    for spec in specs:
        if sweep.read_state(spec.job_id).get("status") != "done":
            continue
        try:
            levels = read_rows(sweep.rows_path(spec.job_id)).to_pylist()
        except Exception:
            continue  # a damaged rows file: status reports it; resume retrains the job
        mirror = Mirror(sweep, spec, sweep_name)
        before = json.dumps(mirror.record, sort_keys=True)
        mirror.log(levels)
        mirror.close()
        sent += json.dumps(mirror.record, sort_keys=True) != before
    return sent
