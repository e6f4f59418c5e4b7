"""`run_job`: the one entry point every launcher calls; idempotent, leased, resumable, never raises for a failed training."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from scaling_sweep import store, targets, tracking
from scaling_sweep.atomic import copy_tree, write_text
from scaling_sweep.results import SCHEMA_VERSION, write_rows
from scaling_sweep.schema import label
from scaling_sweep.spec import JobSpec
from scaling_sweep.sweep import (
    DONE,
    FAILED,
    HOST,
    INTERRUPTED,
    RUNNING,
    Lease,
    LeaseLost,
    SweepDir,
    spec_levels,
)

TrainFn = Callable[..., list]

OUTCOMES = ("done", "skipped", "busy", "failed", "interrupted")


def _default_train_fn() -> TrainFn:
    from scaling_sweep.train.imp import run_imp

    return run_imp


def _is_interrupt(e: BaseException) -> bool:
    from scaling_sweep.train.imp import Interrupted

    return isinstance(e, Interrupted)


def code_version() -> str:
    """Package version, plus `git describe` when running from a checkout (scaling_sweep.provenance)."""
    from scaling_sweep.provenance import code_version as described

    return described()


def _torch_version() -> str:
    import sys

    torch = sys.modules.get("torch")
    return getattr(torch, "__version__", "") if torch else ""


def _number(value: Any, typ: type) -> Any:
    return typ(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def finished_times(rows_path: Path) -> dict[int, dt.datetime]:
    """level -> finished_at of a rows file (empty when there is none or it is unreadable)."""
    from scaling_sweep.results import read_rows

    try:
        return {int(r["level"]): r["finished_at"] for r in read_rows(rows_path).to_pylist()}
    except Exception:
        return {}


def continue_from(sweep: SweepDir, job_id: str) -> str | None:
    """For a job that deepens a trajectory (jobs/<id>/origin.json, written by `run`/`resume`) and has no
    checkpoint yet: copy the checkpoint of the deepest shallower job that has one; returns its id."""
    origin = sweep.read_origin(job_id)
    if not origin or (sweep.ckpt_dir(job_id) / "checkpoint.pt").exists():
        return None
    for old in origin:
        if (sweep.ckpt_dir(old) / "checkpoint.pt").is_file():
            copy_tree(sweep.ckpt_dir(old), sweep.ckpt_dir(job_id))
            return old
    return None


def make_rows(
    sweep_name: str,
    spec: JobSpec,
    levels: Sequence[Mapping[str, Any]],
    stamps: Mapping[int, dt.datetime] | None = None,
) -> list[dict[str, Any]]:
    """Trainer level metrics + the job's identity, axes and provenance = rows of the results table."""
    version, torch_version = code_version(), _torch_version()
    now = dt.datetime.now(dt.timezone.utc)
    rows = []
    for m in levels:
        rows.append(
            {
                "sweep": sweep_name,
                "job_id": spec.job_id,
                "level": int(m["level"]),
                "seed": int(spec.seed),
                "model": label(spec.model),
                "width": _number(spec.model.get("width"), float),  # a user model may have neither
                "depth": _number(spec.model.get("depth"), int),
                "dataset": label(spec.data),
                "data_fraction": float(spec.data["fraction"]),
                "n_train": int(m["n_train"]),
                "density": float(m["density"]),
                "prune_method": spec.prune["method"],
                "rewind": spec.prune["rewind"],
                "params_total": int(m["params_total"]),
                "params_prunable": int(m["params_prunable"]),
                "params_nonzero": int(m["params_nonzero"]),
                "test_error": float(m["test_error"]),
                "test_loss": float(m["test_loss"]),
                "train_error": float(m["train_error"]),
                "train_loss": float(m["train_loss"]),
                "epochs": float(m["epochs"]),
                "steps": int(m["steps"]),
                "budget_unit": m["budget_unit"],
                "wall_s": float(m["wall_s"]),
                "device": str(m.get("device", "")),
                "host": HOST,
                "finished_at": (stamps or {}).get(int(m["level"])) or m.get("finished_at") or now,
                "config_json": spec.canonical_json,
                "code_version": version,
                "torch_version": torch_version,
                "schema_version": SCHEMA_VERSION,
            }
        )
    return rows


