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


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"stop_at_chance": -1}, r"prune.stop_at_chance=-1: must be an integer >= 0"),
        ({"stop_at_chance": 1.5}, r"prune.stop_at_chance=1.5: must be an integer >= 0"),
        ({"stop_at_chance": True}, r"prune.stop_at_chance=True"),
        ({"chance_margin": 1.0}, r"prune.chance_margin=1.0: must be a number in \[0, 1\)"),
        ({"chance_margin": -0.01}, r"prune.chance_margin=-0.01"),
    ],
)
def test_bad_early_stop_options_fail_at_plan_time(options, match):
    with pytest.raises(OptionError, match=match):
        checks.check_prune(PruneOptions(**options))


def test_early_stop_options_within_range_pass():
    checks.check_prune(PruneOptions(stop_at_chance=0, chance_margin=0.0))
    checks.check_prune(PruneOptions(stop_at_chance=3, chance_margin=0.1))
