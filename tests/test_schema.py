"""The job schema: names equal the registries, checks fail at plan time, normalize, derived id rules, levels."""

import pytest

from scaling_sweep import schema
from scaling_sweep.errors import ConfigError
from scaling_sweep.schema import DataOptions, ModelOptions, PruneOptions, TrainOptions
from tests.conftest import composed


def test_model_and_dataset_names_equal_the_registries():
    from scaling_sweep.train.data import DATASETS
    from scaling_sweep.train.models import MODELS

    assert sorted(schema.MODEL_NAMES) == sorted(MODELS)
    assert sorted(schema.DATASET_NAMES) == sorted(DATASETS)


def test_model_names_and_depths_are_checked_with_the_allowed_values():
    with pytest.raises(ConfigError, match=r"6n\+2"):
        schema.check_model(ModelOptions(name="cifar_resnet", depth=21))
    with pytest.raises(ConfigError, match="11, 13, 16, 19"):
        schema.check_model(ModelOptions(name="cifar_vgg", depth=12))
    with pytest.raises(ConfigError, match="model.name='resnet50' is unknown; known models: cifar_resnet"):
        schema.check_model(ModelOptions(name="resnet50"))


def test_oneshot_without_density_fails_at_plan_time():
    with pytest.raises(ConfigError, match="prune.density"):
        schema.check_prune(PruneOptions(method="oneshot"))
    schema.check_prune(PruneOptions(method="oneshot", density=0.3))


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"stop_at_chance": -1}, r"prune.stop_at_chance=-1: must be an integer >= 0"),
        ({"stop_at_chance": 1.5}, r"prune.stop_at_chance=1.5: must be an integer >= 0"),
        ({"stop_at_chance": True}, r"prune.stop_at_chance=True"),
        ({"chance_margin": 1.0}, r"prune.chance_margin=1.0: must be a number in \[0, 1\)"),
        ({"chance_margin": -0.01}, r"prune.chance_margin=-0.01"),
        ({"include": "conv(["}, r"prune.include='conv\(\[': not a regular expression \(unterminated"),
        ({"exclude": "*bias"}, r"prune.exclude='\*bias': not a regular expression \(nothing to repeat"),
    ],
)
def test_bad_prune_options_fail_at_plan_time_with_one_line(options, match):
    with pytest.raises(ConfigError, match=match) as e:
        schema.check_prune(PruneOptions(**options))
    assert "\n" not in str(e.value)


def test_prune_options_within_range_pass():
    schema.check_prune(PruneOptions(stop_at_chance=0, chance_margin=0.0))
    schema.check_prune(PruneOptions(stop_at_chance=3, chance_margin=0.1, include=r"conv\d", exclude="head"))


def test_train_step_is_a_section_naming_its_function():
    schema.check_train(TrainOptions(step={"_target_": "pkg.mod.step", "clip": 1.0}))
    for bad in ("pkg.mod.step", {"clip": 1.0}, {"_target_": 3}):
        with pytest.raises(ConfigError, match="train.step=.*_target_: pkg.module.function"):
            schema.check_train(TrainOptions(step=bad))


@pytest.mark.parametrize("name", sorted(schema.TRAIN_SIZES))
def test_known_train_sizes_and_steps_equal_the_loaded_data(name):
    # The plan-time rewind check counts steps from these sizes; the trainer from the loaded data.
    from scaling_sweep.train.data import load_dataset

    for fraction in (1.0, 0.3):
        opts = DataOptions(name=name, fraction=fraction)
        data = load_dataset(opts, "cpu")
        assert schema.train_size(opts) == data.n_train
        assert schema.steps_per_epoch(data.n_train, 128) == data.steps_per_epoch(128)
    assert schema.train_size(DataOptions(name=name, balanced=True)) is None  # needs the class counts


def test_rewind_is_checked_against_the_budget_in_its_own_unit():
    mnist = DataOptions(name="mnist1d", fraction=0.25)  # 1000 examples: 8 steps of 128
    schema.check_rewind(mnist, TrainOptions(epochs=10), PruneOptions(rewind="step:79"))
    with pytest.raises(ConfigError, match="budget of 80 steps"):
        schema.check_rewind(mnist, TrainOptions(epochs=10), PruneOptions(rewind="step:80"))
    with pytest.raises(ConfigError, match="budget of 50 steps"):
        schema.check_rewind(mnist, TrainOptions(steps=50), PruneOptions(rewind="epoch:7"))
    cifar = DataOptions(name="cifar10", fraction=0.25)  # its size is known once read: left to the trainer
    schema.check_rewind(cifar, TrainOptions(epochs=10), PruneOptions(rewind="step:100000"))
    with pytest.raises(ConfigError, match="must be < train.epochs=10"):
        schema.check_rewind(cifar, TrainOptions(epochs=10), PruneOptions(rewind="epoch:10"))


