"""The notebook API: `load` a results table as a DataFrame, `fit` the laws into a `Report` that shows itself."""

from __future__ import annotations

import html
import io
import math
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from scaling_sweep.errors import ConfigError
from scaling_sweep.fit import table
from scaling_sweep.fit.api import DEFAULT_LAWS, fit_table
from scaling_sweep.fit.errors import FitError
from scaling_sweep.fit.quality import PRETTY, FitReport, pct


def load(source: str | Path, *, columns: Mapping[str, str] | None = None) -> pd.DataFrame:
    """A sweep directory, a Parquet file or directory, or a CSV as a DataFrame, one row per job x level.

    A sweep directory is read from its rows files unless results.parquet is up to date; `columns` maps
    your column names to ours ({"err": "test_error"}).
    """
    try:
        return table.load(source, columns).reset_index(drop=True)
    except FitError as e:
        raise ConfigError(str(e)) from e


def fit(
    source: Any,
    *,
    laws: Sequence[str] = DEFAULT_LAWS,
    train_on: str | None = None,
    where: str | None = None,
    folds: int = 5,
    bootstrap: int = 200,
    classes: int | None = None,
    columns: Mapping[str, str] | None = None,
    out: str | Path | None = None,
    plots: bool = True,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Fit the laws to a sweep directory, any results table or a DataFrame; the options are `scaling-sweep fit`'s.

    `out` keeps params.json, quality.md and the PNGs in that directory; without it they are written to a
    temporary one and only the images are kept, in memory. Bad input raises a one-line ConfigError.
    """
    with tempfile.TemporaryDirectory(prefix="scaling-sweep-fit-") as scratch:
        where_to = Path(out) if out is not None else Path(scratch)
        try:
            report = fit_table(
                source,
                where_to,
                laws=laws,
                train_on=train_on,
                where=where,
                folds=folds,
                bootstrap=bootstrap,
                classes=classes,
                columns=columns,
                plots=plots,
                seed=seed,
                progress=progress,
            )
        except FitError as e:
            raise ConfigError(str(e)) from e
        images = {p.stem: p.read_bytes() for p in report.paths if p.suffix == ".png"}
    if out is None:
        report.paths = []  # the files went with the temporary directory
    return Report(report, images)


class Report:
    """What `scaling_sweep.fit` returns: verdicts, μ/σ and parameters as tables, and the plots inline.

    `report` is the FitReport behind it (what `scaling-sweep fit` writes); `images` the PNGs by name.
    """

    def __init__(self, report: FitReport, images: Mapping[str, bytes]) -> None:
        self.report = report
        self.images = dict(images)

    @property
    def verdicts(self) -> dict[str, str | None]:
        """law -> ok | unconstrained | misfit: what the data support, to read before any number."""
        return {name: f.verdict for name, f in self.report.fits.items()}

    @property
    def skipped(self) -> dict[str, str]:
        """law -> why this table cannot support it."""
        return dict(self.report.skipped)

    @property
    def paths(self) -> list[Path]:
        """The files written (none unless `fit(..., out=DIR)`)."""
        return list(self.report.paths)

    @property
    def quality(self) -> pd.DataFrame:
        """One row per law: points, μ and σ of the relative error, cross-validated and extrapolated μ/σ,
        the σ seed noise alone explains, and the verdict with its reason."""
        rows = []
        for name, f in self.report.fits.items():
            test = f.judgement.test if f.judgement is not None else {}
            rows.append(
                {
                    "law": name,
                    "points": f.n_points,
                    "mu": f.mu,
                    "sigma": f.sigma,
                    "noise_sigma": (test or {}).get("expected_sigma", math.nan),
                    "cv_mu": f.cv[0] if f.cv else math.nan,
                    "cv_sigma": f.cv[1] if f.cv else math.nan,
                    "extrap_mu": f.extrapolation[0] if f.extrapolation else math.nan,
                    "extrap_sigma": f.extrapolation[1] if f.extrapolation else math.nan,
                    "seed_sigma": math.nan if f.seed_sigma is None else f.seed_sigma,
                    "verdict": f.verdict,
                    "reason": f.verdict_reason,
                }
            )
        return pd.DataFrame(rows).set_index("law") if rows else pd.DataFrame()

    @property
    def params(self) -> pd.DataFrame:
        """One row per fitted parameter: law (and, for per-configuration laws, the configuration's columns),
        value, standard error, 95 % interval (when bootstrapped) and whether the data constrain it."""
        rows, labels = [], {}  # labels: the configuration columns, in their order
        for name, f in self.report.fits.items():
            constrained = f.judgement.constrained if f.judgement is not None else {}
            labels.update(dict.fromkeys(k for c in f.configs for k in c["config"]))
            rows += _param_rows({"law": name}, f.params, f.intervals, constrained)
            rows += [
                {"law": name, "parameter": k, "symbol": PRETTY.get(k, k), "value": v, "pinned": True}
                for k, v in f.pinned.items()
            ]
            for c in f.configs:
                rows += _param_rows(
                    {"law": name, **c["config"]}, c["params"], c["intervals"], c.get("constrained", {})
                )
        frame = pd.DataFrame(rows)
        head = ["law", *labels]
        return frame[[c for c in head if c in frame] + [c for c in frame if c not in head]]

    def summary(self) -> str:
        """What the terminal shows: verdicts first, then the quality table and notes."""
        return self.report.summary()

    def __repr__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        lines = [
            f"<p><b>fit of {html.escape(self.report.source)}</b>: {self.report.rows} rows, "
            f"{self.report.n_points} points</p>"
        ]
        lines += (
            ["<ul>"] + [f"<li>{html.escape(line)}</li>" for line in self.report.verdict_lines()] + ["</ul>"]
        )
        if self.report.fits:
            shown = self.quality.drop(columns=["reason"])
            for col in (
                "mu",
                "sigma",
                "noise_sigma",
                "cv_mu",
                "cv_sigma",
                "extrap_mu",
                "extrap_sigma",
                "seed_sigma",
            ):
                shown[col] = [pct(v, signed=col.endswith("mu")) for v in shown[col]]
            lines.append(shown.to_html(escape=True))
        lines += [
            f"<p>skipped {html.escape(k)}: {html.escape(v)}</p>" for k, v in self.report.skipped.items()
        ]
        if self.images:
            lines.append(
                f"<p><code>.plot()</code> draws the {len(self.images)} figures; <code>.params</code> "
                f"and <code>.quality</code> are DataFrames.</p>"
            )
        return "\n".join(lines)

    def plot(self, *names: str) -> None:
        """Draw the figures (all, or those named: 'fit_error_vs_density', ...) inline in Jupyter.

        Outside IPython they open as matplotlib figures (plt.show()).
        """
        unknown = [n for n in names if n not in self.images]
        if unknown:
            raise ConfigError(
                f"plot({unknown[0]!r}): no such figure; there are: {', '.join(self.images) or 'none'}"
            )
        chosen = {n: self.images[n] for n in (names or self.images)}
        try:
            from IPython import get_ipython
            from IPython.display import Image, display
        except ImportError:
            get_ipython = None
        if get_ipython is not None and get_ipython() is not None:
            for png in chosen.values():
                display(Image(data=png, format="png"))
            return
        _pyplot_show(chosen)


def _param_rows(
    head: dict[str, Any],
    params: Mapping[str, tuple[float, float]],
    intervals: Mapping[str, Any],
    constrained: Mapping[str, Any],
) -> list[dict[str, Any]]:
    rows = []
    for name, (value, stderr) in params.items():
        iv, c = intervals.get(name), constrained.get(name)
        rows.append(
            {
                **head,
                "parameter": name,
                "symbol": PRETTY.get(name, name),
                "value": value,
                "stderr": iv.std if iv is not None else stderr,
                "low": iv.low if iv is not None else math.nan,
                "high": iv.high if iv is not None else math.nan,
                "constrained": None if c is None else c.constrained,
                "why_not": None if c is None or c.constrained else c.why,
                "pinned": False,
            }
        )
    return rows


def _pyplot_show(images: Mapping[str, bytes]) -> None:
    """Each PNG as a pyplot figure of its own pixel size (for scripts and plain Python shells)."""
    import matplotlib.pyplot as plt
    from matplotlib.image import imread

    for name, png in images.items():
        pixels = imread(io.BytesIO(png), format="png")
        height, width = pixels.shape[:2]
        dpi = plt.rcParams["figure.dpi"]
        fig = plt.figure(name, figsize=(width / dpi, height / dpi), dpi=dpi)
        fig.figimage(pixels)
    plt.show()
