"""The `Launcher` protocol every backend implements, and what a launch reports back."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from scaling_sweep.spec import JobSpec
from scaling_sweep.sweep import SweepDir


@dataclass
class LaunchResult:
    """Outcome counts of a launch (local: final; slurm: what was submitted)."""

    outcomes: Counter = field(default_factory=Counter)  # done/skipped/busy/failed/interrupted/submitted
    interrupted_by_user: bool = False
    message: str = ""

    @property
    def ok(self) -> bool:
        return not self.outcomes.get("failed") and not self.interrupted_by_user


class Launcher(Protocol):
    """Runs (local) or submits (slurm) the given jobs of a sweep; `run_job` does the rest."""

    name: str
    blocking: bool  # True when launch() returns only once the jobs have ended

    def launch(
        self, sweep: SweepDir, specs: Sequence[JobSpec], *, fail_fast: bool = False
    ) -> LaunchResult: ...
