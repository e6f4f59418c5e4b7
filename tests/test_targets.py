"""User components by `_target_`: safe imports, signature checks at plan time, source hashes in job ids, reopening a sweep from anywhere."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from scaling_sweep import targets
from scaling_sweep.cli import main
from scaling_sweep.errors import ConfigError
from tests.conftest import CLI, cli_env

MODEL = """
import torch.nn as nn

MARKER = None  # set by tests: a file this module touches when it is imported


class UserMLP(nn.Module):
    def __init__(self, input_shape, num_classes, width: float = 1.0, hidden: int = 16):
        super().__init__()
        n = 1
        for s in input_shape:
            n *= s
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(n, max(1, round(hidden * width))), nn.ReLU())
        self.head = nn.Linear(max(1, round(hidden * width)), num_classes)

    def forward(self, x):
        return self.head(self.body(x))


def needs_depth(input_shape, num_classes, depth):
    return UserMLP(input_shape, num_classes)


def step(model, x, y, smoothing: float = 0.0):
    import torch.nn.functional as F

    logits = model(x)
    return F.cross_entropy(logits, y, label_smoothing=smoothing), (logits.argmax(1) != y).sum(), y.numel()


def two_args(model, x):
    return model(x)


from os import system  # a re-export: must not be reachable as a target
"""


@pytest.fixture
def user_dir(tmp_path):
    """A config dir holding a uniquely named user module (no clash in sys.modules) and a model group for it."""
    conf = tmp_path / "conf"
    (conf / "model").mkdir(parents=True)
    module = f"user_{uuid.uuid4().hex[:10]}"
    marker = tmp_path / "imported"
    (conf / f"{module}.py").write_text(
        f"open({str(marker)!r}, 'a').write('x')\n" + MODEL  # records every import of the module
    )
    (conf / "model" / "user_mlp.yaml").write_text(f"_target_: {module}.UserMLP\nwidth: 1.0\nhidden: 16\n")
    yield conf, module, marker
    sys.modules.pop(module, None)
    if str(conf) in sys.path:
        sys.path.remove(str(conf))


def _cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err


SMOKE = ["sweep=smoke", "grid.model.width=[0.5,1.0]", "grid.data.fraction=[1.0]", "fit.enabled=false"]


def test_find_gives_each_component_its_own_keywords():
    config = {
        "model": {"_target_": "pkg.m.Net", "name": "net", "width": 2.0},
        "data": {"_target_": "pkg.d.load", "name": "text", "fraction": 0.5, "root": "/d", "block": 8},
        "train": {"step": {"_target_": "pkg.s.step", "smoothing": 0.1}},
    }
    found = targets.find(config)
    assert found["model"].kwargs == {"width": 2.0}
    assert found["data"].kwargs == {"block": 8, "root": "/d"}  # fraction is the tool's; root is passed
    assert found["train.step"].kwargs == {"smoothing": 0.1}
    with pytest.raises(ConfigError, match="name a class or function as module.name"):
        targets.find({"model": {"_target_": "os.system; rm -rf /"}})


def test_unsafe_or_unknown_targets_are_refused_with_one_line(user_dir, monkeypatch):
    conf, module, _ = user_dir
    monkeypatch.syspath_prepend(str(conf))
    cases = [
        ("os.system", "Python's standard library"),
        ("builtins.eval", "Python's standard library"),
        (f"{module}.system", "must be a class or function defined in"),  # the re-export
        (f"{module}.MARKER", "must be a class or function defined in"),
        (f"{module}.Nope", "has no 'Nope'"),
        ("no_such_pkg_xyz.Net", "cannot import no_such_pkg_xyz"),
    ]
    for path, message in cases:
        with pytest.raises(ConfigError, match=message) as e:
            targets.resolve(targets.Target("model", path))
        assert "\n" not in str(e.value)


def test_signature_checks_name_the_key_and_the_parameters(user_dir, monkeypatch):
    conf, module, _ = user_dir
    monkeypatch.syspath_prepend(str(conf))
    model = f"{module}.UserMLP"
    targets.check(targets.Target("model", model, {"hidden": 8}))
    with pytest.raises(
        ConfigError,
        match=r"model.hiden: UserMLP\(input_shape, num_classes, width=1.0, hidden=16\) has no parameter 'hiden'",
    ):
        targets.check(targets.Target("model", model, {"hiden": 8}))
    with pytest.raises(ConfigError, match="model.depth is not set: needs_depth"):
        targets.check(targets.Target("model", f"{module}.needs_depth"))
    with pytest.raises(ConfigError, match="the trainer passes num_classes to UserMLP itself"):
        targets.check(targets.Target("model", model, {"num_classes": 3}))
    targets.check(targets.Target("train.step", f"{module}.step", {"smoothing": 0.1}))
    with pytest.raises(ConfigError, match="must take \\(model, x, y\\)"):
        targets.check(targets.Target("train.step", f"{module}.two_args"))


def test_source_file_is_found_without_running_the_package(tmp_path, monkeypatch):
    pkg = f"pkg_{uuid.uuid4().hex[:8]}"
    (tmp_path / pkg).mkdir()
    (tmp_path / pkg / "__init__.py").write_text("raise RuntimeError('must not run')\n")
    (tmp_path / pkg / "models.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert targets.source_file(f"{pkg}.models") == tmp_path / pkg / "models.py"
    assert pkg not in sys.modules
    assert len(targets.code_hash(f"{pkg}.models")) == 16


def test_plan_checks_user_code_and_an_edit_makes_new_jobs(capsys, tmp_path, user_dir):
    conf, module, marker = user_dir
    base = ["plan", "--json", "--config-dir", str(conf), f"out_dir={tmp_path}", *SMOKE, "model=user_mlp"]
    code, out = _cli(capsys, *base)
    assert code == 0 and marker.exists()  # plan imports the model to check its signature
    first = json.loads(out)["job_list"]
    assert first[0]["params_prunable"] < first[0]["params_total"]  # counted on the meta device; head dense
    code, out = _cli(capsys, *base[:-1], "model=user_mlp", "+model.hiden=3")
    assert code == 2 and "model.hiden: UserMLP(" in out and "has no parameter 'hiden'" in out
    # The same config with an edited model is another job.
    source = conf / f"{module}.py"
    source.write_text(source.read_text() + "\n# edited\n")
    sys.modules.pop(module, None)
    code, out = _cli(capsys, *base)
    assert {j["job_id"] for j in json.loads(out)["job_list"]}.isdisjoint({j["job_id"] for j in first})


def test_sweep_of_a_user_model_reopens_from_anywhere_without_importing_for_status(tmp_path, user_dir):
    conf, module, marker = user_dir
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def cli(*args, cwd=elsewhere):
        p = subprocess.run([*CLI, *args], cwd=cwd, env=cli_env(), text=True, capture_output=True, timeout=300)
        return p.returncode, p.stdout + p.stderr

    out_dir = tmp_path / "out"
    code, out = cli(
        "run",
        "--no-progress",
        "--config-dir",
        str(conf),
        f"out_dir={out_dir}",
        *SMOKE,
        "model=user_mlp",
        "train.epochs=1",
    )
    assert code == 0, out
    sweep = out_dir / "smoke"
    assert json.loads((sweep / "import_paths.json").read_text())["import_paths"][1] == str(conf)
    import pyarrow.parquet as pq

    rows = pq.read_table(sweep / "results.parquet").to_pylist()
    assert {r["model"] for r in rows} == {"UserMLP"} and {r["width"] for r in rows} == {0.5, 1.0}
    assert all('"code":{"model":' in r["config_json"] for r in rows)

    # status from another directory, in a fresh process: no import of the user's module.
    marker.unlink()
    code, out = cli("status", "--json", str(sweep), cwd=tmp_path)
    assert code == 0 and json.loads(out)["counts"]["done"] == 2 and not marker.exists()
    # resume finds the module through the recorded paths (the config dir is nowhere else on sys.path).
    code, out = cli("resume", "--no-progress", str(sweep), cwd=tmp_path)
    assert code == 0 and "0 jobs to run" in out, out

    # An edit shows in plan as jobs that are new because the code changed, and status counts them pending.
    source = conf / f"{module}.py"
    source.write_text(source.read_text() + "\n# edited\n")
    code, out = cli(
        "plan", "--config-dir", str(conf), f"out_dir={out_dir}", *SMOKE, "model=user_mlp", "train.epochs=1"
    )
    assert "new because code changed: 2 jobs (model source differs" in out, out
    code, out = cli("status", "--json", str(sweep), cwd=tmp_path)
    assert json.loads(out)["counts"]["pending"] == 2


def test_hydra_habits(capsys, tmp_path):
    code, out = _cli(capsys, "run", "-m", "--cfg", "job", f"out_dir={tmp_path}", "sweep=smoke")
    assert (
        code == 0 and out.startswith("name: smoke\n") and "grid:" in out and not (tmp_path / "smoke").exists()
    )
    code, out = _cli(capsys, "plan", f"out_dir={tmp_path}", "hydra/launcher=submitit_slurm")
    assert code == 2 and "use launcher=local or launcher=slurm" in out


def test_a_job_whose_model_file_changed_after_planning_refuses_to_train(tmp_path, user_dir):
    from scaling_sweep import config
    from scaling_sweep.cli import Loaded
    from scaling_sweep.job import run_job
    from scaling_sweep.sweep import SweepDir

    conf, module, _ = user_dir
    cfg = config.compose([*SMOKE, "model=user_mlp", f"out_dir={tmp_path}"], [str(conf)])
    sweep = SweepDir(tmp_path / "smoke")
    loaded = Loaded(cfg, sweep, import_paths=[str(conf)])
    sweep.create(config.to_yaml(cfg))
    sweep.write_import_paths([str(conf)])
    spec = loaded.plan.specs[0]
    source = conf / f"{module}.py"
    source.write_text(source.read_text() + "\n# edited after planning\n")
    assert run_job(spec, sweep.path) == "failed"
    error = (sweep.job_dir(spec.job_id) / "error.txt").read_text()
    assert "changed since this job was planned" in error and "resume" in error
