"""Growing a sweep: more grid values and seeds run only the new jobs; deeper pruning continues each trajectory from its last level."""

from __future__ import annotations

import pyarrow.parquet as pq
import yaml

from scaling_sweep.cli import main

QUICK = ["--no-progress", "sweep=smoke", "train.epochs=1", "fit.enabled=false"]


def cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err


def rows(sweep) -> list[dict]:
    return pq.read_table(sweep / "results.parquet").to_pylist()


def test_added_seeds_and_values_run_only_the_new_jobs_and_the_history_is_appended(capsys, tmp_path):
    sweep = tmp_path / "smoke"
    code, out = cli(capsys, "run", *QUICK, f"out_dir={tmp_path}")
    assert code == 0 and "4 jobs to run" in out, out
    first_text = (sweep / "sweep.yaml").read_text()
    before = {(r["job_id"], r["level"]): r for r in rows(sweep)}
    assert len(before) == 4 * 3

    # `run` again with one more seed: the 4 old jobs are skipped, the 4 new ones train.
    code, out = cli(capsys, "run", *QUICK, f"out_dir={tmp_path}", "grid.seed=[0,1]")
    assert code == 0, out
    assert "extended" in out and "4 jobs to run (4 done left alone)" in out, out
    text = (sweep / "sweep.yaml").read_text()
    assert text.startswith(first_text)  # the past is never rewritten
    history = yaml.safe_load(text)["extensions"]
    assert len(history) == 1 and history[0]["grid"]["seed"] == [0, 1]
    after = {(r["job_id"], r["level"]): r for r in rows(sweep)}
    assert len(after) == 8 * 3
    for key, row in before.items():  # finished jobs untouched, to the timestamp
        assert after[key] == row

    # `resume DIR` with one more width: only its jobs (2 fractions x 2 seeds) are new.
    code, out = cli(capsys, "resume", "--no-progress", str(sweep), "grid.model.width=[0.25,0.5,1.0]")
    assert code == 0, out
    assert len(yaml.safe_load((sweep / "sweep.yaml").read_text())["extensions"]) == 2
    assert len({r["job_id"] for r in rows(sweep)}) == 12
    code, out = cli(capsys, "status", str(sweep))
    assert "done 12" in out and "to run 0" in out

    # Training settings of existing jobs still may not change: one line naming the key.
    code, out = cli(capsys, "resume", str(sweep), "train.lr=0.5")
    assert code == 2 and "train.lr: 0.2 -> 0.5" in out and len(out.strip().splitlines()) == 1


def test_deeper_pruning_continues_each_trajectory_from_its_last_level(capsys, tmp_path):
    sweep = tmp_path / "smoke"
    one = ["grid.model.width=[0.5]", "grid.data.fraction=[1.0]", "prune.stop_at_chance=0"]
    assert cli(capsys, "run", *QUICK, *one, f"out_dir={tmp_path}")[0] == 0
    shallow = rows(sweep)
    assert [r["level"] for r in shallow] == [0, 1, 2]

    code, out = cli(capsys, "resume", "--no-progress", str(sweep), "prune.levels=4")
    assert code == 0, out
    deep = rows(sweep)
    assert [r["level"] for r in deep] == [0, 1, 2, 3, 4]  # one trajectory, no duplicated levels
    (job,) = {r["job_id"] for r in deep}
    log = (sweep / "jobs" / job / "log.txt").read_text()
    assert "resumed at level 3" in log and "level 0 done" not in log  # only the new levels trained
    kept = (
        "level",
        "density",
        "test_error",
        "test_loss",
        "train_error",
        "params_nonzero",
        "wall_s",
        "finished_at",
    )
    for old, new in zip(shallow, deep):
        assert {k: old[k] for k in kept} == {k: new[k] for k in kept}

    code, out = cli(capsys, "resume", str(sweep), "prune.levels=1")
    assert code == 2 and "a sweep only deepens" in out


def test_a_store_lends_finished_jobs_to_another_sweep(capsys, tmp_path):
    store = tmp_path / "store"
    one = ["grid.model.width=[0.5]", f"store={store}"]
    assert cli(capsys, "run", *QUICK, *one, f"out_dir={tmp_path}", "name=first")[0] == 0
    jobs = [p for p in store.iterdir()]
    assert len(jobs) == 2 and all((j / "rows.parquet").is_file() for j in jobs) and not list(store.glob(".*"))
    first = rows(tmp_path / "first")

    code, out = cli(
        capsys, "plan", "sweep=smoke", *one, f"out_dir={tmp_path}", "name=second", "grid.seed=[0,1]"
    )
    assert "reused 2: finished in the store" in out  # seed 0's two jobs; seed 1's are new
    code, out = cli(capsys, "run", *QUICK, *one, f"out_dir={tmp_path}", "name=second", "grid.seed=[0,1]")
    assert code == 0 and "reused 2 finished jobs from the store" in out and "2 jobs to run" in out, out
    second = rows(tmp_path / "second")
    assert len(second) == 4 * 3 and len(first) == 2 * 3
    shared = [r for r in second if r["seed"] == 0]
    assert [{**r, "sweep": None} for r in shared] == [{**r, "sweep": None} for r in first]  # the very rows
    assert len(list(store.iterdir())) == 4  # the new jobs were published too
