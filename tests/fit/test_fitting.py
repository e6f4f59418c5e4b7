"""Fits recover the parameters that generated the data, μ and σ match the noise, and the degeneracies are pinned."""

import numpy as np
import pytest

from scaling_sweep.fit import fit_points, fit_table
from scaling_sweep.fit.fitting import solve
from scaling_sweep.fit.laws import setup_pruning2021, setup_rosenfeld2020
from scaling_sweep.fit.problem import Options


def fit(table, tmp_path, law, **kw):
    report = fit_table(table, tmp_path, laws=(law,), plots=False, **kw)
    return report


def assert_recovered(params: dict, truth: dict, rel: float, stderr_holds: bool = True) -> None:
    for name, true in truth.items():
        value, stderr = params[name]
        assert value == pytest.approx(true, rel=rel), f"{name}: {value} vs {true}"
        assert 0 < stderr < rel * abs(true), f"{name}: standard error {stderr} of {value}"
        if stderr_holds:
            # The Jacobian's standard error is honest: the truth lies within a few of them.
            assert abs(value - true) < 4 * stderr, f"{name}: {value} ± {stderr} vs {true}"


def assert_noise_level(fit_, noise: float = 0.01) -> None:
    assert abs(fit_.mu) < 0.003
    assert 0.6 * noise < fit_.sigma < 1.4 * noise


def test_power_law_recovers_its_parameters(power_table, truth, tmp_path):
    law = fit(power_table, tmp_path, "power").fits["power"]
    assert law.label["axis"] == "n_train"
    assert_recovered(law.params, truth.power, rel=0.05)
    assert_noise_level(law)


def test_rosenfeld2020_recovers_its_parameters(rosenfeld_table, truth, tmp_path):
    law = fit(rosenfeld_table, tmp_path, "rosenfeld2020").fits["rosenfeld2020"]
    assert_recovered(law.params, truth.rosenfeld, rel=0.03)
    assert law.pinned == {"a": 1.0, "eps0": pytest.approx(0.9)}
    assert_noise_level(law)
    assert law.cv is not None and law.cv[1] == pytest.approx(law.sigma, rel=0.3)


def test_joint_pruning_law_recovers_its_parameters(pruning_table, truth, tmp_path):
    law = fit(pruning_table, tmp_path, "pruning2021", folds=0).fits["pruning2021"]
    assert_recovered(law.params, truth.pruning, rel=0.03)
    assert_noise_level(law)


def test_per_configuration_pruning_law_recovers_its_parameters(pruning_one_table, truth, tmp_path):
    report = fit(pruning_one_table, tmp_path, "pruning2021")
    (config,) = report.fits["pruning2021/config"].configs
    # ε_np is the one measured dense error, taken as exact, so its 1 % noise shifts γ and p by more than
    # the Jacobian's standard error (which knows only the other points' noise): check the values only.
    assert_recovered(config["params"], truth.pruning_one, rel=0.05, stderr_holds=False)
    assert_noise_level(report.fits["pruning2021/config"])
    # With one configuration the joint law is the same law, with φ and ψ pinned.
    joint = report.fits["pruning2021"]
    assert joint.pinned == {"phi": 0.0, "psi": 0.0}
    assert joint.params["p_prime"][0] == pytest.approx(config["params"]["p"][0], rel=1e-4)


def test_rosenfeld2020_fits_agree_from_any_starts_because_a_is_pinned(rosenfeld_table):
    (task,) = setup_rosenfeld2020(fit_points(rosenfeld_table), Options())
    problem = task.problems[0]
    found = [solve(problem, n_starts=3, seed=s, random_only=True).params for s in range(4)]
    for other in found[1:]:
        for name, (value, _) in found[0].items():
            assert other[name][0] == pytest.approx(value, rel=1e-4), name


