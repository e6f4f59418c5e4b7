"""The notebook API: `scaling_sweep.load` reads any results table as a DataFrame, `scaling_sweep.fit` returns
a report with verdicts, μ/σ and parameters as tables and the plots drawn inline; importing stays cheap."""

from __future__ import annotations

import os
import subprocess
import sys
import types

import pandas as pd
import pytest

import scaling_sweep
from scaling_sweep.errors import ConfigError
from scaling_sweep.fit.notebook import Report
from tests.conftest import ROOT
from tests.fit.conftest import make_pruning

PNG = b"\x89PNG\r\n\x1a\n"
FIGURES = {
    "fit_error_vs_density",
    "fit_error_vs_n_train",
    "fit_error_vs_params",
    "fit_collapse",
    "fit_predicted_vs_measured",
}


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    """A small pruning grid generated from the 2021 law: 2 widths x 2 fractions x 2 seeds, 8 densities."""
    return make_pruning(
        seed=3, noise=0.03, seeds=2, depths=(3,), widths=(0.5, 1.0), fractions=(0.25, 1.0), levels=8
    )


@pytest.fixture(scope="module")
def report(table) -> Report:
    return scaling_sweep.fit(table, folds=3, bootstrap=20)


def test_import_is_cheap_and_load_fit_and_tracking_are_torch_free():
    code = """
import sys

class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "torch":
            raise ImportError(f"{name} is unimportable in this test")

sys.meta_path.insert(0, NoTorch())
import scaling_sweep
assert not {"pandas", "scipy", "matplotlib", "omegaconf"} & set(sys.modules), "import scaling_sweep is not cheap"
scaling_sweep.load, scaling_sweep.fit, scaling_sweep.fit.fit_table
import scaling_sweep.tracking, scaling_sweep.job
assert "torch" not in sys.modules
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr


def test_fit_is_callable_even_after_the_fitting_package_is_imported(table):
    import scaling_sweep.fit.api  # noqa: F401  (binds scaling_sweep.fit to the package, as the CLI does)
    from scaling_sweep import fit

    assert fit is scaling_sweep.fit and callable(fit)
    assert isinstance(fit(table, laws=["pruning2021"], folds=0, bootstrap=0, plots=False), Report)


def test_load_reads_a_sweep_directory_a_parquet_file_or_directory_and_a_csv(tmp_path):
    from scaling_sweep.grid import expand
    from scaling_sweep.job import run_job
    from tests.conftest import composed
    from tests.test_tracking import trainer

    for spec in expand(composed("sweep=smoke")).specs:  # 4 jobs x 3 levels, a stand-in trainer
        assert run_job(spec, tmp_path / "smoke", train_fn=trainer()) == "done"
    rows = scaling_sweep.load(tmp_path / "smoke")
    assert isinstance(rows, pd.DataFrame) and len(rows) == 12
    assert rows.groupby("job_id")["level"].apply(list).tolist() == [[0, 1, 2]] * 4
    rows.to_parquet(tmp_path / "all.parquet")
    (tmp_path / "parts").mkdir()
    for job, part in rows.groupby("job_id"):
        part.to_parquet(tmp_path / "parts" / f"{job}.parquet")
    rows[["width", "data_fraction", "level", "density", "test_error"]].to_csv(tmp_path / "t.csv", index=False)
    key = ["job_id", "level"]
    assert (
        scaling_sweep.load(tmp_path / "all.parquet")
        .sort_values(key, ignore_index=True)
        .equals(rows.sort_values(key, ignore_index=True))
    )
    assert len(scaling_sweep.load(tmp_path / "parts")) == 12
    csv = scaling_sweep.load(tmp_path / "t.csv", columns={"test_error": "err"})
    assert list(csv.columns) == ["width", "data_fraction", "level", "density", "err"]
    assert csv["err"].tolist() == pytest.approx(rows["test_error"].tolist())


def test_load_of_nothing_is_one_line_config_error(tmp_path):
    with pytest.raises(ConfigError) as e:
        scaling_sweep.load(tmp_path / "nope")
    assert len(str(e.value).splitlines()) == 1 and "no such file or directory" in str(e.value)


def test_fit_reports_verdicts_quality_and_parameters_as_tables(report):
    assert set(report.verdicts) == {"pruning2021", "pruning2021/config"}
    assert set(report.verdicts.values()) <= {"ok", "unconstrained", "misfit"}
    assert set(report.skipped) == {"power", "rosenfeld2020"}  # no model-size or data-size axis to fit
    q = report.quality
    joint = report.report.fits["pruning2021"]
    assert q.loc["pruning2021", "mu"] == joint.mu and q.loc["pruning2021", "sigma"] == joint.sigma
    assert (
        q.loc["pruning2021", "points"] == joint.n_points and q.loc["pruning2021", "verdict"] == joint.verdict
    )
    p = report.params
    mine = p[(p["law"] == "pruning2021") & ~p["pinned"]].set_index("parameter")
    assert list(mine.index) == ["eps_up", "gamma", "p_prime", "psi"]
    assert mine.loc["psi", "value"] == joint.params["psi"][0]
    assert (mine["low"] <= mine["value"]).all() and (mine["value"] <= mine["high"]).all()  # bootstrapped
    per_config = p[p["law"] == "pruning2021/config"]
    assert len(per_config) == 4 * 3 and set(per_config["width"]) == {0.5, 1.0}  # 4 configurations x ε↑, γ, p
    assert report.paths == [] and set(report.images) == FIGURES


def test_fit_writes_params_quality_and_plots_to_out_when_asked(table, tmp_path):
    table.to_csv(tmp_path / "t.csv", index=False)
    report = scaling_sweep.fit(tmp_path / "t.csv", out=tmp_path / "fit", folds=0, bootstrap=0)
    names = {p.name for p in report.paths}
    assert {"params.json", "quality.md"} | {f"{f}.png" for f in FIGURES} <= names
    assert all(p.is_file() for p in report.paths)


def test_the_report_shows_verdicts_before_numbers(report):
    page = report._repr_html_()
    assert page.index(f"<li>pruning2021: {report.verdicts['pruning2021'].upper()}: ") < page.index("<table")
    assert repr(report).splitlines()[0].startswith("pruning2021")


def test_plot_draws_each_figure_inline_in_ipython(report, monkeypatch):
    shown = []
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: object()  # a running shell
    display = types.ModuleType("IPython.display")
    display.Image = lambda data, format: (format, data)
    display.display = shown.append
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", display)
    report.plot()
    assert len(shown) == len(FIGURES) and all(f == "png" and d.startswith(PNG) for f, d in shown)
    shown.clear()
    report.plot("fit_collapse")
    assert shown == [("png", report.images["fit_collapse"])]


def test_plot_outside_ipython_opens_figures_of_the_pngs_size(report, monkeypatch):
    import matplotlib.pyplot as plt

    monkeypatch.setitem(sys.modules, "IPython", None)  # not installed
    plt.close("all")
    plt.switch_backend("Agg")
    report.plot("fit_error_vs_density", "fit_collapse")
    assert plt.get_figlabels() == ["fit_error_vs_density", "fit_collapse"]
    assert tuple(plt.gcf().get_size_inches() * plt.gcf().dpi) == pytest.approx((1200, 800))
    plt.close("all")


def test_bad_fit_input_is_one_line_config_error(table, report):
    with pytest.raises(ConfigError, match=r"^unknown law 'powr'; known: "):
        scaling_sweep.fit(table, laws=["powr"])
    with pytest.raises(
        ConfigError, match=r"^plot\('nope'\): no such figure; there are: fit_error_vs_density"
    ):
        report.plot("nope")
