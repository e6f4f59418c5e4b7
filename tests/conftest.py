"""Shared fixtures: composing configs, a scratch results root, the repository root."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # Generated datasets are cached once per test session, not in the user's home.
    cache = tmp_path_factory.getbasetemp() / "dataset-cache"
    monkeypatch.setenv("SCALING_SWEEP_CACHE", str(cache))


def composed(*overrides: str) -> dict:
    """The plain config `scaling-sweep run` would compose with these overrides."""
    from scaling_sweep.config import compose

    return OmegaConf.to_container(compose(list(overrides)), resolve=True)


def cli_env(**extra: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["COLUMNS"] = "200"
    env.update(extra)
    return env


CLI = [sys.executable, "-m", "scaling_sweep.cli"]


@pytest.fixture(autouse=True)
def _sigint_handler_restored():
    # The CLI ignores further Ctrl-C once it is exiting on one; a test that drives that path in-process
    # must not leave pytest (and every process it starts later) ignoring SIGINT.
    import signal

    before = signal.getsignal(signal.SIGINT)
    yield
    if signal.getsignal(signal.SIGINT) is not before and before is not None:
        signal.signal(signal.SIGINT, before)
