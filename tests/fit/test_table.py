"""Reading any source into points: sweep directories, Parquet, CSV, tables, column maps, seed means, bad input."""

import datetime as dt
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scaling_sweep.fit import FitError, fit_points, fit_table
from scaling_sweep.results import COLUMNS, write_rows


def full_rows(df: pd.DataFrame) -> list[dict]:
    """Rows with every column of the results schema, as the trainer would write them."""
    defaults = {pa.string(): "x", pa.int32(): 0, pa.int64(): 0, pa.float64(): 0.0}
    rows = []
    for rec in df.to_dict("records"):
        row = {}
        for name, (typ, _) in COLUMNS.items():
            if name in rec:
                row[name] = int(rec[name]) if typ in (pa.int32(), pa.int64()) else rec[name]
            elif name == "finished_at":
                row[name] = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
            else:
                row[name] = defaults[typ]
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory, make):
    """A sweep directory with one rows file per job, as run_job leaves it."""
    root = tmp_path_factory.mktemp("sweep")
    df = make.pruning(seeds=2, depths=(2,), widths=(0.5, 1.0), levels=8)
    df = df.assign(job_id=[f"{w}-{s}" for w, s in zip(df["width"], df["seed"])])
    (root / "rows").mkdir()
    for job, rows in df.groupby("job_id"):
        write_rows(root / "rows" / f"{job}.parquet", full_rows(rows))
    return root, df


def test_sweep_directory_rows_parquet_csv_and_tables_give_the_same_points(sweep_dir, tmp_path):
    root, df = sweep_dir
    from_rows = fit_points(root).frame
    pq.write_table(pa.Table.from_pandas(df), tmp_path / "t.parquet")
    df.to_csv(tmp_path / "t.csv", index=False)
    for source in (
        tmp_path / "t.parquet",
        tmp_path / "t.csv",
        str(tmp_path / "t.csv"),
        df,
        pa.Table.from_pandas(df),
    ):
        frame = fit_points(source).frame
        assert len(frame) == len(from_rows) == 2 * 8
        np.testing.assert_allclose(frame["test_error"], from_rows["test_error"], rtol=1e-12)


def test_sweep_directory_prefers_rows_newer_than_its_collected_table(sweep_dir, tmp_path):
    root, df = sweep_dir
    copy = tmp_path / "sweep"
    (copy / "rows").mkdir(parents=True)
    one_job = df[df["job_id"] == df["job_id"].iloc[0]]
    pq.write_table(pa.Table.from_pylist(full_rows(one_job)), copy / "results.parquet")
    assert len(fit_points(copy).frame) == 8  # only results.parquet exists
    for job, rows in df.groupby("job_id"):
        write_rows(copy / "rows" / f"{job}.parquet", full_rows(rows))
    os.utime(copy / "results.parquet", (1, 1))  # collected before the rows landed
    assert len(fit_points(copy).frame) == 16


def test_seeds_are_averaged_and_their_spread_is_the_noise_floor(make):
    df = make.pruning(seed=3, noise=0.02, seeds=4, depths=(2,), widths=(1.0, 2.0), levels=10)
    frame = fit_points(df).frame
    assert len(frame) == 2 * 10 and (frame["seeds"] == 4).all()
    pooled = float(np.sqrt((frame["seed_rel"] ** 2).mean()))
    assert pooled == pytest.approx(0.02, rel=0.25)
    raw = fit_points(df, average_seeds=False).frame
    assert len(raw) == 80 and (raw["runs"] == 1).all()


def test_column_map_renames_a_foreign_table(make):
    df = make.pruning(depths=(2,), widths=(1.0,), levels=6).rename(
        columns={"test_error": "err", "density": "d"}
    )
    frame = fit_points(df, columns={"err": "test_error", "d": "density"}).frame
    assert frame["density"].min() == pytest.approx(0.8**5)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda df: df.drop(columns="test_error"), "needs column(s) test_error"),
        (lambda df: df.assign(test_error=df["test_error"].where(df["level"] != 3, 0.0)), "<= 0 in 1 of"),
        (lambda df: df.assign(test_error=df["test_error"].where(df["level"] != 3, -0.1)), "<= 0 in 1 of"),
        (lambda df: df.assign(test_error=df["test_error"] * 100), "divide percentages by 100"),
        (lambda df: df.assign(test_error=df["test_error"].where(df["level"] != 2)), "missing in 1 of"),
        (
            lambda df: df.assign(dataset=np.where(df["level"] > 2, "cifar10", "cifar100")),
            "mixes dataset values",
        ),
        (lambda df: df.assign(density="dense"), "column density must be numeric"),
        (lambda df: df.assign(density=df["density"] * 2), "density must lie in (0, 1]"),
    ],
)
def test_bad_tables_fail_with_one_line_naming_the_problem(make, mutate, message):
    df = mutate(make.pruning(depths=(2,), widths=(1.0,), levels=6))
    with pytest.raises(FitError) as info:
        fit_points(df)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_paths_maps_and_filters_fail_with_one_line(make, tmp_path):
    df = make.pruning(depths=(2,), widths=(1.0,), levels=6)
    cases = [
        (lambda: fit_points(tmp_path / "nope"), "no such file"),
        (lambda: fit_points(tmp_path), "neither results.parquet nor rows"),
        (lambda: fit_points(df, columns={"err": "test_error"}), "maps 'err', which the table lacks"),
        (lambda: fit_points(df, where="width >"), "not a valid filter"),
        (lambda: fit_points(df, where="width > 100"), "no rows matching"),
        (
            lambda: fit_table(df, tmp_path, train_on="colour == 1"),
            "train_on='colour == 1' is not a valid filter",
        ),
        (lambda: fit_table(df, tmp_path, laws=("moore",)), "unknown law 'moore'"),
        (lambda: fit_table(df, tmp_path, folds=1), "folds=1"),
        (lambda: fit_table(df, tmp_path, power_axis="width"), "power_axis='width'"),
        (lambda: fit_points(42), "cannot read a table from int"),
    ]
    for call, message in cases:
        with pytest.raises(FitError) as info:
            call()
        assert message in str(info.value)
        assert "\n" not in str(info.value)


def test_repeated_dense_rows_of_one_shot_jobs_are_averaged_with_a_note(make):
    df = make.pruning(depths=(2,), widths=(1.0,), levels=4)
    dense = df[df["level"] == 0]
    repeated = pd.concat([df, dense, dense])  # three one-shot jobs each trained the same dense network
    points = fit_points(repeated)
    assert len(points.frame) == 4 and points.rows == len(repeated)
    assert points.frame["seeds"].max() == 1  # one seed, however many copies of its dense row
    assert "share (configuration, density, seed)" in points.notes[0]
