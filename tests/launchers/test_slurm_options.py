"""The SLURM launcher without a cluster: options, error messages, packing, and what reaches the sbatch script."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from launchers import slurm_cluster
from launchers.slurm import SlurmLauncher, SlurmOptions, _tasks, slurm_states
from scaling_sweep.errors import ConfigError
from scaling_sweep.spec import JobSpec
from scaling_sweep.sweep import SweepDir
from tests.conftest import ROOT

YAML = ROOT / "configs" / "launcher" / "slurm.yaml"


def fake_slurm_bin(tmp_path: Path, **outputs: str) -> Path:
    """A PATH directory whose SLURM commands print canned output (submitit needs srun to exist)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for cmd in ("sbatch", "srun", "sinfo", "squeue", "scancel", "scontrol"):
        script = bin_dir / cmd
        # printf is a shell builtin: the scripts work with nothing else on PATH.
        script.write_text(f"#!/bin/sh\nprintf '%s\\n' '{outputs.get(cmd, '')}'\n")
        script.chmod(0o755)
    return bin_dir


def spec(width: float, seed: int = 0, model: str = "mlp") -> JobSpec:
    return JobSpec(
        model={"name": model, "width": width, "depth": 2},
        data={"name": "mnist1d", "fraction": 1.0},
        train={"epochs": 1},
        prune={"method": "imp", "levels": 2, "rewind": "init"},
        seed=seed,
    )


def test_yaml_defaults_are_the_options_defaults():
    cfg = OmegaConf.to_container(OmegaConf.load(YAML))
    assert cfg["name"] == "slurm"
    assert SlurmOptions.parse(cfg) == SlurmOptions()


def test_missing_sbatch_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match=r"`sbatch` is not on PATH; run from a SLURM login node"):
        SlurmLauncher.from_config({"name": "slurm"})


def test_unknown_option_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"launcher.gpus is not an option of the slurm launcher; known: "):
        SlurmOptions.parse({"name": "slurm", "gpus": 1})


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("jobs_per_task", 0, r"launcher.jobs_per_task=0: must be an integer >= 1"),
        ("time_min", "1h", r"launcher.time_min='1h': must be an integer >= 1"),
        ("mem_gb", -1, r"launcher.mem_gb=-1: must be a number of GB > 0"),
        ("device", "tpu", r"launcher.device='tpu': use auto, cpu or cuda"),
        ("signal_delay_s", 600, r"must be shorter than the time limit"),
    ],
)
def test_bad_values_name_the_value_and_what_is_allowed(key, value, message):
    cfg = {"name": "slurm", "time_min": 5, key: value} if key != "time_min" else {key: value}
    with pytest.raises(ConfigError, match=message):
        SlurmOptions.parse(cfg)


def test_unknown_partition_lists_the_clusters_partitions(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(fake_slurm_bin(tmp_path, sinfo="gpu\ncpu\ngpu")))
    with pytest.raises(ConfigError, match=r"launcher.partition='a100' .* known: cpu, gpu \(from sinfo\)"):
        SlurmLauncher.from_config({"name": "slurm", "partition": "a100"})
    SlurmLauncher.from_config({"name": "slurm", "partition": "gpu"})


def test_jobs_alone_go_jobs_per_task_to_a_task_in_order():
    specs = [spec(w) for w in (1, 2, 3, 4, 5)]  # no two share a model: none pack
    tasks = _tasks(specs, SlurmOptions(jobs_per_task=2))
    assert [([s.model["width"] for s in t], packed) for t, packed in tasks] == [
        ([1, 2], False),
        ([3, 4], False),
        ([5], False),
    ]


