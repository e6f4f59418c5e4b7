"""A trainer that does no training: it emits one row per level at once, to measure per-job overhead."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def train(
    config: dict, device: str, ckpt_dir: Path, emit: Callable, stop: Callable, log: Callable
) -> list[dict]:
    levels = []
    for level in range(int(config["prune"]["levels"]) + 1):
        levels.append(
            dict(
                level=level,
                density=0.8**level,
                n_train=1,
                params_total=1,
                params_prunable=1,
                params_nonzero=1,
                test_error=0.5,
                test_loss=1.0,
                train_error=0.5,
                train_loss=1.0,
                epochs=0.0,
                steps=0,
                budget_unit="epochs",
                wall_s=0.0,
                device=device,
            )
        )
        emit(levels)
    return levels
