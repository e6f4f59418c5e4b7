"""The two entry points the CLI calls: fit_table (laws, quality, plots) and plot_table (measured curves only)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from scaling_sweep.fit import plots as figures
from scaling_sweep.fit.bootstrap import Resampler
from scaling_sweep.fit.errors import FitError
from scaling_sweep.fit.fitting import fit_task
from scaling_sweep.fit.laws import SETUPS
from scaling_sweep.fit.problem import Options, Skip, eps0_of
from scaling_sweep.fit.quality import FitReport, LawFit
from scaling_sweep.fit.table import Points, load, prepare, query
from scaling_sweep.fit.verdict import judge, regions

DEFAULT_LAWS = ("power", "rosenfeld2020", "pruning2021")
LAWS = tuple(SETUPS)


def fit_table(
    source: Any,
    out_dir: Path | str,
    *,
    laws: Sequence[str] = DEFAULT_LAWS,
    train_on: str | None = None,
    folds: int = 5,
    columns: Mapping[str, str] | None = None,
    progress: Callable[[str], None] | None = None,
    where: str | None = None,
    classes: int | None = None,
    average_seeds: bool = True,
    n_starts: int = 8,
    seed: int = 0,
    power_axis: str | None = None,
    plots: bool = True,
    bootstrap: int = 200,
) -> FitReport:
    """Fit the laws the table supports; write params.json, quality.md and the PNGs to out_dir.

    A law the table cannot support is skipped with its reason in the report, unless it is the only
    law asked for: then FitError says why. `train_on` (a pandas query such as
    "width <= 0.5 and data_fraction <= 0.25") adds extrapolation μ/σ on the points it leaves out;
    `where` filters the table first; `folds=0` turns cross-validation off; `bootstrap` replicates give each
    parameter a 95 % interval (0: none). Every law gets a verdict (verdict.judge) saying what the data support.
    """
    say = progress or _quiet
    laws = _check_laws(laws)
    if folds == 1 or folds < 0:
        raise FitError(f"folds={folds}: use 0 (no cross-validation) or at least 2")
    if n_starts < 1:
        raise FitError(f"n_starts={n_starts}: at least 1 start is needed")
    if power_axis not in (None, "n_train", "params_total"):
        raise FitError(f"power_axis={power_axis!r}: choose n_train or params_total")
    if classes is not None and classes < 2:
        raise FitError(f"classes={classes}: a classifier needs at least 2 classes")
    if bootstrap < 0 or bootstrap == 1:
        raise FitError(f"bootstrap={bootstrap}: use 0 (no intervals) or at least 2 replicates")
    say("reading the table")
    points = prepare(load(source, columns), where=where, average_seeds=average_seeds)
    if train_on:
        query(points.frame, train_on, "train_on")  # a typo should fail before minutes of fitting
    opts = Options(classes=classes, power_axis=power_axis)
    eps0 = _chance(points, classes)
    resampler = Resampler(points)
    pruned = "density" in points.frame and bool((~points.frame["dense"]).any())
    reach = regions(points, eps0) if pruned else None

    fits: dict[str, LawFit] = {}
    skipped: dict[str, str] = {}
    for law in laws:
        try:
            tasks = SETUPS[law](points, opts)
        except Skip as s:
            if len(laws) == 1:
                raise FitError(f"{law} cannot be fit on this table: {s}") from None
            skipped[law] = str(s)
            continue
        hint = None
        for task in tasks:
            fits[task.entry] = fit_task(
                task,
                folds=folds,
                train_on=train_on,
                n_starts=n_starts,
                seed=seed,
                say=say,
                hint=hint,
                resampler=resampler,
                replicates=bootstrap,
            )
            judge(fits[task.entry], points, eps0, reach)
            # The joint pruning law comes first; its parameters are a good start for each configuration's own.
            hint = {k: v for k, (v, _) in fits[task.entry].params.items()} or None

    report = FitReport(
        fits=fits,
        skipped=skipped,
        source=_describe(source),
        rows=points.rows,
        n_points=len(points.frame),
        family=points.family,
        notes=points.notes,
        regions=reach,
        chance=eps0,
        options={
            "laws": list(laws),
            "train_on": train_on,
            "folds": folds,
            "where": where,
            "average_seeds": average_seeds,
            "n_starts": n_starts,
            "seed": seed,
            "columns": dict(columns or {}),
            "bootstrap": bootstrap,
        },
    )
    out_dir = Path(out_dir)
    say(f"writing {out_dir}")
    report.paths = report.write(out_dir)
    if plots:
        report.paths += figures.fit_figures(points, fits, out_dir, say, chance=eps0)
    return report


def plot_table(
    source: Any,
    out_dir: Path | str,
    *,
    columns: Mapping[str, str] | None = None,
    progress: Callable[[str], None] | None = None,
    where: str | None = None,
    classes: int | None = None,
) -> list[Path]:
    """Draw the measured curves (seed means with seed-spread bars), no fit; return the PNG paths written."""
    say = progress or _quiet
    say("reading the table")
    points = prepare(load(source, columns), where=where)
    return figures.measured_figures(points, Path(out_dir), say, chance=_chance(points, classes))


def fittable(
    source: Any,
    *,
    laws: Sequence[str] = DEFAULT_LAWS,
    columns: Mapping[str, str] | None = None,
    where: str | None = None,
    classes: int | None = None,
) -> dict[str, str | None]:
    """Which laws the table supports, without fitting: law -> None, or the one-line reason it would be skipped.

    Cheap (no least squares), for deciding whether to run fit_table at all; bad input still raises FitError.
    """
    points = prepare(load(source, columns), where=where)
    out: dict[str, str | None] = {}
    for law in _check_laws(laws):
        try:
            SETUPS[law](points, Options(classes=classes))
            out[law] = None
        except Skip as s:
            out[law] = str(s)
    return out


def fit_points(
    source: Any,
    *,
    columns: Mapping[str, str] | None = None,
    where: str | None = None,
    average_seeds: bool = True,
) -> Points:
    """The checked, seed-averaged points a fit would use (for notebooks and tests)."""
    return prepare(load(source, columns), where=where, average_seeds=average_seeds)


def _chance(points: Points, classes: int | None) -> float | None:
    """ε0 = 1 − 1/classes from classes= or the dataset's name; None when neither says."""
    try:
        return eps0_of(points, Options(classes=classes))
    except Skip:
        return None


def _check_laws(laws: Sequence[str] | str) -> tuple[str, ...]:
    laws = (laws,) if isinstance(laws, str) else tuple(laws)
    unknown = [law for law in laws if law not in SETUPS]
    if unknown:
        raise FitError(f"unknown law {unknown[0]!r}; known: {', '.join(SETUPS)}")
    if not laws:
        raise FitError(f"no law asked for; known: {', '.join(SETUPS)}")
    return laws


def _describe(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, pd.DataFrame):
        return "a DataFrame"
    if isinstance(source, pa.Table):
        return "a pyarrow Table"
    return type(source).__name__


def _quiet(_: str) -> None:
    pass
