"""The live progress bar of a blocking launch (rich): done / running / failed / ETA, one line per failure.

The ETA comes from the jobs' estimated seconds (scaling_sweep.estimate) when the launcher has them:
the jobs still queued and the rest of the running ones, handed to the workers in launch order, scaled
by how long this launch's finished jobs took against their estimates. Without estimates it
extrapolates from the finished jobs.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from scaling_sweep.estimate import wall_clock

PLAIN_EVERY_S = 5.0
# The scale of measured over estimated seconds stays within this factor of 1: one job that waited
# on a loaded machine must not multiply the whole ETA.
SCALE_LIMIT = 4.0


class SweepProgress:
    """A rich progress bar over the jobs of one launch; prints plain lines when stdout is not a terminal."""

    def __init__(
        self,
        total: int,
        enabled: bool = True,
        estimates: Mapping[str, float] | None = None,
        workers: int = 1,
        order: Sequence[str] = (),
    ) -> None:
        self.total = total
        self.counts: Counter = Counter()
        self.running = 0
        self.estimates = dict(estimates or {})  # job_id -> expected seconds
        self.workers = max(1, workers)
        self.queued = list(order)  # job ids not handed out yet, in launch order
        self.started: dict[str, float] = {}  # running job -> monotonic start
        self.finished: list[tuple[float, float]] = []  # (estimated, measured) seconds of jobs done here
        # (when, value) of the last ETA: the bar redraws 10 times a second, the ETA changes with jobs.
        self._eta: tuple[float, float | None] | None = None
        self.console = Console(stderr=False)
        self.enabled = enabled
        self.live = enabled and self.console.is_terminal
        self._progress = Progress(
            TextColumn("[bold]jobs"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            _EtaColumn(self),
            console=self.console,
            disable=not self.live,
        )
        self._task: Any = None
        self._t0 = time.monotonic()
        self._last_line = float("-inf")

    def __enter__(self) -> SweepProgress:
        self._progress.__enter__()
        self._task = self._progress.add_task("jobs", total=self.total, detail=self._detail())
        return self

    def __exit__(self, *exc: Any) -> None:
        self._progress.__exit__(*exc)

    def _detail(self) -> str:
        done = self.counts["done"] + self.counts["skipped"]
        parts = [f"done {done}", f"running {self.running}", f"failed {self.counts['failed']}"]
        if self.counts["interrupted"]:
            parts.append(f"interrupted {self.counts['interrupted']}")
        if self.counts["busy"]:
            parts.append(f"held elsewhere {self.counts['busy']}")
        return " · ".join(parts)

    def update(self, running: int) -> None:
        self.running = running
        self._progress.update(self._task, detail=self._detail())

    def job_started(self, job_id: str) -> None:
        if job_id in self.queued:
            self.queued.remove(job_id)
        self.started[job_id] = time.monotonic()
        self._eta = None

    def eta(self) -> float | None:
        """Seconds until the launch ends; None before anything says."""
        now = time.monotonic()
        if self._eta is not None and now - self._eta[0] < 1.0:
            cached = self._eta[1]
            return None if cached is None else max(0.0, cached - (now - self._eta[0]))
        self._eta = (now, self._compute_eta(now))
        return self._eta[1]

    def _compute_eta(self, now: float) -> float | None:
        if not self.estimates:
            finished = sum(self.counts[k] for k in ("done", "skipped", "failed", "busy"))
            return (now - self._t0) / finished * (self.total - finished) if finished else None
        scale = 1.0
        if self.finished:
            measured = sum(m for _, m in self.finished) / max(1e-9, sum(e for e, _ in self.finished))
            scale = min(SCALE_LIMIT, max(1.0 / SCALE_LIMIT, measured))
        # A job without an estimate (its data's size is known once loaded) counts as an average one.
        typical = sum(self.estimates.values()) / len(self.estimates)

        def expected(job_id: str) -> float:
            return self.estimates.get(job_id, typical) * scale

        busy = [max(0.0, expected(j) - (now - t0)) for j, t0 in self.started.items()]
        return wall_clock([expected(j) for j in self.queued], self.workers, busy)

    def job_ended(self, job_id: str, outcome: str, error: str, job_dir: Path, running: int) -> None:
        self.counts[outcome] += 1
        self.running = running
        t0 = self.started.pop(job_id, None)
        self._eta = None
        if job_id in self.queued:  # ended without being handed out (a worker that died twice)
            self.queued.remove(job_id)
        if t0 is not None and outcome == "done" and job_id in self.estimates:
            self.finished.append((self.estimates[job_id], time.monotonic() - t0))
        finished = sum(self.counts[k] for k in ("done", "skipped", "failed", "busy"))
        self._progress.update(self._task, completed=finished, detail=self._detail())
        if outcome == "failed":
            self.note(f"[red]job {job_id} failed[/red]: {error} (see {job_dir / 'error.txt'})")
        elif not self.live and self.enabled:
            # Logs (CI, nohup, SLURM) get a plain line now and then, not one per job.
            now = time.monotonic()
            if now - self._last_line >= PLAIN_EVERY_S or finished == self.total:
                self._last_line = now
                elapsed = now - self._t0
                eta = self.eta()
                print(
                    f"[{finished}/{self.total}] {self._detail()} · {elapsed:.0f}s elapsed, "
                    f"ETA {'?' if eta is None else f'{eta:.0f}s'}",
                    file=sys.stdout,
                    flush=True,
                )

    def note(self, message: str) -> None:
        # Always: a failure or a stop is what a log must show; `enabled` only turns off the bar and its lines.
        self.console.print(message, soft_wrap=True)


class _EtaColumn(ProgressColumn):
    """SweepProgress.eta() as h:mm:ss, recomputed at every refresh (it counts down between job ends)."""

    def __init__(self, sweep: SweepProgress) -> None:
        super().__init__()
        self.sweep = sweep

    def render(self, task: Any) -> Text:
        eta = self.sweep.eta()
        if eta is None:
            return Text("-:--:--", style="progress.remaining")
        s = int(round(eta))
        return Text(f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}", style="progress.remaining")
