"""Checkpoint files of one job: atomic writes, the previous one kept, fallback when the latest is unreadable."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from scaling_sweep.atomic import atomic_open

LATEST = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
FORMAT = 1  # bump when the state's layout changes incompatibly


def save(ckpt_dir: Path, state: dict[str, Any]) -> None:
    """Write `state` as the latest checkpoint; the one it replaces becomes the previous one."""
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    latest = ckpt_dir / LATEST
    if latest.exists():
        # A crash right after this rename leaves only PREVIOUS, which `load` falls back to.
        os.replace(latest, ckpt_dir / PREVIOUS)
    with atomic_open(latest, "wb") as f:
        torch.save({"format": FORMAT, **state}, f)


def _read(path: Path) -> dict[str, Any]:
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