def test_validate_checks_every_section_and_the_rewind_point():
    config = {s: schema.normalize(s, {}) for s in schema.SECTIONS}
    schema.validate(config)
    with pytest.raises(ConfigError, match="model.width=0.0: must be > 0"):
        schema.validate({**config, "model": {"width": 0.0}})
    with pytest.raises(ConfigError, match="prune.rewind=epoch:10: must be < train.epochs=10"):
        schema.validate({**config, "prune": {"rewind": "epoch:10"}})


def test_normalize_fills_defaults_and_gives_numbers_their_options_types():
    assert schema.normalize("model", {"name": "mlp", "width": 1, "depth": 3.0}) == {
        "name": "mlp",
        "width": 1.0,
        "depth": 3,
    }
    assert isinstance(schema.normalize("model", {"width": 1})["width"], float)
    assert schema.normalize("prune", {"density": None})["density"] is None
    assert schema.normalize("data", {}) == {
        "name": "mnist1d",
        "fraction": 1.0,
        "data_seed": 0,
        "balanced": False,
        "augment": False,
        "root": None,
        "cache_dir": None,
        "num_workers": 4,
    }
    with pytest.raises(ConfigError, match=r"model.depth=2.5: must be an integer"):
        schema.normalize("model", {"depth": 2.5})
    with pytest.raises(ConfigError, match=r"model.width=True: must be a number"):
        schema.normalize("model", {"width": True})  # bools are never numbers


def test_normalize_names_an_unknown_key_and_the_known_ones():
    with pytest.raises(ConfigError, match=r"^model.widht is not an option; known: depth, name, width$"):
        schema.normalize("model", {"name": "mlp", "widht": 2})


def test_normalize_leaves_user_sections_and_training_steps_as_they_are():
    user_model = {"_target_": "pkg.models.Net", "hidden": 3, "width": 1}
    assert schema.normalize("model", user_model) == user_model
    data = schema.normalize("data", {"_target_": "pkg.data.load", "size": 7, "fraction": 1})
    assert data["_target_"] == "pkg.data.load" and data["size"] == 7 and data["fraction"] == 1.0
    assert "name" not in data and data["num_workers"] == 4
    step = {"_target_": "pkg.mod.step", "clip": 1}
    assert schema.normalize("train", {"step": step})["step"] == step


def test_execution_keys_and_added_options_come_from_the_field_metadata():
    assert schema.EXECUTION_KEYS == {
        "model": frozenset(),
        "data": frozenset({"root", "cache_dir", "num_workers"}),
        "train": frozenset({"checkpoint_every", "log_every"}),
        "prune": frozenset(),
    }
    assert schema.ADDED_OPTIONS == {
        "model": {},
        "data": {},
        "train": {"step": None},
        "prune": {"stop_at_chance": 2, "chance_margin": 0.02, "include": None, "exclude": None},
    }


def test_last_level_for_imp_levels_imp_density_and_oneshot():
    assert schema.last_level(PruneOptions(levels=3)) == 3
    assert schema.last_level({"method": "imp", "levels": 3, "rate": 0.2}) == 3
    assert schema.last_level(PruneOptions(density=0.262)) == 6  # 0.8^6 = 0.262144, within the slack
    assert schema.last_level({"levels": 8, "density": 0.5, "rate": 0.2}) == 8  # the deeper of the two
    assert schema.last_level(PruneOptions(method="oneshot", density=0.1, levels=5)) == 1
    with pytest.raises(ConfigError, match=r"prune.density=0: must be in \(0, 1\]"):
        schema.last_level({"density": 0, "rate": 0.2})


def test_untyped_model_and_data_sections_still_refuse_typos_at_compose():
    for typo in ("model.widht=2", "data.fractoin=0.5"):
        with pytest.raises(ConfigError, match="not in struct"):
            composed(typo)
    assert composed("data.cache_dir=/x")["data"]["cache_dir"] == "/x"
    step = composed("train.step={_target_:pkg.mod.step,clip:1}")["train"]["step"]
    assert step == {"_target_": "pkg.mod.step", "clip": 1}
    # A model group is not merged with the default model's options (a user's model has its own).
    assert composed("model=cifar_vgg")["model"] == {"name": "cifar_vgg", "width": 1.0, "depth": 16}
