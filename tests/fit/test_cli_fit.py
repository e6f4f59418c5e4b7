"""`scaling-sweep fit` on any results table: a CSV or Parquet file or a directory of Parquet files, with mapped
column names and an output directory of one's choice."""

from __future__ import annotations

import json

import pytest

from scaling_sweep.cli import main


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err


def _foreign_table(make):
    """A table with someone else's column names: the 2021 law over 3 widths x 2 seeds."""
    table = make.pruning(seed=5, noise=0.01, seeds=2, depths=(3,), levels=20, rate=0.3)
    return table.rename(columns={"test_error": "err", "density": "sparsity_kept"})


def test_fit_reads_a_csv_with_mapped_columns_and_writes_where_told(capsys, tmp_path, make):
    _foreign_table(make).to_csv(tmp_path / "theirs.csv", index=False)
    out = tmp_path / "my-fit"
    code, text = run_cli(
        capsys,
        "fit",
        str(tmp_path / "theirs.csv"),
        "--column",
        "test_error=err",
        "--column",
        "density=sparsity_kept",
        "--out",
        str(out),
        "fit.folds=0",
        "fit.bootstrap=20",
    )
    assert code == 0, text
    assert f"wrote {out / 'params.json'}" in text and f"wrote {out / 'quality.md'}" in text
    params = json.loads((out / "params.json").read_text())
    assert params["laws"]["pruning2021"]["verdict"] in ("ok", "unconstrained", "misfit")
    assert params["options"]["folds"] == 0 and params["laws"]["pruning2021"]["cv"] is None  # 0 means none
    assert params["options"]["bootstrap"] == 20
    assert text.index("pruning2021: ") < text.index("law ")  # the verdict comes before the numbers


def test_fit_reads_a_directory_of_parquet_files_and_writes_fit_beside_it(capsys, tmp_path, make):
    table = make.pruning(seed=6, noise=0.01, seeds=2, depths=(3,), levels=20, rate=0.3)
    parts = tmp_path / "parts"
    parts.mkdir()
    for i, (_, rows) in enumerate(table.groupby("width")):
        rows.to_parquet(parts / f"part-{i}.parquet")
    code, text = run_cli(
        capsys, "fit", str(parts), "fit.laws=[pruning2021]", "fit.folds=0", "fit.bootstrap=0"
    )
    assert code == 0, text
    assert (parts / "fit" / "params.json").is_file() and (
        parts / "fit" / "fit_error_vs_density.png"
    ).is_file()
    assert (
        json.loads((parts / "fit" / "params.json").read_text())["points"]
        == table.groupby(["width", "level"]).ngroups
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["fit", "/no/such/table.csv"], "/no/such/table.csv: no such file or directory"),
        (["fit", "TABLE", "--column", "test_error"], "--column 'test_error': write OURS=THEIRS"),
        (["fit", "TABLE", "model.width=2"], "takes only fit.* overrides"),
        (["fit", "TABLE", "--column", "test_error=nope"], "columns= maps 'nope', which the table lacks"),
    ],
)
def test_fit_of_a_table_refuses_bad_input_with_one_line(capsys, tmp_path, make, argv, message):
    _foreign_table(make).to_csv(tmp_path / "t.csv", index=False)
    code, text = run_cli(capsys, *[str(tmp_path / "t.csv") if a == "TABLE" else a for a in argv])
    assert code == 2
    lines = text.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], text
