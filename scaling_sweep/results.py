"""The results table: its Parquet schema (the one place it is defined), the atomic row writer, reader and collect."""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from scaling_sweep.atomic import atomic_open, digest_problem, read_digests, sidecar, write_digests

SCHEMA_VERSION = 1

# Column name -> (type, meaning). results/README.md documents the same list; a test keeps them in step.
COLUMNS: dict[str, tuple[pa.DataType, str]] = {
    # identity
    "sweep": (pa.string(), "sweep name"),
    "job_id": (pa.string(), "16 hex digits of sha256 over the job's canonical training config"),
    "level": (pa.int32(), "IMP level: 0 is the dense run; one-shot jobs have level 0 (dense) and 1 (pruned)"),
    "seed": (pa.int64(), "training seed"),
    # axes
    "model": (pa.string(), "model name (mlp, cnn1d, cifar_resnet, cifar_vgg)"),
    "width": (pa.float64(), "width multiplier"),
    "depth": (pa.int32(), "depth as configured (layers, or 6n+2 for cifar_resnet)"),
    "dataset": (pa.string(), "dataset name"),
    "data_fraction": (pa.float64(), "fraction of the training set used, in (0, 1]"),
    "n_train": (pa.int64(), "training examples actually used"),
    "density": (pa.float64(), "measured fraction of prunable weights that are non-zero, in (0, 1]"),
    "prune_method": (pa.string(), "imp or oneshot"),
    "rewind": (pa.string(), "init, lr, step:K or epoch:K"),
    # sizes
    "params_total": (pa.int64(), "all parameters"),
    "params_prunable": (pa.int64(), "parameters subject to pruning (Conv/Linear weights)"),
    "params_nonzero": (pa.int64(), "non-zero parameters after pruning (all parameters counted)"),
    # metrics
    "test_error": (pa.float64(), "test error, a fraction in [0, 1]"),
    "test_loss": (pa.float64(), "mean test cross-entropy"),
    "train_error": (pa.float64(), "error on the training subset, a fraction in [0, 1]"),
    "train_loss": (pa.float64(), "mean training cross-entropy on the training subset"),
    "epochs": (pa.float64(), "epochs trained at this level"),
    "steps": (pa.int64(), "optimizer steps taken at this level"),
    "budget_unit": (pa.string(), "epochs or steps: which one the config fixed"),
    # run
    "wall_s": (pa.float64(), "seconds spent training and evaluating this level"),
    "device": (pa.string(), "device the level ran on (cpu, cuda:0, ...)"),
    "host": (pa.string(), "host name"),
    "finished_at": (pa.timestamp("us", tz="UTC"), "when the level finished"),
    # provenance
    "config_json": (pa.string(), "the job's canonical training config (JSON)"),
    "code_version": (pa.string(), "scaling-sweep version (+git commit when known)"),
    "torch_version": (pa.string(), "torch version"),
    "schema_version": (pa.int32(), "version of this schema"),
}

SCHEMA = pa.schema([pa.field(name, typ) for name, (typ, _) in COLUMNS.items()])


class RowsError(ValueError):
    """A rows file that cannot be read back (truncated, corrupt, wrong schema)."""


