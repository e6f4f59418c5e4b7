"""ImageNet as a streamed ImageFolder: seeded per-example augmentation, exact restarts, a clear missing-root error."""

import numpy as np
import pytest
import torch

from scaling_sweep.errors import ConfigError
from scaling_sweep.schema import DataOptions
from scaling_sweep.train.data import load_dataset
from scaling_sweep.train.imp import run_imp


@pytest.fixture
def imagenet_root(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("val", 2)):
        for cls in ("n01", "n02"):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (40 + 8 * i, 50, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return tmp_path


def test_streamed_epochs_are_reproducible_and_restart_at_any_batch(imagenet_root):
    opts = DataOptions(name="imagenet", root=str(imagenet_root), augment=True, num_workers=0, fraction=0.5)
    data = load_dataset(opts, "cpu")
    assert (data.n_train, data.num_classes, data.input_shape) == (6, 2, (3, 224, 224))
    first = list(data.train_batches(epoch_seed=3, batch_size=2))
    assert [tuple(x.shape) for x, _ in first] == [(2, 3, 224, 224)] * 3
    again = list(data.train_batches(epoch_seed=3, batch_size=2, skip=1))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first[1:], again))
    other = list(data.train_batches(epoch_seed=4, batch_size=2))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, other))
    test = list(data.eval_batches("test", batch_size=3))
    assert sum(len(y) for _, y in test) == 4 and test[0][0].dtype == torch.float32


def test_missing_imagenet_split_names_the_expected_folder(tmp_path):
    with pytest.raises(ConfigError, match=str(tmp_path / "train")):
        load_dataset(DataOptions(name="imagenet", root=str(tmp_path)), "cpu")


def test_imp_job_runs_on_a_streamed_imagefolder(imagenet_root, tmp_path):
    config = {
        "model": {"name": "cifar_resnet", "depth": 8, "width": 0.0625},
        "data": {"name": "imagenet", "root": str(imagenet_root), "num_workers": 0},
        "train": {"steps": 2, "batch_size": 4, "eval_batch_size": 8},
        "prune": {"levels": 1},
        "seed": 0,
    }
    levels = run_imp(config, "cpu", tmp_path / "ckpt", emit=lambda rows: None)
    assert [r["n_train"] for r in levels] == [12, 12] and levels[1]["density"] < 1