def run_job(
    spec: JobSpec,
    sweep_dir: str | os.PathLike,
    device: str = "cpu",
    *,
    stop: Callable[[], bool] | None = None,
    train_fn: TrainFn | None = None,
    sweep_name: str | None = None,
) -> str:
    """Train one job to completion (or until `stop`), writing its rows after every level.

    Returns done | skipped | busy | failed | interrupted; a training failure is recorded in
    jobs/<id>/error.txt and state.json, never raised. "busy" also when the lease was lost mid-run
    (this process was suspended past the lease timeout and another one took the job over): then
    this process stops training at its next step and writes nothing more.
    """
    sweep = SweepDir(sweep_dir)
    name = sweep_name or sweep.path.name
    with sweep.lease(spec.job_id) as lease:
        held = _Held.take(spec, sweep, name, device, lease)
        if isinstance(held, str):
            return held
        try:
            held.prepare()

            def polled() -> bool:
                lease.check()  # raises LeaseLost: the trainer stops without saving anything
                return bool(stop and stop())

            # The trainer fences its checkpoint writes too; other train functions only get the step poll.
            fn, extra = (train_fn, {}) if train_fn else (_default_train_fn(), {"fence": lease.fence})
            try:
                held.check_code()
                result = fn(
                    spec.trainer_config(),
                    device,
                    sweep.ckpt_dir(spec.job_id),
                    held.emit,
                    polled,
                    held.log,
                    **extra,
                )
            except Exception as e:
                result = e
            except BaseException:
                held.abandoned()
                raise
            return held.finish(result)
        except LeaseLost:
            return "busy"
        finally:
            held.close()


def run_pack(
    specs: Sequence[JobSpec],
    sweep_dir: str | os.PathLike,
    device: str = "cpu",
    *,
    stop: Callable[[], bool] | None = None,
    sweep_name: str | None = None,
    report: Callable[[str, str], None] = lambda job_id, outcome: None,
) -> dict[str, str]:
    """Train jobs of one architecture and recipe together (scaling_sweep.train.packed), each leased,
    checkpointed and recorded exactly as `run_job` does it alone; job id -> outcome.

    `report(job_id, outcome)` is called as each job ends, the ones that need no training first.
    """
    from scaling_sweep.train import packed

    sweep = SweepDir(sweep_dir)
    name = sweep_name or sweep.path.name
    outcomes: dict[str, str] = {}

    def ended(job_id: str, outcome: str) -> None:
        outcomes[job_id] = outcome
        report(job_id, outcome)

    with contextlib.ExitStack() as leases:
        held: list[_Held] = []
        for spec in specs:
            taken = _Held.take(spec, sweep, name, device, leases.enter_context(sweep.lease(spec.job_id)))
            if isinstance(taken, str):
                ended(spec.job_id, taken)
                continue
            leases.callback(taken.close)
            try:
                taken.prepare()  # (a full disk here stops the pack, as it stops run_job)
                try:
                    taken.check_code()
                except Exception as e:
                    ended(spec.job_id, taken.finish(e))
                    continue
            except LeaseLost:
                ended(spec.job_id, "busy")
                continue
            held.append(taken)
        if not held:
            return outcomes
        for h in held:
            h.lease.fence()
            sweep.write_state(h.spec.job_id, pack=len(held))
        members = [
            packed.Member(
                h.spec.trainer_config(), sweep.ckpt_dir(h.spec.job_id), h.emit, h.log, h.lease.fence
            )
            for h in held
        ]
        try:
            results = packed.run_pack(members, device, lambda: bool(stop and stop()))
        except BaseException:
            for h in held:
                h.abandoned()
            raise
        for h, result in zip(held, results):
            try:
                outcome = h.finish(result)
            except LeaseLost:
                outcome = "busy"
            ended(h.spec.job_id, outcome)
    return outcomes


