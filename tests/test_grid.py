"""Grid expansion: products, zipped groups, drop filters, density folding, typing, and bad grids."""

from __future__ import annotations

import pytest

from scaling_sweep.errors import ConfigError
from scaling_sweep.grid import expand
from tests.conftest import composed


def test_default_sweep_is_3_widths_x_3_fractions_x_3_seeds():
    plan = expand(composed())
    assert len(plan.specs) == 27 == plan.n_points
    assert {s.model["width"] for s in plan.specs} == {0.25, 0.5, 1.0}
    assert {s.data["fraction"] for s in plan.specs} == {0.25, 0.5, 1.0}
    assert {s.seed for s in plan.specs} == {0, 1, 2}
    assert all(s.prune["levels"] == 16 and s.prune["rate"] == 0.4 for s in plan.specs)
    assert all(s.prune["include_output_layer"] and s.prune["stop_at_chance"] == 2 for s in plan.specs)


def test_int_and_float_axis_values_are_one_job():
    a = expand(composed("grid.model.width=[1,2]", "grid.data.fraction=[1]", "grid.seed=[0]"))
    b = expand(composed("grid.model.width=[1.0,2.0]", "grid.data.fraction=[1.0]", "grid.seed=[0]"))
    assert [s.job_id for s in a.specs] == [s.job_id for s in b.specs]
    assert all(isinstance(s.model["width"], float) for s in a.specs)


def test_int_and_float_base_values_are_one_job():
    # model and data are untyped in the composed config: the grid gives them their schema.
    a = expand(composed("~grid.model", "~grid.data", "model.width=1", "data.fraction=1"))
    b = expand(composed("~grid.model", "~grid.data", "model.width=1.0", "data.fraction=1.0"))
    assert [s.job_id for s in a.specs] == [s.job_id for s in b.specs]
    assert isinstance(a.specs[0].model["width"], float) and isinstance(a.specs[0].data["fraction"], float)


def test_zip_varies_axes_together():
    plan = expand(
        composed(
            "grid.model.width=[1,2,4]",
            "+grid.train.lr=[0.4,0.2,0.1]",
            "grid.data.fraction=[1]",
            "grid.seed=[0]",
            "+grid.zip=[[model.width,train.lr]]",
        )
    )
    assert sorted((s.model["width"], s.train["lr"]) for s in plan.specs) == [
        (1.0, 0.4),
        (2.0, 0.2),
        (4.0, 0.1),
    ]


def test_zip_of_unequal_lengths_is_refused():
    with pytest.raises(ConfigError, match="different lengths"):
        expand(
            composed("grid.model.width=[1,2]", "+grid.train.lr=[0.1]", "+grid.zip=[[model.width,train.lr]]")
        )


def test_drop_filter_removes_points():
    plan = expand(composed("+grid.drop=['model.width > 0.5 and data.fraction < 0.5']"))
    assert len(plan.specs) == 24
    assert not any(s.model["width"] == 1.0 and s.data["fraction"] == 0.25 for s in plan.specs)


def test_drop_with_a_typo_stops_the_plan():
    with pytest.raises(ConfigError, match="grid.drop"):
        expand(composed("+grid.drop=['model.widht > 1']"))


def test_imp_densities_fold_into_one_trajectory_per_point():
    plan = expand(composed("+grid.prune.density=[1,0.8,0.64,0.262]", "grid.seed=[0]", "prune.rate=0.2"))
    assert plan.n_points == 36 and len(plan.specs) == 9 and plan.folded == 27
    # 0.262 needs 6 levels (0.8^6 = 0.2621...); the sweep's prune.levels=16 goes deeper and wins.
    assert {s.prune["levels"] for s in plan.specs} == {16}
    assert {s.prune["density"] for s in plan.specs} == {None}
    deeper = expand(
        composed("+grid.prune.density=[1,0.1]", "grid.seed=[0]", "prune.levels=0", "prune.rate=0.2")
    )
    assert {s.prune["levels"] for s in deeper.specs} == {11}  # 0.8^11 = 0.086 <= 0.1 < 0.8^10


def test_folded_trajectory_is_the_same_job_as_levels():
    by_density = expand(composed("+grid.prune.density=[0.6,0.36]", "prune.levels=0"))
    by_levels = expand(composed("prune.levels=2"))
    assert {s.job_id for s in by_density.specs} == {s.job_id for s in by_levels.specs}


def test_oneshot_makes_one_job_per_density():
    plan = expand(
        composed(
            "prune=oneshot",
            "+grid.prune.density=[0.5,0.25]",
            "grid.seed=[0]",
            "grid.model.width=[1]",
            "grid.data.fraction=[1]",
        )
    )
    assert sorted(s.prune["density"] for s in plan.specs) == [0.25, 0.5]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["grid.data.fraction=[0.5,1.5]"], "data.fraction=1.5: must be in (0, 1]"),
        (["grid.data.fraction=[0]"], "data.fraction=0.0: must be in (0, 1]"),
        (["+grid.prune.density=[0]"], "prune.density=0"),
        (["grid.model.width=[0]"], "model.width=0.0: must be > 0"),
        (["model.name=transformer"], "model.name='transformer' is unknown; known models:"),
        (["model=cifar_resnet", "model.depth=21", "data=cifar10", "data.root=/"], "depth = 6n+2"),
        (["data=cifar10", "data.root=/nonexistent/cifar"], "data.root=/nonexistent/cifar: no such directory"),
        (["+grid.model.colour=[1]"], "model has no option 'colour'"),
        (["grid.seed=[]"], "at least one value"),
        (["+grid.drop=['True']"], "the grid is empty"),
    ],
)
def test_bad_input_is_one_line_naming_the_value(overrides, message):
    with pytest.raises(ConfigError) as e:
        expand(composed(*overrides))
    assert message in str(e.value)
    assert "\n" not in str(e.value)