def to_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Rows (dicts with exactly the schema's columns) to a table of the schema."""
    missing = [c for c in SCHEMA.names if rows and c not in rows[0]]
    if missing:
        raise ValueError(f"row is missing columns {missing}")
    return pa.Table.from_pylist([{c: r[c] for c in SCHEMA.names} for r in rows], schema=SCHEMA)


def write_rows(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write all rows of one job, replacing the file atomically; its sha256 goes to `.<file>.sha256`.

    The digest is recorded before the file is replaced, next to the one of the file it replaces,
    so a crash between the two writes leaves a file that still verifies.
    """
    sink = pa.BufferOutputStream()
    pq.write_table(to_table(rows), sink)
    data = sink.getvalue().to_pybytes()
    side = sidecar(path)
    write_digests(side, [hashlib.sha256(data).hexdigest(), *(read_digests(side) or [])[:1]])
    with atomic_open(path, "wb") as f:
        f.write(data)


def check_rows(path: str | os.PathLike) -> tuple[int | None, str]:
    """(row count, "") for a trustworthy rows file, else (None, why not) in a few words.

    Trustworthy: the content has the digest recorded when it was written, the Parquet footer is
    whole, and every row belongs to the job the file is named after.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() < 12:
                return None, "truncated or unreadable rows file"
            f.seek(-4, os.SEEK_END)
            if f.read(4) != b"PAR1":
                return None, "truncated or unreadable rows file"
        problem = digest_problem(path)
        if problem:
            return None, f"damaged rows file: {problem}"
        meta = pq.read_metadata(path)
        jobs = _job_ids(path, meta)
    except (OSError, pa.ArrowException, ValueError):
        return None, "truncated or unreadable rows file"
    if jobs and jobs != {path.stem}:
        return None, f"holds rows of job {', '.join(sorted(jobs))}, not of {path.stem} its name says"
    return meta.num_rows, ""


def _job_ids(path: Path, meta: pq.FileMetaData) -> set[str]:
    # The column statistics answer without reading the rows; files without them are read.
    i = meta.schema.names.index("job_id") if "job_id" in meta.schema.names else None
    if i is None:
        return set()
    ids: set[str] = set()
    for g in range(meta.num_row_groups):
        stats = meta.row_group(g).column(i).statistics
        if stats is None or not stats.has_min_max:
            return set(pq.read_table(path, columns=["job_id"]).column(0).to_pylist()) - {None}
        ids |= {stats.min, stats.max}
    return ids


def read_rows(path: str | os.PathLike) -> pa.Table:
    """Read one job's rows file; raise RowsError if it is damaged, unreadable or not of this schema."""
    n, problem = check_rows(path)
    if problem:
        raise RowsError(f"{path}: {problem}")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as e:
        raise RowsError(f"{path}: unreadable rows file ({e})") from e
    if table.schema.names != SCHEMA.names:
        raise RowsError(f"{path}: columns {table.schema.names} do not match schema v{SCHEMA_VERSION}")
    return table


def _warn(line: str) -> None:
    print(f"warning: {line}", file=sys.stderr, flush=True)


def read_good_rows(
    paths: Iterable[str | os.PathLike], report: Callable[[str], None] = _warn
) -> list[pa.Table]:
    """Every readable rows file's table; each damaged one is left out with one line through `report`."""
    tables = []
    for p in sorted(map(str, paths)):
        try:
            tables.append(read_rows(p))
        except RowsError as e:
            report(f"skipped {e}; `scaling-sweep resume` reruns its job from the checkpoint")
    return tables


def collect(
    paths: Iterable[str | os.PathLike], out: str | os.PathLike, report: Callable[[str], None] = _warn
) -> pa.Table:
    """Concatenate rows files into one table sorted by (job_id, level), written atomically to `out`.

    A damaged rows file is skipped (one line through `report`), so one bad file cannot stop the rest.
    """
    tables = read_good_rows(paths, report)
    table = pa.concat_tables(tables) if tables else SCHEMA.empty_table()
    table = table.sort_by([("job_id", "ascending"), ("level", "ascending")])
    with atomic_open(out, "wb") as f:
        pq.write_table(table, f)
    return table


def read_table(path: str | os.PathLike) -> pa.Table:
    """Read `results.parquet`, a rows directory, or a CSV with the same columns."""
    path = Path(path)
    if path.is_dir():
        rows = path / "rows" if (path / "rows").is_dir() else path
        return pa.concat_tables(read_good_rows(rows.glob("*.parquet")) or [SCHEMA.empty_table()])
    if path.suffix == ".csv":
        import pyarrow.csv as pcsv

        return pcsv.read_csv(path)
    return pq.read_table(path)
