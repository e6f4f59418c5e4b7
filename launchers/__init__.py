"""Launchers: move JobSpecs to devices (local worker pool, SLURM via submitit) behind one protocol."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from launchers.base import Launcher, LaunchResult
from scaling_sweep.errors import ConfigError


def _local(cfg: Mapping[str, Any]) -> Launcher:
    from launchers.local import LocalLauncher

    return LocalLauncher.from_config(cfg)


def _slurm(cfg: Mapping[str, Any]) -> Launcher:
    from launchers.slurm import SlurmLauncher

    return SlurmLauncher.from_config(cfg)


LAUNCHERS: dict[str, Callable[[Mapping[str, Any]], Launcher]] = {"local": _local, "slurm": _slurm}


def make_launcher(cfg: Mapping[str, Any]) -> Launcher:
    """Build the launcher named by cfg["name"]; an unknown name lists the known ones."""
    name = cfg.get("name")
    if name not in LAUNCHERS:
        raise ConfigError(f"launcher={name!r} is unknown; known launchers: {', '.join(LAUNCHERS)}")
    return LAUNCHERS[name](cfg)


__all__ = ["Launcher", "LaunchResult", "LAUNCHERS", "make_launcher"]
