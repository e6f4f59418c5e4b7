"""A store of finished jobs shared across sweeps, keyed by job id: what a finished job publishes, and how another sweep reuses it instead of training."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from scaling_sweep.atomic import copy_file, copy_tree, read_json, write_json, write_text
from scaling_sweep.sweep import DONE, SweepDir

# store/<job_id>/: spec.json, state.json, rows.parquet, ckpt/ (the last checkpoint, for a later resume).
# A job id is the sha256 of everything that decides its numbers (and of its user code), so one id
# is one training wherever it ran; rows keep the `sweep` column of the sweep that trained them.


class Store:
    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(os.path.expanduser(str(path)))

    def job(self, job_id: str) -> Path:
        return self.path / job_id

    def has(self, job_id: str) -> bool:
        """Whether the store holds this job finished (published entries are complete: they appear by rename)."""
        try:
            return read_json(self.job(job_id) / "state.json").get("status") == DONE
        except (OSError, ValueError, AttributeError):
            return False

    def publish(self, sweep: SweepDir, job_id: str) -> bool:
        """Add a finished job of `sweep`; False when the store has it already. All or nothing: staged, then renamed."""
        if self.has(job_id):
            return False
        self.path.mkdir(parents=True, exist_ok=True)
        staging = self.path / f".{job_id}.{os.getpid()}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            src = sweep.job_dir(job_id)
            for name in ("spec.json", "state.json"):
                copy_file(src / name, staging / name)
            copy_file(sweep.rows_path(job_id), staging / "rows.parquet")
            if sweep.ckpt_dir(job_id).is_dir():
                copy_tree(sweep.ckpt_dir(job_id), staging / "ckpt")
            os.rename(staging, self.job(job_id))  # fails if another process published it first: fine
            return True
        except OSError:
            return False
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def reuse(self, sweep: SweepDir, job_id: str) -> bool:
        """Copy a finished job into `sweep` (spec, state, checkpoint, rows); False when the store lacks it.

        The rows file is copied last: a job counts as done only once its rows are there, so a copy cut
        short is a pending job again.
        """
        if not self.has(job_id):
            return False
        src, dst = self.job(job_id), sweep.job_dir(job_id)
        dst.mkdir(parents=True, exist_ok=True)
        if (src / "ckpt").is_dir():
            copy_tree(src / "ckpt", sweep.ckpt_dir(job_id))
        write_text(dst / "spec.json", (src / "spec.json").read_text())
        state = read_json(src / "state.json")
        write_json(dst / "state.json", {**state, "reused_from": str(self.job(job_id))})
        sweep.rows_path(job_id).parent.mkdir(parents=True, exist_ok=True)
        copy_file(src / "rows.parquet", sweep.rows_path(job_id))
        return True


def of(sweep: SweepDir) -> Store | None:
    """The store the sweep's last launch named (store.json), if any."""
    path = sweep.read_store()
    return Store(path) if path else None
