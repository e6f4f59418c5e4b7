"""Checkpoint files of one job: atomic writes, the previous one kept, fallback when the latest is unreadable.

Content is verified too: `.checkpoint.pt.sha256` lists the digests of the checkpoints written last
(newest first), and a file whose digest is not among them counts as unreadable (flipped bytes).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from scaling_sweep.atomic import (
    HashingWriter,
    atomic_open,
    digest_problem,
    read_digests,
    sidecar,
    write_digests,
)

LATEST = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
FORMAT = 1  # bump when the state's layout changes incompatibly
# Three digests, not two: a crash after recording a new one but before its file lands leaves
# the latest missing; the next save then does not rotate, and the previous file's digest must
# still be on the list.
KEEP_DIGESTS = 3


def digests_path(ckpt_dir: Path) -> Path:
    return sidecar(Path(ckpt_dir) / LATEST)


def save(ckpt_dir: Path, state: dict[str, Any]) -> None:
    """Write `state` as the latest checkpoint; the one it replaces becomes the previous one."""
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    latest = ckpt_dir / LATEST
    if latest.exists():
        # A crash right after this rename leaves only PREVIOUS, which `load` falls back to.
        os.replace(latest, ckpt_dir / PREVIOUS)
    digests = digests_path(ckpt_dir)
    with atomic_open(latest, "wb") as f:
        w = HashingWriter(f)
        torch.save({"format": FORMAT, **state}, w)
        # Recorded before the rename below makes the file the latest: a file on disk always verifies.
        known = read_digests(digests) or []
        write_digests(digests, [w.sha256.hexdigest(), *known[: KEEP_DIGESTS - 1]])


def _read(path: Path) -> dict[str, Any]:
    problem = digest_problem(path, digests_path(path.parent))
    if problem:
        raise ValueError(problem)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"not a format-{FORMAT} checkpoint")
    return state


def load(ckpt_dir: Path, log: Callable[[str], None] = lambda s: None) -> dict[str, Any] | None:
    """The newest readable checkpoint in `ckpt_dir`, or None when there is none."""
    ckpt_dir = Path(ckpt_dir)
    for name in (LATEST, PREVIOUS):
        path = ckpt_dir / name
        if not path.exists():
            continue
        try:
            state = _read(path)
        except Exception as err:  # truncated, corrupt, foreign: any reason means "not usable"
            log(
                f"checkpoint {path} is unreadable ({type(err).__name__}: {str(err)[:200]}); trying an older one"
            )
            if name == LATEST:
                # Out of the way, so the next save cannot rotate it over the good previous one.
                os.replace(path, path.with_name(LATEST + ".unreadable"))
            continue
        if name == PREVIOUS:
            log(f"resuming from the previous checkpoint {path}")
        return state
    return None
