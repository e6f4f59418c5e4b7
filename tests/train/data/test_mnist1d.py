"""MNIST-1D: generated locally with the package's standard arguments, cached atomically, whole test set."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from scaling_sweep.schema import DataOptions
from scaling_sweep.train.data import load_dataset, mnist1d


def test_standard_split_and_whole_test_set_at_any_fraction(mnist1d_cache):
    data = load_dataset(DataOptions(fraction=0.25, cache_dir=mnist1d_cache), "cpu")
    assert data.n_train == 1000 and data.train_x.shape == (1000, 1, 40)
    assert data.test_x.shape == (1000, 1, 40) and data.num_classes == 10
    assert data.train_x.dtype == torch.float32


def test_cached_arrays_equal_a_fresh_generation_with_the_standard_arguments(mnist1d_cache):
    from mnist1d.data import get_dataset_args

    args = get_dataset_args(as_dict=True)
    args.pop("url")
    assert args == mnist1d.STANDARD_ARGS
    cached = mnist1d.arrays(DataOptions(cache_dir=mnist1d_cache))
    assert cached["x"].shape == (4000, 40) and cached["y_test"].shape == (1000,)
    assert set(np.unique(cached["y"]).tolist()) == set(range(10))


def test_damaged_cache_file_is_regenerated(mnist1d_cache, tmp_path):
    good = mnist1d.arrays(DataOptions(cache_dir=mnist1d_cache))
    [cached_file] = Path(mnist1d_cache).glob("mnist1d-*.npz")
    damaged = tmp_path / cached_file.name
    damaged.write_bytes(cached_file.read_bytes()[:1000])  # a truncated copy
    again = mnist1d.arrays(DataOptions(cache_dir=str(tmp_path)))
    assert all(np.array_equal(good[k], again[k]) for k in good)
    assert mnist1d._read(damaged) is not None  # rewritten whole


def test_two_processes_generating_at_once_leave_a_valid_cache(tmp_path):
    code = (
        "import sys; from scaling_sweep.train.data import mnist1d; "
        "from scaling_sweep.schema import DataOptions; "
        "a = mnist1d.arrays(DataOptions(cache_dir=sys.argv[1])); print(float(a['x'].sum()))"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    sums = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sums[0] == sums[1]
    files = list(tmp_path.glob("*"))
    assert [f.suffix for f in files] == [".npz"]  # no temporary files left behind
    assert mnist1d._read(files[0]) is not None


def test_cache_location_prefers_option_then_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(mnist1d.CACHE_ENV, str(tmp_path / "env"))
    assert mnist1d.cache_dir(DataOptions(cache_dir=str(tmp_path / "opt"))) == tmp_path / "opt"
    assert mnist1d.cache_dir(DataOptions()) == tmp_path / "env"
    monkeypatch.delenv(mnist1d.CACHE_ENV)
    assert mnist1d.cache_dir(DataOptions()) == Path("~/.cache/scaling-sweep").expanduser()
