"""What runs inside one SLURM array task: its pack (`run_pack`) or `run_job` for each of its jobs; checkpoint and requeue on SLURM's signals.

submitit's own handler for its timeout/preemption signal (USR2 by default) checkpoints the callable
and requeues from inside the signal handler, i.e. in the middle of an optimizer step, where the
trainer cannot save its state. So the task swaps in handlers that only raise a flag; the trainer
polls it through `stop` after every step, saves a checkpoint and returns "interrupted"; then the
task hands over to submitit's handler, which pickles this task, runs `scontrol requeue` and exits.
The requeued task runs the same jobs again: finished ones are skipped (done-markers), the
interrupted ones resume from their checkpoints (a pack's jobs each from its own).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Sequence
from typing import Any

from submitit.helpers import Checkpointable
from submitit.slurm.slurm import SlurmJobEnvironment

from scaling_sweep.spec import JobSpec
from scaling_sweep.sweep import HEARTBEAT_S, STALE_S

# After a SIGTERM alone, how long to wait for submitit's signal: some clusters announce a
# preemption with SIGTERM followed by USR2, and only USR2 asks for a requeue.
TERM_GRACE_S = 5.0
# A lease left by a task killed on another node looks live until its heartbeat is stale.
BUSY_WAIT_S = STALE_S + 2 * HEARTBEAT_S
FINAL = ("done", "skipped", "failed")


class JobsFailed(RuntimeError):
    """Some of a task's trainings failed: raised so the task exits non-zero and sacct says FAILED."""


class StopSignals:
    """SLURM's signals as flags: `requested()` is the trainer's `stop`; `requeue()` hands over to submitit."""

    def __init__(self) -> None:
        self.requeue_asked = False  # submitit's signal: time limit near, or preemption
        self.terminate_asked = False  # SIGTERM: scancel, preemption, or the time limit itself
        self.signum = getattr(signal, "SIG" + SlurmJobEnvironment.USR_SIG)
        self._submitit_handler: Any = None

    def install(self) -> None:
        self._submitit_handler = signal.getsignal(self.signum)
        signal.signal(self.signum, self._on_requeue_signal)
        signal.signal(signal.SIGTERM, self._on_terminate)

    def _on_requeue_signal(self, signum: int, frame: Any) -> None:
        self.requeue_asked = True
        print(f"caught {signal.Signals(signum).name}: checkpointing, then requeueing", flush=True)

    def _on_terminate(self, signum: int, frame: Any) -> None:
        self.terminate_asked = True
        print("caught SIGTERM: checkpointing, then exiting", flush=True)

    def ignore(self) -> None:
        signal.signal(self.signum, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def requested(self) -> bool:
        return self.requeue_asked or self.terminate_asked

    def wait_for_requeue_signal(self, seconds: float) -> bool:
        end = time.monotonic() + seconds
        while not self.requeue_asked and time.monotonic() < end:
            time.sleep(0.1)
        return self.requeue_asked

    def requeue(self) -> None:
        """submitit's handler: pickle the task (`checkpoint()`), `scontrol requeue`, exit. Returns only outside submitit."""
        if callable(self._submitit_handler):
            self._submitit_handler(self.signum, None)


class SweepTask(Checkpointable):
    """One array task: its jobs train as one pack, or one after another, in this process; requeued as a whole."""

    def __init__(
        self,
        sweep_dir: str,
        sweep_name: str,
        specs: Sequence[dict[str, Any]],
        device: str = "cpu",
        threads: int | None = None,
        busy_wait_s: float = BUSY_WAIT_S,
        pack: bool = False,
    ) -> None:
        self.sweep_dir = sweep_dir
        self.sweep_name = sweep_name
        self.specs = [dict(s) for s in specs]  # plain data: pickled at submission and at requeue
        self.device = device
        self.threads = threads
        self.busy_wait_s = busy_wait_s
        self.pack = pack

    @property
    def job_ids(self) -> list[str]:
        return [s["job_id"] for s in self.specs]

    def __call__(self) -> dict[str, str]:
        signals = StopSignals()
        signals.install()
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        outcomes = self.run_all(signals.requested)
        unfinished = [j for j in self.job_ids if outcomes.get(j) not in FINAL]
        if not unfinished:
            # Every job is finished: a time-limit or preemption signal from now on finds nothing to save,
            # and must not turn a finished task into a FAILED one while it exits.
            signals.ignore()
        if signals.requested() and unfinished:
            if signals.requeue_asked or signals.wait_for_requeue_signal(TERM_GRACE_S):
                signals.requeue()
            # SIGTERM alone: SLURM requeues a preempted job itself; `resume` picks up the rest.
            return outcomes
        failed = [j for j in self.job_ids if outcomes.get(j) == "failed"]
        if failed:
            # A task that ends 0:0 after a failed training would read COMPLETED in sacct and satisfy
            # `afterok` dependencies; the failure is on disk (jobs/<id>/error.txt), the exit says so too.
            raise JobsFailed(
                f"{len(failed)} of {len(self.job_ids)} jobs failed ({', '.join(failed[:3])}"
                f"{', ...' if len(failed) > 3 else ''}); tracebacks in {self.sweep_dir}/jobs/<id>/error.txt, "
                f"rerun with `scaling-sweep retry {self.sweep_dir}`"
            )
        return outcomes

    def run_all(self, stop: Callable[[], bool]) -> dict[str, str]:
        """The pack, or run_job for each job in turn; jobs another process holds are retried until its lease goes stale."""
        from scaling_sweep.job import run_job, run_pack

        outcomes: dict[str, str] = {}

        def report(job_id: str, outcome: str) -> None:
            outcomes[job_id] = outcome
            print(f"job {job_id}: {outcome}", flush=True)

        todo = [JobSpec.from_dict(s) for s in self.specs]
        deadline = time.monotonic() + self.busy_wait_s
        while todo and not stop():
            if getattr(self, "pack", False) and len(todo) > 1:  # (a task pickled before packs had none)
                run_pack(
                    todo, self.sweep_dir, self.device, stop=stop, sweep_name=self.sweep_name, report=report
                )
            else:
                for spec in todo:
                    if stop():
                        break
                    outcome = run_job(
                        spec, self.sweep_dir, self.device, stop=stop, sweep_name=self.sweep_name
                    )
                    report(spec.job_id, outcome)
            busy = [spec for spec in todo if outcomes.get(spec.job_id) == "busy"]
            todo = busy
            if not todo or time.monotonic() >= deadline:
                break
            _sleep(HEARTBEAT_S, stop)
        return outcomes


def _sleep(seconds: float, stop: Callable[[], bool]) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end and not stop():
        time.sleep(0.2)
