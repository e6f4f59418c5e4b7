"""The live progress bar of a blocking launch (rich): done / running / failed / ETA, one line per failure."""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

PLAIN_EVERY_S = 5.0


class SweepProgress:
    """A rich progress bar over the jobs of one launch; prints plain lines when stdout is not a terminal."""

    def __init__(self, total: int, enabled: bool = True) -> None:
        self.total = total
        self.counts: Counter = Counter()
        self.running = 0
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
            TimeRemainingColumn(),
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

    def job_ended(self, job_id: str, outcome: str, error: str, job_dir: Path, running: int) -> None:
        self.counts[outcome] += 1
        self.running = running
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
                eta = elapsed / finished * (self.total - finished) if finished else float("nan")
                print(
                    f"[{finished}/{self.total}] {self._detail()} · {elapsed:.0f}s elapsed, ETA {eta:.0f}s",
                    file=sys.stdout,
                    flush=True,
                )

    def note(self, message: str) -> None:
        # Always: a failure or a stop is what a log must show; `enabled` only turns off the bar and its lines.
        self.console.print(message, soft_wrap=True)
