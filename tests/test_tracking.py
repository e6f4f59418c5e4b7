"""Tracker mirrors with the real packages (file stores, no server): every level of every job reaches
TensorBoard, MLflow and W&B offline exactly once; a tracker that fails or is missing costs one warning line."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from scaling_sweep import config, tracking
from scaling_sweep.cli import load_existing, main
from scaling_sweep.grid import expand
from scaling_sweep.job import run_job
from scaling_sweep.sweep import SweepDir
from tests.conftest import composed

SWEEP = ["sweep=smoke", "train.epochs=1", "launcher.devices=[cpu,cpu]", "fit.enabled=false"]
HAS_WANDB = importlib.util.find_spec("wandb") is not None
METRICS = ("test_error", "test_loss", "train_error", "density", "params_nonzero")


@pytest.fixture(autouse=True)
def _mlflow_file_store(monkeypatch):
    # Reading a file store back needs what the jobs set for themselves (MLflow 3 asks for it).
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")


def wandb_env(mp: pytest.MonkeyPatch, root: Path) -> None:
    # Offline, and nothing written to the user's home (W&B keeps settings and caches there).
    mp.setenv("WANDB_MODE", "offline")
    for var, sub in (
        ("WANDB_CONFIG_DIR", "config"),
        ("WANDB_CACHE_DIR", "cache"),
        ("WANDB_DATA_DIR", "data"),
    ):
        mp.setenv(var, str(root / "wandb-home" / sub))


@pytest.fixture(scope="module")
def tracked(tmp_path_factory) -> tuple[Path, dict]:
    """The smoke sweep (4 real trainings) run through the CLI with every installed tracker, and its rows."""
    out = tmp_path_factory.mktemp("tracked")
    trackers = ["tensorboard", "mlflow"] + (["wandb"] if HAS_WANDB else [])
    with pytest.MonkeyPatch.context() as mp:
        wandb_env(mp, out)
        mp.setenv("WANDB_DIR", str(out / "smoke"))
        code = main(["run", "--no-progress", f"out_dir={out}", *SWEEP, f"tracking=[{','.join(trackers)}]"])
    assert code == 0
    rows = pq.read_table(out / "smoke" / "results.parquet").to_pylist()
    return out / "smoke", {(r["job_id"], r["level"]): r for r in rows}


def by_job(rows: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for (job, _), row in sorted(rows.items()):
        out.setdefault(job, []).append(row)
    return out


def test_tensorboard_event_files_hold_every_level_of_every_job(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    sweep_dir, rows = tracked
    jobs = by_job(rows)
    assert len(jobs) == 4 and sorted(p.name for p in (sweep_dir / "tensorboard").iterdir()) == sorted(jobs)
    for job, levels in jobs.items():
        events = EventAccumulator(str(sweep_dir / "tensorboard" / job))
        events.Reload()
        assert set(METRICS) <= set(events.Tags()["scalars"])
        logged = [(e.step, e.value) for e in events.Scalars("test_error")]
        assert [s for s, _ in logged] == [r["level"] for r in levels]  # each level once, in order
        assert [v for _, v in logged] == pytest.approx([r["test_error"] for r in levels], rel=1e-6)
        assert [e.value for e in events.Scalars("density")] == pytest.approx([r["density"] for r in levels])


def test_mlflow_search_runs_finds_one_finished_run_per_job_with_its_metric_history(tracked):
    import mlflow

    sweep_dir, rows = tracked
    jobs = by_job(rows)
    mlflow.set_tracking_uri((sweep_dir / "mlruns").as_uri())
    runs = mlflow.search_runs(experiment_names=["smoke"])
    assert sorted(runs["tags.mlflow.runName"]) == sorted(jobs)
    assert set(runs["status"]) == {"FINISHED"}
    client = mlflow.MlflowClient()
    for run in runs.to_dict(orient="records"):
        levels = jobs[run["tags.mlflow.runName"]]
        # Tagged with the axes, the canonical config as parameters.
        assert float(run["tags.model.width"]) == levels[0]["width"]
        assert run["params.train.lr"] == str(json.loads(levels[0]["config_json"])["train"]["lr"])
        history = client.get_metric_history(run["run_id"], "test_error")
        assert [(m.step, m.value) for m in history] == [(r["level"], r["test_error"]) for r in levels]
        assert [m.step for m in client.get_metric_history(run["run_id"], "params_nonzero")] == [0, 1, 2]


@pytest.mark.skipif(not HAS_WANDB, reason="wandb is not installed (pip install 'scaling-sweep[wandb]')")
def test_wandb_offline_runs_hold_every_level_of_every_job(tracked):
    sweep_dir, rows = tracked
    for job, levels in by_job(rows).items():
        (run_file,) = (sweep_dir / "wandb").glob(f"offline-run-*-{job}/run-{job}.wandb")
        records = list(wandb_records(run_file))
        (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        assert run.run_id == job and run.display_name == job and run.project == "smoke"
        assert f"model.width={levels[0]['width']}" in run.tags
        history = [
            {item.key or ".".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
            for r in records
            if r.WhichOneof("record_type") == "history"
        ]
        assert [(h["_step"], h["test_error"]) for h in history] == [
            (r["level"], pytest.approx(r["test_error"])) for r in levels
        ]


def wandb_records(path: Path):
    """The protobuf records of an offline run's .wandb file (a LevelDB log: 32 KiB blocks, 7-byte headers)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, buf, block = 7, b"", 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk  # full or first chunk starts a record
        if kind in (1, 4):  # full or last chunk ends it
            record = pb.Record()
            record.ParseFromString(buf)
            yield record


