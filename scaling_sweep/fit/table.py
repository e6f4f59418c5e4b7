"""Reading a results table from any source, checking it, and averaging seeds into the points the laws fit."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from scaling_sweep.expr import ExprError
from scaling_sweep.expr import parse as parse_expr
from scaling_sweep.fit.errors import FitError
from scaling_sweep.results import read_table

# What separates one training configuration from another. Only those present in a table are used, so a
# hand-made CSV with just (width, n_train, density, test_error) works too.
CONFIG_COLUMNS = ("dataset", "model", "prune_method", "rewind", "depth", "width", "data_fraction", "n_train")
# Configurations that no single law should mix: a different dataset or architecture is a different law.
FAMILY_COLUMNS = ("dataset", "model", "prune_method", "rewind")
NUMERIC_COLUMNS = (
    "test_error",
    "density",
    "level",
    "width",
    "depth",
    "data_fraction",
    "n_train",
    "params_total",
    "seed",
)


@dataclass
class Points:
    """Seed-averaged points: one row per (configuration, density), plus what was done to get there."""

    # config columns, density, dense, test_error, config (id), eps_np (its mean dense error), seeds (runs at this
    # point), seed_std and seed_rel (their spread), runs (how many runs this row averages)
    frame: pd.DataFrame
    # one row per run at a point: row (its frame row), config, trajectory (the seed, or the run's rank at its
    # point when the table has no seed column), dense, test_error. What the bootstrap resamples.
    runs: pd.DataFrame
    config_columns: list[str]  # the CONFIG_COLUMNS this table has
    family: dict[str, Any]  # the one value of each FAMILY_COLUMNS present
    rows: int  # rows of the table after `where`
    notes: list[str] = field(default_factory=list)

    def has(self, column: str) -> bool:
        return column in self.frame.columns


def load(source: Any, columns: Mapping[str, str] | None = None) -> pd.DataFrame:
    """A path (Parquet file, sweep directory, CSV), pyarrow Table or DataFrame as a DataFrame in our column names."""
    if isinstance(source, pd.DataFrame):
        df = source.copy()
    elif isinstance(source, pa.Table):
        df = source.to_pandas()
    elif isinstance(source, (str, os.PathLike)):
        df = _read_path(Path(source)).to_pandas()
    else:
        raise FitError(
            f"cannot read a table from {type(source).__name__}: pass a path, a pyarrow Table or a DataFrame"
        )
    return _rename(df, columns or {})


def _read_path(path: Path) -> pa.Table:
    if not path.exists():
        raise FitError(
            f"{path}: no such file or directory; pass a sweep directory, a Parquet file, a directory of "
            f"Parquet files or a CSV"
        )
    if path.is_dir():
        rows_dir, collected = path / "rows", path / "results.parquet"
        has_rows = rows_dir.is_dir() and any(rows_dir.glob("*.parquet"))
        own = sorted(path.glob("*.parquet"))
        if not has_rows and not collected.is_file() and own:
            return _read_parquet_files(own)
        # results.parquet is a snapshot written by `collect`; rows/ is the truth. Renaming a rows file into
        # place bumps the directory's mtime, so a snapshot older than rows/ may miss jobs: read rows then.
        if collected.is_file() and (not has_rows or collected.stat().st_mtime >= rows_dir.stat().st_mtime):
            path = collected
        elif not has_rows:
            raise FitError(
                f"{path}: holds neither results.parquet nor rows/*.parquet; is it a sweep directory?"
            )
    try:
        return read_table(path)
    except (OSError, ValueError, pa.ArrowException) as e:
        raise FitError(f"{path}: cannot read the table ({str(e).splitlines()[0]})") from e


def _read_parquet_files(paths: list[Path]) -> pa.Table:
    """A directory of someone's Parquet files (not a sweep's): their union, columns promoted to a common type."""
    import pyarrow.parquet as pq

    try:
        return pa.concat_tables([pq.read_table(p) for p in paths], promote_options="permissive")
    except (OSError, ValueError, pa.ArrowException) as e:
        raise FitError(
            f"{paths[0].parent}: cannot read its Parquet files as one table ({str(e).splitlines()[0]})"
        ) from e


def _rename(df: pd.DataFrame, columns: Mapping[str, str]) -> pd.DataFrame:
    unknown = [c for c in columns if c not in df.columns]
    if unknown:
        raise FitError(f"columns= maps {unknown[0]!r}, which the table lacks (it has: {_names(df)})")
    clash = [
        ours
        for theirs, ours in columns.items()
        if ours in df.columns and ours != theirs and ours not in columns
    ]
    if clash:
        raise FitError(f"columns= maps onto {clash[0]!r}, which the table already has; drop one of the two")
    return df.rename(columns=dict(columns))


def _names(df: pd.DataFrame, limit: int = 12) -> str:
    names = list(map(str, df.columns))
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def require(df: pd.DataFrame, needed: tuple[str, ...], what: str) -> None:
    """Raise FitError naming the first of `needed` that the table lacks."""
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise FitError(
            f"{what} needs column(s) {', '.join(missing)}; the table has: {_names(df)} "
            f"(map yours with columns={{'your_name': '{missing[0]}'}})"
        )


def prepare(df: pd.DataFrame, *, where: str | None = None, average_seeds: bool = True) -> Points:
    """Check the table and reduce it to points: seeds averaged per (configuration, density) unless told not to."""
    require(df, ("test_error",), "fitting")
    df = _numeric(df)
    if where:
        df = query(df, where, "where")
    if df.empty:
        raise FitError("the table has no rows" + (f" matching where={where!r}" if where else ""))
    _check_errors(df["test_error"])
    if "density" in df.columns and ((df["density"] <= 0) | (df["density"] > 1) | df["density"].isna()).any():
        raise FitError("density must lie in (0, 1] on every row (the fraction of weights kept)")
    family = _family(df)
    notes: list[str] = []
    n_rows = len(df)

    config_cols = [c for c in CONFIG_COLUMNS if c in df.columns]
    df = df.assign(density=df["density"] if "density" in df.columns else 1.0)
    if "level" in df.columns:
        dense = df["level"] == 0
    else:
        dense = df["density"] >= 1.0 - 1e-9
    # Seeds at one IMP level share a density exactly; rounding only absorbs float noise from CSV round trips.
    df = df.assign(dense=dense, _dkey=np.round(np.log(df["density"].clip(lower=1e-300)), 9))
    df = df.assign(config=df.groupby(config_cols, dropna=False, sort=True).ngroup() if config_cols else 0)
    keys = ["config", "_dkey"]

    if "seed" in df.columns:
        dup = df.duplicated(keys + ["seed"], keep=False)
        if dup.any():
            notes.append(
                f"{int(dup.sum())} rows share (configuration, density, seed) and were averaged "
                f"(one-shot jobs repeat the dense run; otherwise the table varies a column the fit "
                f"does not know: filter it with where=)"
            )
            df = _mean_by(df, keys + ["seed"])
    # Seed-to-seed spread of one run, relative to the point's mean: the noise floor a fit's σ compares to.
    stats = df.groupby(keys)["test_error"].agg(seeds="count", seed_std="std", _mean="mean").reset_index()
    stats = stats.assign(seed_rel=stats["seed_std"] / stats["_mean"]).drop(columns="_mean")
    # A run is one trajectory (a seed) of one configuration: its rows share the seed's noise and, through its
    # dense row, the ε_np of every pruned point. The bootstrap resamples whole trajectories.
    df = df.assign(trajectory=df["seed"] if "seed" in df.columns else df.groupby(keys).cumcount())
    if average_seeds:
        frame = _mean_by(df, keys).merge(stats, on=keys)
        frame = frame.assign(runs=frame["seeds"])
        run_keys = keys
    else:
        frame = df.merge(stats, on=keys).assign(runs=1)
        run_keys = keys + ["trajectory"]
    eps_np = frame[frame["dense"]].groupby("config")["test_error"].mean().rename("eps_np")
    frame = frame.merge(eps_np, on="config", how="left")
    frame = frame.sort_values(["config", "density"], ascending=[True, False], ignore_index=True)
    rows = frame[run_keys].assign(row=np.arange(len(frame)))
    runs = df[run_keys + (["trajectory"] if average_seeds else []) + ["dense", "test_error"]].merge(
        rows, on=run_keys
    )
    runs = runs[["row", "config", "trajectory", "dense", "test_error"]].sort_values("row", ignore_index=True)
    frame = frame.drop(columns=["_dkey"])
    return Points(frame=frame, runs=runs, config_columns=config_cols, family=family, rows=n_rows, notes=notes)


def query(df: pd.DataFrame, expr: str, option: str) -> pd.DataFrame:
    """The rows of df where the filter `expr` holds, in the language of scaling_sweep.expr over the
    table's columns (never pandas' query, whose `@` and attribute access run code); one-line FitError
    when the expression is not valid on this table."""
    columns = {str(c): df[c] for c in df.columns}
    try:
        mask = parse_expr(expr).evaluate(columns)
    except ExprError as e:
        raise FitError(
            f"{option}={expr!r} is not a valid filter on this table ({e}); columns: {_names(df)}"
        ) from e
    if isinstance(mask, (bool, np.bool_)):  # a filter without columns keeps all rows or none
        return df if mask else df.iloc[:0]
    if not isinstance(mask, pd.Series) or str(mask.dtype) not in ("bool", "boolean"):
        raise FitError(f"{option}={expr!r} must be a boolean condition such as 'width <= 0.5'")
    return df[mask.fillna(False).astype(bool)]


def _numeric(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for col in NUMERIC_COLUMNS:
        if col in out.columns:
            try:
                out[col] = pd.to_numeric(out[col]).astype(float)
            except (ValueError, TypeError) as e:
                raise FitError(f"column {col} must be numeric ({str(e).splitlines()[0]})") from e
    return out


def _check_errors(err: pd.Series) -> None:
    bad = err.isna()
    if bad.any():
        raise FitError(
            f"test_error is missing in {int(bad.sum())} of {len(err)} rows; drop them (where=) or fix the table"
        )
    bad = err <= 0
    if bad.any():
        raise FitError(
            f"test_error is <= 0 in {int(bad.sum())} of {len(err)} rows; the fit divides by the error, "
            f"so drop those rows (e.g. where='test_error > 0')"
        )
    if (err > 1).any():
        raise FitError(
            f"test_error reaches {err.max():g}; errors are fractions in (0, 1]: divide percentages by 100"
        )


def _family(df: pd.DataFrame) -> dict[str, Any]:
    family: dict[str, Any] = {}
    for col in FAMILY_COLUMNS:
        if col in df.columns:
            values = sorted(map(str, df[col].dropna().unique()))
            if len(values) > 1:
                raise FitError(
                    f"the table mixes {col} values ({', '.join(values)}); fit one at a time, "
                    f"e.g. where=\"{col} == '{values[0]}'\""
                )
            family[col] = df[col].dropna().iloc[0] if values else None
    return family


def _mean_by(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean of numeric columns, first value of the rest, per group of `keys`."""
    numeric = [
        c
        for c in df.columns
        if c not in keys and pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])
    ]
    rest = [c for c in df.columns if c not in keys and c not in numeric]
    grouped = df.groupby(keys, sort=False, dropna=False)
    return grouped[numeric].mean().join(grouped[rest].first()).reset_index()