class _Held:
    """One job while this process holds its lease: its state, log and rows, every write fenced."""

    def __init__(
        self, spec: JobSpec, sweep: SweepDir, name: str, device: str, total: int, lease: Lease
    ) -> None:
        self.spec, self.sweep, self.name, self.device, self.total, self.lease = (
            spec,
            sweep,
            name,
            device,
            total,
            lease,
        )
        self.mirror = tracking.Mirror(sweep, spec, name)  # the sweep's trackers, if any; it never fails a job
        self.log_path = sweep.job_dir(spec.job_id) / "log.txt"
        self.stamps: dict[int, dt.datetime] = {}

    @classmethod
    def take(cls, spec: JobSpec, sweep: SweepDir, name: str, device: str, lease: Lease | None) -> _Held | str:
        """The held job, or why it needs no training here: busy (another process holds it) | skipped (done)."""
        total = spec_levels(spec)
        if lease is None:
            return "busy"
        if sweep.is_done(spec.job_id, total):
            return "skipped"
        sweep.remove_stale_temps(spec.job_id)  # a killed earlier owner's half-written files
        return cls(spec, sweep, name, device, total, lease)

    def prepare(self) -> None:
        """Mark the job running; set up what a deeper trajectory continues from."""
        spec, sweep, job_id = self.spec, self.sweep, self.spec.job_id
        self.lease.fence()
        sweep.write_spec(spec)
        state = sweep.read_state(job_id)
        sweep.write_state(
            job_id,
            status=RUNNING,
            attempts=int(state.get("attempts", 0)) + 1,
            levels_total=self.total,
            stopped=None,  # set again below if this run ends the trajectory early
            host=HOST,
            pid=os.getpid(),
            device=self.device,
            pack=1,  # jobs sharing its steps; run_pack sets it (estimates take rates from lone jobs only)
        )
        continued = continue_from(
            sweep, job_id
        )  # a deeper trajectory starts from the shallower job's last level
        self.stamps = finished_times(sweep.rows_path(job_id)) or (
            finished_times(sweep.rows_path(continued)) if continued else {}
        )

    def check_code(self) -> None:
        """User components: importable here (a SLURM node, another directory), and unedited."""
        if self.spec.code:
            targets.activate(self.sweep.read_import_paths())
            targets.verify(self.spec.trainer_config(), self.spec.code)

    def emit(self, levels: Sequence[Mapping[str, Any]]) -> None:
        self.lease.fence()
        for m in levels:  # a level keeps the time it first finished, through resumes and deepening
            self.stamps.setdefault(int(m["level"]), dt.datetime.now(dt.timezone.utc))
        job_id = self.spec.job_id
        write_rows(self.sweep.rows_path(job_id), make_rows(self.name, self.spec, levels, self.stamps))
        self.sweep.write_state(job_id, levels_done=len(levels))
        self.mirror.log(levels)  # the trackers' mirrors, after the rows: the Parquet is the truth

    def log(self, line: str) -> None:
        with open(self.log_path, "a") as f:
            f.write(f"{dt.datetime.now().isoformat(timespec='seconds')} {line}\n")

    def abandoned(self) -> None:
        """Ctrl-C or exit mid-training: recorded only while the job is still ours."""
        if self.lease.renew():
            self.sweep.write_state(self.spec.job_id, status=INTERRUPTED)

    def finish(self, result: list | BaseException) -> str:
        """Record how the training ended: done | interrupted | failed (raises LeaseLost when it is no longer ours)."""
        sweep, job_id, device = self.sweep, self.spec.job_id, self.device
        if isinstance(result, LeaseLost):
            self.log("lease lost: another process took this job over; stopped without writing")
            raise result
        self.lease.fence()
        if isinstance(result, BaseException):
            if _is_interrupt(result):
                sweep.write_state(job_id, status=INTERRUPTED)
                return "interrupted"
            tb = "".join(traceback.format_exception(result))
            write_text(
                sweep.job_dir(job_id) / "error.txt",
                f"host {HOST} pid {os.getpid()} device {device} python {platform.python_version()}\n{tb}",
            )
            last = tb.strip().splitlines()[-1] if tb.strip() else repr(result)
            sweep.write_state(job_id, status=FAILED, error=last)
            self.log(f"failed: {last}")
            return "failed"
        stopped = getattr(result, "stopped", None)
        problem = level_count_problem(len(result), self.total, stopped)
        if problem:
            sweep.write_state(job_id, status=FAILED, error=problem)
            self.log(f"failed: {problem}")
            return "failed"
        # An early stop is a finished trajectory: its levels are all the rows it will ever have.
        sweep.write_state(
            job_id, status=DONE, levels_done=len(result), levels_total=len(result), stopped=stopped, error=""
        )
        self.log(
            f"done: {len(result)} levels"
            + (f" of {self.total} planned ({stopped['detail']})" if stopped else "")
        )
        shared = store.of(sweep)
        if shared is not None and shared.publish(sweep, job_id):
            self.log(f"published to the store {shared.path}")
        return "done"

    def close(self) -> None:
        self.mirror.close()


def level_count_problem(n: int, planned: int, stopped: Mapping[str, Any] | None) -> str:
    """Why `n` returned levels do not make a finished job ("" when they do).

    A trajectory has all its planned levels, or it stopped early after level `stopped["level"]`
    and has exactly the levels 0..that one.
    """
    if stopped is None:
        return "" if n == planned else f"trainer returned {n} levels, expected {planned}"
    last = int(stopped.get("level", -1))
    if n == last + 1 and 0 < n < planned:
        return ""
    return f"trainer stopped after level {last} but returned {n} levels (planned {planned})"
