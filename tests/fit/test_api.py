"""fit_table and plot_table end to end: files written, laws skipped with reasons, progress, PNGs of the stated size."""

import json
import struct

import pytest

from scaling_sweep.fit import FitError, fit_table, fittable, plot_table
from scaling_sweep.fit.plots import SIZE_PX


def png_size(path) -> tuple[int, int]:
    """(width, height) from a PNG's header; fails unless the file starts like a PNG."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def small_fit(small_real_like, tmp_path_factory):
    out = tmp_path_factory.mktemp("fit")
    lines: list[str] = []
    report = fit_table(small_real_like, out, progress=lines.append, folds=3)
    return report, out, lines


def test_fit_writes_params_quality_and_plots(small_fit):
    report, out, _ = small_fit
    names = {p.name for p in report.paths}
    assert {
        "params.json",
        "quality.md",
        "fit_error_vs_density.png",
        "fit_error_vs_n_train.png",
        "fit_error_vs_params.png",
        "fit_collapse.png",
        "fit_predicted_vs_measured.png",
    } <= names
    for path in report.paths:
        assert path.parent == out and path.is_file()
        if path.suffix == ".png":
            assert png_size(path) == SIZE_PX


def test_params_json_is_strict_json_with_uncertainties(small_fit):
    report, out, _ = small_fit

    def no_nan(token):
        raise AssertionError(f"params.json holds {token}")

    data = json.loads((out / "params.json").read_text(), parse_constant=no_nan)
    joint = data["laws"]["pruning2021"]
    assert set(joint["params"]) == {"eps_up", "gamma", "p_prime", "psi"}
    assert all(v["stderr"] is not None and v["stderr"] >= 0 for v in joint["params"].values())
    assert joint["pinned"] == {"phi": 0.0}
    assert joint["sigma"] == pytest.approx(report.fits["pruning2021"].sigma)
    assert len(data["laws"]["pruning2021/config"]["configs"]) == 6


def test_laws_the_table_cannot_support_are_skipped_with_a_reason(small_fit):
    report, out, _ = small_fit
    # Two training-set sizes: too few for the power law, and rosenfeld2020 has 6 dense points for 5 parameters.
    assert set(report.skipped) == {"power", "rosenfeld2020"}
    assert "distinct" in report.skipped["power"]
    assert "need at least 7" in report.skipped["rosenfeld2020"]
    quality = (out / "quality.md").read_text()
    assert "| pruning2021 |" in quality and "- power:" in quality
    summary = report.summary()
    assert "skipped power" in summary and "pruning2021" in summary and str(out / "params.json") in summary


def test_progress_lines_name_each_step(small_fit):
    _, _, lines = small_fit
    assert lines[0] == "reading the table"
    assert any(line.startswith("fitting pruning2021:") for line in lines)
    assert any(line.startswith("cross-validating pruning2021") for line in lines)
    assert any(line.startswith("plotting") for line in lines)


def test_asking_only_for_a_law_the_table_cannot_support_is_an_error(small_real_like, tmp_path):
    with pytest.raises(
        FitError, match="rosenfeld2020 cannot be fit on this table: the dense table has 6 points"
    ):
        fit_table(small_real_like, tmp_path, laws=("rosenfeld2020",))
    dense_only = small_real_like[small_real_like["level"] == 0]
    with pytest.raises(
        FitError, match=r"pruning2021 cannot be fit on this table: needs pruned rows \(density < 1\)"
    ):
        fit_table(dense_only, tmp_path, laws="pruning2021")


def test_all_laws_fit_on_a_full_grid_and_the_report_lists_them(make, tmp_path):
    # 4 widths x 5 fractions x 1 depth, 12 levels: every law has its axes.
    table = make.pruning(
        seed=11,
        depths=(3,),
        widths=(0.25, 0.5, 1.0, 2.0),
        fractions=(0.0625, 0.125, 0.25, 0.5, 1.0),
        levels=12,
        params={"gamma": 1.0, "p_prime": 0.02, "psi": 1.0},
    )
    report = fit_table(table, tmp_path, folds=0, classes=10, power_axis="n_train", plots=False)
    assert set(report.fits) == {"power", "rosenfeld2020", "pruning2021", "pruning2021/config"}
    assert report.skipped == {}
    assert report.fits["power"].label["axis"] == "n_train"


def test_plot_table_draws_measured_curves_only(small_real_like, tmp_path):
    lines: list[str] = []
    paths = plot_table(small_real_like, tmp_path / "plots", progress=lines.append)
    assert [p.name for p in paths] == ["error_vs_density.png", "error_vs_n_train.png", "error_vs_params.png"]
    assert all(png_size(p) == SIZE_PX for p in paths)
    assert lines[0] == "reading the table"


def test_plot_table_skips_figures_without_their_axis(make, tmp_path):
    one_width_one_fraction = make.pruning(depths=(2,), widths=(1.0,), levels=6)
    paths = plot_table(one_width_one_fraction.drop(columns=["params_total"]), tmp_path)
    assert [p.name for p in paths] == ["error_vs_density.png"]


def test_a_tiny_sweep_fits_nothing_but_still_reports_and_plots(make, tmp_path):
    tiny = make.pruning(depths=(2,), widths=(1.0,), levels=3)
    report = fit_table(tiny, tmp_path)
    assert report.fits == {} and set(report.skipped) == {"power", "rosenfeld2020", "pruning2021"}
    assert "no law could be fitted" in report.summary()
    assert "No law could be fitted." in (tmp_path / "quality.md").read_text()
    assert (tmp_path / "fit_error_vs_density.png").is_file()


def test_fittable_says_which_laws_a_table_supports_without_fitting(small_real_like, make):
    verdict = fittable(small_real_like)
    assert verdict["pruning2021"] is None
    assert verdict["rosenfeld2020"] == "the dense table has 6 points; 5 parameters need at least 7"
    assert verdict["power"].startswith("needs >= 4 distinct")
    tiny = fittable(make.pruning(depths=(2,), widths=(1.0,), levels=3), laws=("pruning2021",))
    assert tiny == {"pruning2021": "the pruned table has 2 points; 3 parameters need at least 5"}