# -- one job at a time, with a stand-in trainer (no torch) --------------------------------------


ERRORS = (0.1, 0.15, 0.2)  # test error of the stand-in trainer's levels 0, 1, 2


def level(n: int) -> dict:
    return dict(
        level=n,
        density=0.8**n,
        n_train=100,
        params_total=1000,
        params_prunable=900,
        params_nonzero=round(900 * 0.8**n),
        test_error=ERRORS[n],
        test_loss=1.0 + n,
        train_error=0.05 * n,
        train_loss=0.5,
        epochs=1.0,
        steps=10,
        budget_unit="epochs",
        wall_s=0.1,
    )


def trainer(levels_done: int = 0, fail_after: int | None = None):
    """A train_fn that, like run_imp on resume, first emits the levels already done, then one per level."""

    def train(config, device, ckpt_dir, emit, stop, log):
        total = config["prune"]["levels"] + 1
        levels = [level(n) for n in range(levels_done)]
        if levels:
            emit(levels)
        for n in range(levels_done, total):
            if fail_after is not None and n > fail_after:
                raise RuntimeError("diverged")
            levels.append(level(n))
            emit(levels)
        return levels

    return train


ONE_JOB = ["sweep=smoke", "grid.model.width=[0.5]", "grid.data.fraction=[1]"]


def one_job_sweep(tmp_path: Path, *overrides: str) -> tuple[SweepDir, Any]:
    """A frozen smoke sweep of one job (3 levels) composed with `overrides`; the sweep dir and spec."""
    cfg = config.compose([*ONE_JOB, f"out_dir={tmp_path}", *overrides])
    sweep = SweepDir(tmp_path / "smoke")
    sweep.create(config.to_yaml(cfg))
    (spec,) = expand(composed(*ONE_JOB)).specs
    return sweep, spec


@pytest.fixture
def sweep(tmp_path, monkeypatch):
    """The one-job sweep with tracking=[tensorboard,mlflow]."""
    monkeypatch.setattr(tracking, "_warned", set())
    return one_job_sweep(tmp_path, "tracking=[tensorboard,mlflow]")


def mlflow_history(sweep_dir: Path, metric: str = "test_error") -> tuple[str, list[tuple[int, float]]]:
    import mlflow

    client = mlflow.MlflowClient((sweep_dir / "mlruns").as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    return run.info.status, [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, metric)]


def test_a_resumed_job_logs_no_level_twice(sweep):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    sweep, spec = sweep
    assert run_job(spec, sweep.path, train_fn=trainer(fail_after=1)) == "failed"
    assert mlflow_history(sweep.path) == ("FAILED", [(0, ERRORS[0]), (1, ERRORS[1])])
    # The retry's trainer re-emits levels 0 and 1 from its checkpoint before training level 2.
    assert run_job(spec, sweep.path, train_fn=trainer(levels_done=2)) == "done"
    assert mlflow_history(sweep.path) == ("FINISHED", list(enumerate(ERRORS)))
    events = EventAccumulator(str(sweep.path / "tensorboard" / spec.job_id))
    events.Reload()
    assert [e.step for e in events.Scalars("test_error")] == [0, 1, 2]
    assert len(list((sweep.path / "tensorboard" / spec.job_id).glob("events.out.tfevents.*"))) == 2
    record = json.loads((sweep.job_dir(spec.job_id) / "tracked.json").read_text())
    assert record["mlflow"]["levels"] == record["tensorboard"]["levels"] == [0, 1, 2]


def test_a_tracker_that_raises_leaves_the_job_done_with_one_warning_line(sweep, monkeypatch, capsys):
    sweep, spec = sweep

    class Broken(tracking.TensorBoard):
        def log(self, levels):
            raise OSError("disk quota exceeded")

    monkeypatch.setitem(tracking.TRACKERS, "tensorboard", Broken)
    assert run_job(spec, sweep.path, train_fn=trainer()) == "done"
    assert len(pq.read_table(sweep.rows_path(spec.job_id))) == 3
    warnings = [
        ln for ln in (sweep.job_dir(spec.job_id) / "log.txt").read_text().splitlines() if "warning" in ln
    ]
    assert len(warnings) == 1, warnings
    assert (
        "tracking: tensorboard failed (OSError: disk quota exceeded); the job goes on without it"
        in warnings[0]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"warning: job {spec.job_id}: tracking: tensorboard failed (OSError: disk quota exceeded); "
        f"the job goes on without it"
    ]
    assert mlflow_history(sweep.path)[1] == list(enumerate(ERRORS))  # the other tracker goes on


