"""The results table: one schema, documented, written atomically, readable by pandas, polars and DuckDB."""

from __future__ import annotations

import datetime as dt
import re

import pyarrow.parquet as pq
import pytest

from scaling_sweep.results import COLUMNS, SCHEMA, RowsError, collect, read_rows, write_rows
from tests.conftest import ROOT


def _rows(job: str, levels: int) -> list[dict]:
    out = []
    for level in range(levels):
        row = {c: None for c in SCHEMA.names}
        row.update(
            sweep="s",
            job_id=job,
            level=level,
            seed=0,
            model="mlp",
            width=1.0,
            depth=2,
            dataset="mnist1d",
            data_fraction=1.0,
            n_train=4000,
            density=0.8**level,
            test_error=0.1 + 0.01 * level,
            finished_at=dt.datetime.now(dt.timezone.utc),
            schema_version=1,
        )
        out.append(row)
    return out


def test_results_readme_documents_every_column_in_order():
    text = (ROOT / "results" / "README.md").read_text()
    documented = re.findall(r"^\| `([a-z_0-9]+)` \|", text, flags=re.M)
    assert documented == list(COLUMNS)


def test_rows_round_trip_with_the_schema(tmp_path):
    write_rows(tmp_path / ("a" * 16 + ".parquet"), _rows("a" * 16, 3))
    table = read_rows(tmp_path / ("a" * 16 + ".parquet"))
    assert table.schema.equals(SCHEMA)
    assert table.column("level").to_pylist() == [0, 1, 2]
    assert not list(tmp_path.glob(".*tmp"))  # no temp file left behind


def test_a_truncated_rows_file_raises_rows_error(tmp_path):
    path = tmp_path / ("a" * 16 + ".parquet")
    write_rows(path, _rows("a" * 16, 2))
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(RowsError, match="unreadable"):
        read_rows(path)


def test_collect_sorts_by_job_and_level(tmp_path):
    write_rows(tmp_path / "rows" / ("b" * 16 + ".parquet"), _rows("b" * 16, 2))
    write_rows(tmp_path / "rows" / ("a" * 16 + ".parquet"), _rows("a" * 16, 3))
    table = collect(sorted((tmp_path / "rows").glob("*.parquet")), tmp_path / "results.parquet")
    assert table.num_rows == 5
    back = pq.read_table(tmp_path / "results.parquet")
    assert back.column("job_id").to_pylist() == ["a" * 16] * 3 + ["b" * 16] * 2


def test_rows_are_readable_by_pandas_polars_and_duckdb(tmp_path):
    duckdb = pytest.importorskip("duckdb")
    polars = pytest.importorskip("polars")
    import pandas as pd

    write_rows(tmp_path / "rows" / ("a" * 16 + ".parquet"), _rows("a" * 16, 3))
    write_rows(tmp_path / "rows" / ("b" * 16 + ".parquet"), _rows("b" * 16, 2))
    glob = str(tmp_path / "rows" / "*.parquet")
    assert len(pd.read_parquet(tmp_path / "rows")) == 5
    assert polars.read_parquet(glob).height == 5
    got = duckdb.sql(
        f"SELECT job_id, max(level) AS top FROM '{glob}' GROUP BY job_id ORDER BY job_id"
    ).fetchall()
    assert got == [("a" * 16, 2), ("b" * 16, 1)]
