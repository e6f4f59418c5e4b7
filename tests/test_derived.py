"""Derived quantities in grid filters: params, flops_per_example and n_train in grid.drop and grid.keep,
computed only when a filter names them, and one line where they cannot be known before loading."""

from __future__ import annotations

import pytest

from scaling_sweep.errors import ConfigError
from scaling_sweep.grid import expand
from tests.conftest import composed

# mlp, depth 2, on MNIST-1D inputs (1, 40) and 10 classes: hidden layers of round(100 x width) units.
MLP = [
    "model=mlp",
    "model.depth=2",
    "grid.model.width=[0.5,1,2]",
    "grid.data.fraction=[0.5,1]",
    "grid.seed=[0]",
]


def mlp_params(width: float) -> int:
    h = round(100 * width)
    return (40 * h + h) + (h * h + h) + (h * 10 + 10)


def points(*overrides: str) -> list[tuple[float, float]]:
    plan = expand(composed(*MLP, *overrides))
    return sorted((s.model["width"], s.data["fraction"]) for s in plan.specs)


def test_params_of_an_mlp_match_the_count_by_hand():
    assert mlp_params(1) == 15_210
    assert points("+grid.keep=['params == 15210']") == [(1.0, 0.5), (1.0, 1.0)]
    assert points("+grid.drop=['params > 15210']") == [(0.5, 0.5), (0.5, 1.0), (1.0, 0.5), (1.0, 1.0)]


def test_flops_and_n_train_select_an_iso_compute_band():
    # Forward FLOPs of one example: 2 x the multiply-adds of the three linear layers.
    flops = {w: 2 * (40 * h + h * h + h * 10) for w, h in ((0.5, 50), (1.0, 100), (2.0, 200))}
    assert points("+grid.keep=['flops_per_example == 30000']") == [(1.0, 0.5), (1.0, 1.0)]
    # An iso-compute band: flops x examples within a factor 2 of 1.2e8 (width 1 on all 4,000 examples).
    kept = points("+grid.keep=['flops_per_example * n_train >= 6e7', 'flops_per_example * n_train <= 2.4e8']")
    expected = [(w, f) for w in flops for f in (0.5, 1.0) if 6e7 <= flops[w] * 4000 * f <= 2.4e8]
    assert kept == sorted(expected) == [(1.0, 0.5), (1.0, 1.0), (2.0, 0.5)]
    # Both filters at once: keep, then drop.
    assert points("+grid.keep=['params * n_train > 4e7']", "+grid.drop=['model.width > 1']") == [(1.0, 1.0)]


def test_unknown_name_in_keep_is_one_line(capsys, tmp_path):
    from scaling_sweep.cli import main

    code = main(["run", f"out_dir={tmp_path}", *MLP, "+grid.keep=['parms > 1e4']"])
    out = capsys.readouterr()
    lines = (out.out + out.err).strip().splitlines()
    assert code == 2 and lines == [
        "error: grid.keep 'parms > 1e4': unknown name 'parms' (did you mean 'params'?)"
    ]
    assert not any(tmp_path.iterdir())


def test_derived_names_of_data_known_only_once_loaded_are_one_line(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"^grid.keep 'params > 1': params and flops_per_example need the input shape of data 'imagenet', known only once it is loaded",
    ):
        expand(
            composed(
                "data=imagenet", f"data.root={tmp_path}", "model=cifar_resnet", "+grid.keep=['params > 1']"
            )
        )
    with pytest.raises(
        ConfigError,
        match=r"^grid.drop 'n_train < 100': n_train of data 'cifar10' is known only once it is loaded",
    ):
        expand(
            composed(
                "data=cifar10", f"data.root={tmp_path}", "model=cifar_resnet", "+grid.drop=['n_train < 100']"
            )
        )


def test_derived_values_are_computed_only_when_a_filter_names_them(monkeypatch):
    from scaling_sweep.train import census

    calls = []
    real = census.census
    monkeypatch.setattr(
        census, "census", lambda config, flops=False: calls.append(flops) or real(config, flops)
    )
    points("+grid.drop=['model.width > 1']", "+grid.keep=['n_train > 100']")
    assert calls == []
    points("+grid.keep=['params > 0']")
    assert calls == [False] * 3  # once per distinct model, not per point