def test_a_missing_tracker_package_is_one_warning_naming_the_extra(sweep, monkeypatch, capsys):
    sweep, spec = sweep
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` raises ImportError
    assert run_job(spec, sweep.path, train_fn=trainer()) == "done"
    log = (sweep.job_dir(spec.job_id) / "log.txt").read_text()
    assert log.count("warning") == 1 and "pip install 'scaling-sweep[mlflow]'" in log
    assert capsys.readouterr().err.count("warning") == 1
    assert (sweep.path / "tensorboard" / spec.job_id).is_dir()


def test_settings_of_the_latest_launch_reach_the_job_through_tracking_json(tmp_path):
    sweep, spec = one_job_sweep(tmp_path)
    assert tracking.settings(sweep.path).to == []
    # What `resume DIR tracking=[tensorboard]` makes of the frozen config, recorded at launch.
    loaded = load_existing(str(sweep.path), ["tracking=[tensorboard]"], trains_here=False)
    assert [s.job_id for s in loaded.plan.specs] == [spec.job_id]  # an execution setting: same job
    tracking.record(sweep.path, loaded.plain["tracking"])
    assert run_job(spec, sweep.path, train_fn=trainer()) == "done"
    assert (sweep.path / "tensorboard" / spec.job_id).is_dir()
    assert not (sweep.path / "mlruns").exists()


def test_no_tracking_writes_nothing_and_imports_no_tracker(tmp_path):
    sweep, spec = one_job_sweep(tmp_path)
    sys.modules.pop("wandb", None)
    assert run_job(spec, sweep.path, train_fn=trainer()) == "done"
    assert not (sweep.job_dir(spec.job_id) / "tracked.json").exists()
    assert not any((sweep.path / d).exists() for d in ("tensorboard", "mlruns", "wandb"))
    assert "wandb" not in sys.modules


# -- the config node ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, to",
    [
        (["tracking=[tensorboard]"], ["tensorboard"]),
        (["tracking=[tensorboard,mlflow,wandb]"], ["tensorboard", "mlflow", "wandb"]),
        (["tracking=mlflow"], ["mlflow"]),
        (["tracking.to=[wandb]", "tracking.mlflow_uri=file:///x"], ["wandb"]),
        ([], []),
    ],
)
def test_tracking_takes_a_bare_list_or_the_to_key(overrides, to):
    assert composed("sweep=smoke", *overrides)["tracking"]["to"] == to


def test_tracking_never_changes_a_job_id():
    plain = expand(composed("sweep=smoke")).specs
    mirrored = expand(composed("sweep=smoke", "tracking=[tensorboard,mlflow]")).specs
    assert [s.job_id for s in plain] == [s.job_id for s in mirrored]


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "tracking=[tensorbord]",
            "tracking='tensorbord' is unknown; known trackers: tensorboard, mlflow, wandb",
        ),
        ("tracking.wandb_mode=cloud", "tracking.wandb_mode='cloud': choose offline, online, disabled"),
    ],
)
def test_bad_tracking_stops_at_plan_time_with_one_line(capsys, tmp_path, override, message):
    code = main(["plan", f"out_dir={tmp_path}", "sweep=smoke", override])
    out = capsys.readouterr()
    lines = (out.out + out.err).strip().splitlines()
    assert code == 2 and lines == [f"error: {message}"]


def test_resume_refuses_an_unknown_tracker_with_one_line(capsys, tmp_path):
    cfg = config.compose(["sweep=smoke", f"out_dir={tmp_path}"])
    SweepDir(tmp_path / "smoke").create(config.to_yaml(cfg))
    code = main(["resume", str(tmp_path / "smoke"), "tracking=[comet]"])
    out = capsys.readouterr()
    assert code == 2
    assert (
        out.out + out.err
    ).strip() == "error: tracking='comet' is unknown; known trackers: tensorboard, mlflow, wandb"


def test_a_tracker_added_on_resume_gets_the_rows_of_jobs_finished_before(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert main(["run", "--no-progress", f"out_dir={tmp_path}", *SWEEP]) == 0
    sweep = tmp_path / "smoke"
    assert not (sweep / "tensorboard").exists()
    capsys.readouterr()
    assert main(["resume", "--no-progress", str(sweep), "tracking=[tensorboard]"]) == 0
    assert "sent the rows of 4 finished jobs to the trackers" in capsys.readouterr().out
    rows = pq.read_table(sweep / "results.parquet").to_pylist()
    for job, levels in by_job({(r["job_id"], r["level"]): r for r in rows}).items():
        events = EventAccumulator(str(sweep / "tensorboard" / job))
        events.Reload()
        assert [e.step for e in events.Scalars("test_error")] == [r["level"] for r in levels]
    # A second resume sends nothing again.
    assert main(["resume", "--no-progress", str(sweep), "tracking=[tensorboard]"]) == 0
    assert "sent the rows" not in capsys.readouterr().out