def test_each_pack_is_one_task_never_split_and_the_rest_go_jobs_per_task():
    seeds = [spec(0.5, seed) for seed in range(5)]  # one model and recipe: one pack
    others = [spec(0.5, 0, model="cifar_resnet"), spec(1, 0, model="cifar_resnet")]  # no stacked program
    tasks = _tasks(seeds + others, SlurmOptions(jobs_per_task=2))
    assert [(len(t), packed) for t, packed in tasks] == [(5, True), (2, False)]
    assert {s.seed for s in tasks[0][0]} == set(range(5))
    capped = _tasks(seeds, SlurmOptions(pack=2))  # at most 2 a pack: near-equal packs
    assert sorted((len(t), packed) for t, packed in capped) == [(1, False), (2, True), (2, True)]
    assert [(len(t), packed) for t, packed in _tasks(seeds, SlurmOptions(pack="off", jobs_per_task=5))] == [
        (5, False)  # the same jobs with packing off: one after another in one task
    ]


def test_a_bad_pack_value_names_the_allowed_ones():
    with pytest.raises(ConfigError, match=r"launcher.pack='some': auto .*, off, or the most jobs per pack"):
        SlurmOptions.parse({"name": "slurm", "pack": "some"})


def test_device_follows_the_gpus():
    assert SlurmOptions().resolved_device() == "cpu"
    assert SlurmOptions(gpus_per_task=1).resolved_device() == "cuda:0"
    assert SlurmOptions(device="cuda").resolved_device() == "cuda:0"


def test_resources_reach_the_sbatch_script(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(fake_slurm_bin(tmp_path)))
    cfg = {
        "name": "slurm",
        "partition": "gpu",
        "account": "lab",
        "qos": "high",
        "time_min": 30,
        "gpus_per_task": 2,
        "cpus_per_task": 8,
        "mem_gb": 16,
        "constraint": "a100|h100",
        "array_parallelism": 7,
        "sbatch": {"exclude": "node[1-3]", "mail-type": "END"},
        "setup": ["module load cuda"],
    }
    launcher = SlurmLauncher.from_config(cfg, check_cluster=False)
    executor = launcher._executor(SweepDir(tmp_path / "sweep"))
    executor.parameters["map_count"] = 10  # as submitit sets it for an array of 10 tasks
    script = executor._make_submission_file_text("python -m submitit.core._submit", "uid")
    for line in (
        "--partition=gpu",
        "--account=lab",
        "--qos=high",
        "--time=30",
        "--gpus-per-task=2",
        "--cpus-per-task=8",
        "--mem=16384M",
        "--constraint='a100|h100'",
        "--exclude='node[1-3]'",
        "--mail-type=END",
        "--array=0-9%7",
        "--signal=USR2@120",
        "--job-name=ss-sweep",
    ):
        assert f"#SBATCH {line}\n" in script, line
    assert "export OMP_NUM_THREADS=8" in script and "module load cuda" in script
    assert f"export PYTHONPATH={ROOT}" in script


def test_slurm_states_maps_array_tasks_to_jobs_and_ignores_other_jobs(tmp_path, monkeypatch):
    from scaling_sweep.atomic import write_json

    sweep = SweepDir(tmp_path / "s")
    write_json(
        sweep.slurm_dir / "arrays" / "12.json",
        {"array_id": "12", "job_name": "ss-s", "array": True, "tasks": [["a", "b"], ["c"], ["d"]]},
    )
    write_json(
        sweep.slurm_dir / "arrays" / "20.json",
        {"array_id": "20", "job_name": "ss-s", "array": False, "tasks": [["d"]]},
    )
    squeue = "12|0|ss-s|RUNNING\n12|2|ss-s|PENDING\n20|N/A|ss-s|RUNNING\n12|1|someone-else|RUNNING"
    monkeypatch.setenv("PATH", str(fake_slurm_bin(tmp_path, squeue=squeue)))
    calls = []
    real_run = slurm_cluster.run
    monkeypatch.setattr(slurm_cluster, "run", lambda args: calls.append(args) or real_run(args))
    # d is pending in array 12 and running as job 20: the running one is shown.
    assert slurm_states(sweep) == {"a": "RUNNING", "b": "RUNNING", "d": "RUNNING"}
    assert len(calls) == 1 and calls[0][0] == "squeue" and "--jobs=12,20" in calls[0]
