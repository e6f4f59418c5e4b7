"""What the data can support: recovery on a grid as small as the default sweep's, verdicts on data that break the
law, regions, honest intervals, and fits that never raise at the chance plateau."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from scaling_sweep.fit import fit_table, plot_table

# The law with one depth: φ is pinned, so the generator's must be 0 for p′ to mean the same thing.
SMALL_TRUTH = {"eps_up": 0.9, "gamma": 1.5, "p_prime": 0.02, "psi": 1.0, "phi": 0.0}


def default_sized(make, seed: int = 0, noise: float = 0.01, seeds: int = 3, **kw) -> pd.DataFrame:
    """Shaped like the default sweep: one depth, 3 widths x 3 fractions, IMP at rate 0.4 to 0.6^12."""
    shape = dict(depths=(3,), widths=(0.25, 0.5, 1.0), fractions=(0.25, 0.5, 1.0), levels=13, rate=0.4)
    shape |= kw.pop("grid", {})
    return make.pruning(seed=seed, noise=noise, seeds=seeds, params={**SMALL_TRUTH, **kw}, **shape)


def fit_pruning(table, tmp_path, **kw):
    return fit_table(table, tmp_path, laws=["pruning2021"], folds=0, plots=False, **kw)


def test_joint_law_on_a_default_sized_grid_recovers_gamma_p_psi_within_5_percent_and_says_ok(make, tmp_path):
    report = fit_pruning(default_sized(make), tmp_path, bootstrap=40)
    fit = report.fits["pruning2021"]
    for name in ("gamma", "p_prime", "psi"):
        assert fit.params[name][0] == pytest.approx(SMALL_TRUTH[name], rel=0.05), name
    assert fit.verdict == "ok", fit.verdict_reason
    law = json.loads((tmp_path / "params.json").read_text())["laws"]["pruning2021"]
    assert law["verdict"] == "ok" and "seed noise" in law["verdict_reason"]
    for name in ("eps_up", "gamma", "p_prime", "psi"):
        p = law["params"][name]
        assert p["constrained"] is True
        assert p["ci95"][0] <= p["value"] <= p["ci95"][1]
    assert report.summary().splitlines()[0].startswith("pruning2021: OK: ")  # the verdict before any number
    quality = (tmp_path / "quality.md").read_text()
    assert quality.index("## Verdicts") < quality.index("Source:") < quality.index("## Fit quality")


def test_dense_rows_inform_eps_np_and_are_not_residuals_so_noise_free_data_is_recovered_exactly(
    make, tmp_path
):
    fit = fit_pruning(default_sized(make, noise=0.0, seeds=1), tmp_path, bootstrap=0).fits["pruning2021"]
    for name in ("eps_up", "gamma", "p_prime", "psi"):
        assert fit.params[name][0] == pytest.approx(SMALL_TRUTH[name], rel=1e-6), name
    assert not (fit.points["density"] >= 1.0).any()  # only pruned levels are residuals


def _trajectories(eps_np_of, error_of, *, seeds=3, levels=13, rate=0.4, noise=0.01, widths=(0.25, 0.5, 1.0)):
    """A table whose curves are error_of(width, density, ε_np) instead of the law."""
    rng = np.random.default_rng(3)
    rows = []
    for w in widths:
        for f in (0.25, 0.5, 1.0):
            eps_np = eps_np_of(w, f)
            for s in range(seeds):
                for level in range(levels):
                    d = (1 - rate) ** level
                    err = eps_np if level == 0 else error_of(w, d, eps_np)
                    rows.append(
                        {
                            "dataset": "mnist1d",
                            "model": "cnn1d",
                            "width": w,
                            "depth": 3,
                            "data_fraction": f,
                            "n_train": round(4000 * f),
                            "level": level,
                            "density": d,
                            "seed": s,
                            "test_error": min(err * (1 + noise * rng.standard_normal()), 0.999),
                        }
                    )
    return pd.DataFrame(rows)


def _eps_np(w, f):
    return 0.04 + 0.03 * w**-0.5 + 0.03 * f**-0.5


NOT_THE_LAW = {
    # error rising as a cubic in (1 − d): no plateau and no power law
    "rising polynomial": _trajectories(_eps_np, lambda w, d, e: e + 0.75 * (1 - d) ** 3),
    # each width rises with its own steepness, so no single ψ collapses the curves onto one law
    "violated invariant": _trajectories(
        _eps_np,
        lambda w, d, e: float(
            np.exp(
                np.log(e)
                + 0.5 * (3.0 * w) * np.log((d**2 + (0.02 * 9 ** (1 / (3 * w))) ** 2) / (d**2 + 4e-4))
            )
        ),
    ),
    # a pure power law in density on a small grid: the high-error plateau is never reached
    "pure power law": _trajectories(_eps_np, lambda w, d, e: e * d**-0.35, levels=10, rate=0.2),
}


@pytest.mark.parametrize("case", list(NOT_THE_LAW))
def test_data_that_does_not_follow_the_law_gets_a_verdict_other_than_ok(case, tmp_path):
    fit = fit_pruning(NOT_THE_LAW[case], tmp_path, bootstrap=30).fits["pruning2021"]
    assert fit.verdict in ("misfit", "unconstrained"), fit.verdict_reason
    if case == "pure power law":
        # the plateau the law would put there does not exist: ε↑ is said to be unconstrained, in plain words
        assert "ε↑ (no point comes within 5% of chance" in fit.verdict_reason
        law = json.loads((tmp_path / "params.json").read_text())["laws"]["pruning2021"]
        assert law["params"]["eps_up"]["constrained"] is False


def test_regions_say_which_configurations_reach_each_part_of_the_curve(make, tmp_path):
    table = default_sized(make)
    table = table[(table["width"] < 1) | (table["level"] <= 5)]  # the widest stop at density 0.6^5 = 0.08
    report = fit_pruning(table, tmp_path, bootstrap=0)
    regions = report.regions.set_index(["width", "data_fraction"])
    # the narrowest networks rise all the way to chance; the widest, stopped early, never reach it
    assert (regions.loc[(0.25, 0.25), ["low", "power", "high"]] >= [1, 2, 1]).all()
    widest = regions.loc[(1.0, 1.0)]
    assert widest["high"] == 0 and widest["low"] >= 1 and widest[["low", "power", "high"]].sum() == 6
    saved = json.loads((tmp_path / "params.json").read_text())["regions"]
    assert len(saved) == 9 and {"low", "power", "high", "min_density", "max_error"} <= set(saved[0])
    quality = (tmp_path / "quality.md").read_text()
    assert quality.index("## Verdicts") < quality.index("## Regions") < quality.index("## Fit quality")
    assert "all three" in quality


def test_bootstrap_intervals_cover_the_truth_at_about_their_nominal_rate_on_a_rich_grid(make, tmp_path):
    """10 noisy copies of a 3 depth x 3 width x 3 seed grid, with noise per point and per run (shared by a run's
    levels and, through its dense row, by ε_np): the 95 % intervals of the 5 joint parameters cover the truth
    about 95 % of the time, and their widths match the estimates' real spread (not 2-4x wider)."""
    truth = {"eps_up": 0.9, "gamma": 1.5, "p_prime": 0.005, "phi": 0.8, "psi": 1.6}
    hits, estimates, stds = 0, {k: [] for k in truth}, {k: [] for k in truth}
    copies = 10
    for rep in range(copies):
        table = make.pruning(seed=100 + rep, noise=0.02, run_noise=0.02, seeds=3, levels=25)
        fit = fit_table(
            table, tmp_path, laws=["pruning2021"], folds=0, plots=False, bootstrap=40, n_starts=4
        ).fits["pruning2021"]
        for name, value in truth.items():
            iv = fit.intervals[name]
            hits += iv.low <= value <= iv.high
            estimates[name].append(fit.params[name][0])
            stds[name].append(iv.std)
    assert hits >= 0.8 * copies * len(truth), hits  # nominal 95 %: 47.5 of 50
    for name in truth:
        ratio = np.std(estimates[name], ddof=1) / np.mean(stds[name])
        assert 0.4 < ratio < 2.5, (name, ratio)


def test_fit_and_plot_never_raise_on_rows_at_the_chance_plateau_or_tiny_densities(make, tmp_path):
    table = default_sized(make, seeds=2, grid={"levels": 30})
    chance = table["level"] >= 20
    table.loc[chance, "test_error"] = 0.9  # exactly chance, flat, densities down to 1e-7
    table.loc[table["level"] == 29, "test_error"] = 0.93  # and a little above it
    report = fit_table(table, tmp_path, folds=3, bootstrap=10)
    assert "pruning2021" in report.fits and report.fits["pruning2021"].verdict is not None
    assert (tmp_path / "fit_error_vs_density.png").is_file()
    assert plot_table(table, tmp_path / "plots")
