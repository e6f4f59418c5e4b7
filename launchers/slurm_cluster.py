"""The SLURM commands the launcher needs (scontrol, sinfo, squeue, scancel), each one call, errors as ConfigError."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from scaling_sweep.errors import ConfigError

TIMEOUT_S = 60  # a busy slurmctld can take seconds to answer; never hang a login shell forever

# States after which a task holds no resources and will not run again by itself.
TERMINAL = frozenset(
    {
        "COMPLETED",
        "CANCELLED",
        "FAILED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "OUT_OF_MEMORY",
        "REVOKED",
    }
)


def require(command: str) -> str:
    """Path of a SLURM command, or a ConfigError saying what to do."""
    path = shutil.which(command)
    if path is None:
        raise ConfigError(
            f"launcher=slurm: `{command}` is not on PATH; run from a SLURM login node "
            f"(or load the cluster's slurm module), or use launcher=local"
        )
    return path


def run(args: Sequence[str]) -> subprocess.CompletedProcess:
    """Run one SLURM command; a missing command or a hung controller becomes a ConfigError."""
    require(args[0])
    try:
        return subprocess.run(list(args), capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        raise ConfigError(f"`{' '.join(args)}` did not answer in {TIMEOUT_S}s; is slurmctld up?") from e


def one_line(text: str) -> str:
    """SLURM's (often multi-line) message as one line."""
    return " | ".join(line.strip() for line in text.strip().splitlines() if line.strip())


def max_array_size() -> int:
    """The cluster's MaxArraySize: an array holds at most this many tasks (indices 0..N-1)."""
    p = run(["scontrol", "show", "config"])
    if p.returncode != 0:
        raise ConfigError(f"`scontrol show config` failed: {one_line(p.stderr)}; is slurmctld up?")
    m = re.search(r"^MaxArraySize\s*=\s*(\d+)", p.stdout, re.MULTILINE)
    return int(m.group(1)) if m else 1001  # SLURM's documented default


def partitions() -> list[str]:
    """Partitions this user can see, hidden ones included."""
    p = run(["sinfo", "--noheader", "--all", "--format=%R"])
    if p.returncode != 0:
        raise ConfigError(f"`sinfo` failed: {one_line(p.stderr)}; is slurmctld up?")
    return sorted({line.strip() for line in p.stdout.splitlines() if line.strip()})


def check_partition(partition: str | None) -> None:
    """ConfigError naming the known partitions when `partition` is not one of them."""
    if partition is None:
        return
    known = partitions()
    if partition not in known:
        raise ConfigError(
            f"launcher.partition={partition!r} is not a partition of this cluster; "
            f"known: {', '.join(known) or 'none'} (from sinfo)"
        )


@dataclass(frozen=True)
class QueuedTask:
    """One line of `squeue --array`: a task of an array (index None for a plain job)."""

    array_id: str
    index: int | None
    name: str
    state: str


def queue(array_ids: Iterable[str]) -> list[QueuedTask]:
    """What slurmctld still knows of these arrays, one `squeue` call for all of them."""
    ids = sorted(set(array_ids), key=int)
    if not ids:
        return []
    p = run(["squeue", "--noheader", "--array", "--format=%F|%K|%j|%T", f"--jobs={','.join(ids)}"])
    if p.returncode != 0:
        # squeue fails on a single id that slurmctld has already forgotten; that means "nothing".
        if "Invalid job id" in p.stderr:
            return []
        raise ConfigError(f"`squeue` failed: {one_line(p.stderr)}")
    out = []
    for line in p.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 4:
            continue
        array_id, index, name, state = parts
        out.append(QueuedTask(array_id, int(index) if index.isdigit() else None, name, state))
    return out


def scancel(job_ids: Iterable[str]) -> None:
    """Cancel these jobs or arrays (one call); SLURM's message on failure."""
    ids = sorted(set(job_ids))
    if not ids:
        return
    p = run(["scancel", *ids])
    if p.returncode != 0:
        raise ConfigError(f"`scancel {' '.join(ids)}` failed: {one_line(p.stderr)}")