def test_joint_pruning_fits_agree_from_any_starts_with_one_depth_pinned(make):
    table = make.pruning(seed=2, depths=(4,), widths=(0.5, 1.0, 2.0), levels=30)
    joint = setup_pruning2021(fit_points(table), Options())[0]
    problem = joint.problems[0]
    assert problem.pinned == {"phi": 0.0} and "phi" not in problem.names
    found = [solve(problem, n_starts=3, seed=s, random_only=True).params for s in range(4)]
    for other in found[1:]:
        for name, (value, _) in found[0].items():
            assert other[name][0] == pytest.approx(value, rel=1e-4), name


def test_seed_noise_is_reported_and_the_fit_reaches_it(make, tmp_path):
    law = fit(make.rosenfeld(seed=4, seeds=3), tmp_path, "rosenfeld2020", folds=0).fits["rosenfeld2020"]
    assert law.seed_sigma == pytest.approx(0.01, rel=0.2)
    assert law.noise_floor == pytest.approx(0.01 / np.sqrt(3), rel=0.2)
    assert law.sigma == pytest.approx(law.noise_floor, rel=0.35)


def test_extrapolation_to_larger_models_and_data_is_measured_on_held_out_points(rosenfeld_table, tmp_path):
    train_on = "params_total <= 1e6 and n_train <= 1e5"
    law = fit(rosenfeld_table, tmp_path, "rosenfeld2020", folds=0, train_on=train_on).fits["rosenfeld2020"]
    held_out = len(rosenfeld_table.query(f"not ({train_on})"))
    assert law.extrapolation_points == held_out > 0
    mu, sigma = law.extrapolation
    assert abs(mu) < 0.02 and sigma < 0.03


def test_small_noisy_pruning_sweep_fits_within_ten_percent(small_real_like, tmp_path):
    report = fit(small_real_like, tmp_path, "pruning2021", train_on="width <= 0.5")
    joint, per_config = report.fits["pruning2021"], report.fits["pruning2021/config"]
    assert joint.sigma < 0.10 and per_config.sigma < 0.10
    assert joint.cv is not None and joint.cv[1] < 0.10
    assert joint.extrapolation is not None and joint.extrapolation[1] < 0.10
    assert joint.pinned == {"phi": 0.0}  # one depth
    assert len(per_config.configs) == 6
    assert joint.seed_sigma == pytest.approx(0.03, rel=0.35)


def test_pruning_fit_survives_a_sweep_where_error_never_rises(make, tmp_path):
    flat = make.pruning(seed=5, depths=(2,), widths=(4.0, 8.0), levels=8, params={"p_prime": 1e-5})
    report = fit(flat, tmp_path, "pruning2021")
    assert report.fits["pruning2021"].sigma < 0.02
    assert all(np.isfinite(v) for v, _ in report.fits["pruning2021"].params.values())


def test_pruning_gradient_matches_finite_differences(pruning_table):
    from scipy.optimize._numdiff import approx_derivative

    for task in setup_pruning2021(fit_points(pruning_table), Options()):
        problem = task.problems[0]
        cols = problem.arrays()
        theta = problem.starts[1] + 0.1
        numeric = approx_derivative(problem.predict, theta, method="3-point", args=(cols,))
        np.testing.assert_allclose(problem.gradient(theta, cols), numeric, atol=1e-7)


def test_per_configuration_extrapolation_to_lower_density(pruning_one_table, tmp_path):
    law = fit(pruning_one_table, tmp_path, "pruning2021", folds=0, train_on="density >= 0.003").fits[
        "pruning2021/config"
    ]
    assert law.extrapolation_points == int((pruning_one_table["density"] < 0.003).sum()) > 0
    assert abs(law.extrapolation[0]) < 0.03 and law.extrapolation[1] < 0.03


def test_imp_dip_below_dense_error_is_noted(make, tmp_path):
    table = make.pruning(seed=6, depths=(2,), widths=(0.5, 1.0), levels=20)
    mid = (table["density"] < 1) & (table["density"] > 0.05)
    table.loc[mid, "test_error"] *= 0.9  # pruned networks 10 % better than dense at moderate density
    report = fit(table, tmp_path, "pruning2021", folds=0)
    assert any("lower error than their dense network" in n for n in report.fits["pruning2021"].notes)
    assert report.fits["pruning2021"].mu > 0
