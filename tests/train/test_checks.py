"""The torch-free checks: name lists equal the registries' keys; bad prune options fail at plan time."""

import pytest

from scaling_sweep.train import checks
from scaling_sweep.train.data import DATASETS
from scaling_sweep.train.models import MODELS
from scaling_sweep.train.options import OptionError, PruneOptions


def test_model_names_equal_the_model_registry():
    assert sorted(checks.MODEL_NAMES) == sorted(MODELS)


def test_dataset_names_equal_the_dataset_registry():
    assert sorted(checks.DATASET_NAMES) == sorted(DATASETS)


def test_oneshot_without_density_fails_at_plan_time():
    with pytest.raises(OptionError, match="prune.density"):
        checks.check_prune(PruneOptions(method="oneshot"))
    checks.check_prune(PruneOptions(method="oneshot", density=0.3))
