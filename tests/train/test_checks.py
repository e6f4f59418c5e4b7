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


@pytest.mark.parametrize("name", sorted(checks.TRAIN_SIZES))
def test_known_train_sizes_and_steps_equal_the_loaded_data(name):
    # The plan-time rewind check counts steps from these sizes; the trainer from the loaded data.
    from scaling_sweep.train.data import load_dataset
    from scaling_sweep.train.options import DataOptions

    for fraction in (1.0, 0.3):
        opts = DataOptions(name=name, fraction=fraction)
        data = load_dataset(opts, "cpu")
        assert checks.train_size(opts) == data.n_train
        assert checks.steps_per_epoch(data.n_train, 128) == data.steps_per_epoch(128)
    assert checks.train_size(DataOptions(name=name, balanced=True)) is None  # needs the class counts


def test_rewind_is_checked_against_the_budget_in_its_own_unit():
    from scaling_sweep.train.options import DataOptions, TrainOptions

    mnist = DataOptions(name="mnist1d", fraction=0.25)  # 1000 examples: 8 steps of 128
    checks.check_rewind(mnist, TrainOptions(epochs=10), PruneOptions(rewind="step:79"))
    with pytest.raises(OptionError, match="budget of 80 steps"):
        checks.check_rewind(mnist, TrainOptions(epochs=10), PruneOptions(rewind="step:80"))
    with pytest.raises(OptionError, match="budget of 50 steps"):
        checks.check_rewind(mnist, TrainOptions(steps=50), PruneOptions(rewind="epoch:7"))
    cifar = DataOptions(name="cifar10", fraction=0.25)  # its size is known once read: left to the trainer
    checks.check_rewind(cifar, TrainOptions(epochs=10), PruneOptions(rewind="step:100000"))
    with pytest.raises(OptionError, match="must be < train.epochs=10"):
        checks.check_rewind(cifar, TrainOptions(epochs=10), PruneOptions(rewind="epoch:10"))
