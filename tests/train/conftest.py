"""Shared fixtures of the trainer tests: a session MNIST-1D cache, tiny job configs, a real-format CIFAR folder, the docs' examples and user modules on sys.path."""

from __future__ import annotations

import copy
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from scaling_sweep.schema import DataOptions
from scaling_sweep.train.data import mnist1d
from scaling_sweep.train.data.cifar import write_folder

# A job small enough for tests: 1000 MNIST-1D examples, 8 steps per epoch, a 50-unit MLP.
TINY = {
    "model": {"name": "mlp", "width": 0.5, "depth": 1},
    "data": {"name": "mnist1d", "fraction": 0.25},
    "train": {"epochs": 2, "batch_size": 128, "lr": 0.1, "schedule": "cosine", "checkpoint_every": 1},
    "prune": {"levels": 2},
    "seed": 0,
}


@pytest.fixture(scope="session")
def mnist1d_cache(tmp_path_factory) -> str:
    """A cache directory holding MNIST-1D, generated once per test session."""
    path = tmp_path_factory.mktemp("mnist1d-cache")
    mnist1d.arrays(DataOptions(cache_dir=str(path)))
    return str(path)


@pytest.fixture
def job(mnist1d_cache):
    """Make a tiny trainer config; keyword arguments update its sections, e.g. job(prune={"levels": 1})."""

    def make(**sections) -> dict:
        config = copy.deepcopy(TINY)
        config["data"]["cache_dir"] = mnist1d_cache
        for name, values in sections.items():
            if isinstance(values, dict):
                config[name].update(values)
            else:
                config[name] = values
        return config

    return make


@pytest.fixture
def cifar_root(tmp_path) -> Path:
    """A CIFAR-10 folder in the published python-pickle layout: 200 train, 50 test random images."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (250, 3, 32, 32), dtype=np.uint8)
    y = rng.integers(0, 10, 250)
    write_folder(tmp_path, "cifar10", x[:200], y[:200], x[200:], y[200:])
    return tmp_path


EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


@pytest.fixture
def examples(monkeypatch):
    """docs/examples/vit and docs/examples/charlm on sys.path (tinyvit, charlm importable); restored after."""
    for name in ("vit", "charlm"):
        monkeypatch.syspath_prepend(str(EXAMPLES / name))
    yield EXAMPLES
    for module in ("tinyvit", "charlm"):
        sys.modules.pop(module, None)


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """Write a module of user components: user_module("name", source) -> its name, importable until the test ends."""
    written: list[str] = []

    def write(name: str, source: str) -> str:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        written.append(name)
        return name

    monkeypatch.syspath_prepend(str(tmp_path))
    yield write
    for name in written:
        sys.modules.pop(name, None)
