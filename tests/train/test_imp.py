"""The IMP driver: its rows, emit order, exact resume (stop, SIGKILL, damaged checkpoint), rewinding, one-shot."""

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scaling_sweep.errors import ConfigError
from scaling_sweep.schema import PruneOptions
from scaling_sweep.train import checkpoint
from scaling_sweep.train.imp import METRIC_KEYS, Interrupted, Progress, run_imp, start_level
from scaling_sweep.train.pruning import MASK, Masks

REPO = Path(__file__).resolve().parents[2]


def without_wall(levels: list[dict]) -> list[dict]:
    """Level metrics minus wall time (the one field two identical runs never share)."""
    return [{k: v for k, v in level.items() if k != "wall_s"} for level in levels]


def _stop_after(*polls: int):
    """A stop() that answers True at the given poll counts (1 = after the first optimizer step)."""
    count = 0

    def stop() -> bool:
        nonlocal count
        count += 1
        return count in polls

    return stop


def _run(config, ckpt_dir, **kwargs):
    return run_imp(config, "cpu", ckpt_dir, emit=lambda rows: None, **kwargs)


def test_rows_carry_exactly_the_contract_keys_and_emit_follows_every_level(job, tmp_path):
    emitted: list[list[dict]] = []
    levels = run_imp(job(), "cpu", tmp_path, emit=emitted.append)
    assert [len(e) for e in emitted] == [1, 2, 3] and emitted[-1] == levels
    for i, row in enumerate(levels):
        assert tuple(row) == METRIC_KEYS
        assert row["level"] == i and row["n_train"] == 1000 and row["device"] == "cpu"
        assert 0 <= row["test_error"] <= 1 and 0 <= row["train_error"] <= 1
        assert row["budget_unit"] == "epochs" and row["epochs"] == 2.0 and row["steps"] == 16
        assert row["wall_s"] > 0
    assert [round(r["density"], 3) for r in levels] == [1.0, 0.8, 0.64]
    assert levels[0]["params_nonzero"] == levels[0]["params_total"]
    pruned = levels[0]["params_prunable"] - round(0.64 * levels[0]["params_prunable"])
    assert abs(levels[2]["params_nonzero"] - (levels[0]["params_total"] - pruned)) <= 2


def test_stopped_job_resumes_to_bitwise_identical_numbers(job, tmp_path):
    config = job()
    reference = _run(config, tmp_path / "reference")
    ckpt = tmp_path / "stopped"
    # Stop mid-epoch in level 1 (8 steps per epoch), then again in level 2.
    with pytest.raises(Interrupted):
        _run(config, ckpt, stop=_stop_after(16 + 5))
    assert checkpoint.load(ckpt)["step"] == 5 and checkpoint.load(ckpt)["level"] == 1
    emitted: list[list[dict]] = []
    with pytest.raises(Interrupted):
        run_imp(config, "cpu", ckpt, emit=emitted.append, stop=_stop_after(11 + 3))
    assert len(emitted[0]) == 1  # the first call on resume: the levels already done
    resumed = run_imp(config, "cpu", ckpt, emit=emitted.append)
    assert without_wall(resumed) == without_wall(reference)


def test_a_job_resumed_with_another_thread_count_trains_with_the_one_it_started_with(job, tmp_path):
    config = job(model={"name": "mlp", "width": 4.0, "depth": 2})
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        reference = _run(config, tmp_path / "reference")
        ckpt = tmp_path / "stopped"
        with pytest.raises(Interrupted):
            _run(config, ckpt, stop=_stop_after(16 + 5))
        torch.set_num_threads(2)
        said: list[str] = []
        resumed = _run(config, ckpt, log=said.append)
        assert torch.get_num_threads() == 2  # the caller's count is back
    finally:
        torch.set_num_threads(before)
    assert any("training with 1 torch threads, as the job started" in line for line in said), said
    assert without_wall(resumed) == without_wall(reference)


def test_killed_job_resumes_to_identical_numbers_on_cpu(job, tmp_path):
    config = job(train={"epochs": 3, "checkpoint_every": 1})  # 24 steps a level, checkpoints every 8
    (tmp_path / "config.json").write_text(json.dumps(config))
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def start(ckpt: str, out: str) -> subprocess.Popen:
        return subprocess.Popen(
            [
                sys.executable,
                str(REPO / "tests/train/run_job.py"),
                str(tmp_path / "config.json"),
                str(tmp_path / ckpt),
                str(tmp_path / out),
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    reference = start("reference", "reference.json")
    victim = start("victim", "never.json")
    for line in victim.stdout:  # kill it in the middle of level 1, past a mid-level checkpoint
        if int(line.split()[1]) >= 24 + 12:
            os.kill(victim.pid, signal.SIGKILL)
            break
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    assert checkpoint.load(tmp_path / "victim")["level"] == 1
    resumed = start("victim", "resumed.json")
    assert resumed.wait(timeout=120) == 0 and reference.wait(timeout=120) == 0
    expected = json.loads((tmp_path / "reference.json").read_text())
    assert without_wall(json.loads((tmp_path / "resumed.json").read_text())) == without_wall(expected)


def test_unreadable_latest_checkpoint_falls_back_to_previous_and_still_matches(job, tmp_path):
    config = job()
    reference = _run(config, tmp_path / "reference")
    ckpt = tmp_path / "damaged"
    with pytest.raises(Interrupted):
        _run(config, ckpt, stop=_stop_after(16 + 11))
    latest = ckpt / checkpoint.LATEST
    latest.write_bytes(latest.read_bytes()[:512])
    lines: list[str] = []
    resumed = _run(config, ckpt, log=lines.append)
    assert any("unreadable" in line for line in lines)
    assert without_wall(resumed) == without_wall(reference)


def test_finished_job_re_emits_its_levels_without_training(job, tmp_path):
    levels = _run(job(), tmp_path)
    emitted: list[list[dict]] = []
    again = run_imp(job(), "cpu", tmp_path, emit=emitted.append, stop=lambda: pytest.fail("trained again"))
    assert emitted == [levels] and again == levels


def test_rewind_to_step_k_restores_exactly_the_weights_saved_at_k(job, tmp_path):
    config = job(prune={"levels": 1, "rewind": "step:5"})
    with pytest.raises(Interrupted):  # a run stopped right after step 5: its model is the step-5 model
        _run(config, tmp_path / "at5", stop=_stop_after(5))
    at_k = checkpoint.load(tmp_path / "at5")["model"]
    with pytest.raises(Interrupted):  # a run stopped at the first step of level 1
        _run(config, tmp_path / "full", stop=_stop_after(16 + 1))
    saved = checkpoint.load(tmp_path / "full")
    assert saved["rewind"].keys() == at_k.keys()
    assert all(torch.equal(saved["rewind"][k], at_k[k]) for k in at_k)

    # Starting a level from the end of the dense run: survivors take exactly their step-5 values.
    from scaling_sweep.schema import parse_config
    from scaling_sweep.train.data import load_dataset
    from scaling_sweep.train.imp import build

    opts = parse_config(config)
    data = load_dataset(opts.data, torch.device("cpu"))
    model = build(opts, data, torch.device("cpu"))
    dense_end = checkpoint.load(tmp_path / "full")["levels"]
    assert len(dense_end) == 1
    model.load_state_dict({k: v for k, v in saved["model"].items()})  # any trained state will do
    masks = Masks.of(model)
    start_level(model, masks, Progress(rewind=saved["rewind"]), PruneOptions(rewind="step:5"), 5)
    for key, value in model.state_dict().items():
        if key.endswith(MASK):
            continue
        mask = model.state_dict().get(key[: -len("weight")] + MASK) if key.endswith("weight") else None
        expected = at_k[key] if mask is None else at_k[key] * mask
        assert torch.equal(value, expected), key


def test_pruned_levels_after_epoch_rewinding_train_the_rest_of_the_budget(job, tmp_path):
    levels = _run(job(train={"epochs": 3}, prune={"levels": 1, "rewind": "epoch:1"}), tmp_path / "a")
    assert [(r["epochs"], r["steps"]) for r in levels] == [(3.0, 24), (2.0, 16)]
    levels = _run(job(prune={"levels": 1, "rewind": "lr"}), tmp_path / "b")
    assert [r["steps"] for r in levels] == [16, 16]


def test_rewind_point_outside_the_budget_is_an_option_error(job, tmp_path):
    with pytest.raises(ConfigError, match="step:99"):
        _run(job(prune={"rewind": "step:99"}), tmp_path)


def test_step_budget_rows_say_steps(job, tmp_path):
    levels = _run(job(train={"steps": 5, "epochs": None}, prune={"levels": 0}), tmp_path)
    assert (levels[0]["budget_unit"], levels[0]["steps"], levels[0]["epochs"]) == ("steps", 5, 5 / 8)


def test_oneshot_job_has_a_dense_row_and_one_pruned_row(job, tmp_path):
    levels = _run(job(prune={"method": "oneshot", "density": 0.3, "levels": 0}), tmp_path)
    assert [r["level"] for r in levels] == [0, 1]
    assert levels[1]["density"] == pytest.approx(0.3, abs=1e-3)


def test_target_density_sets_the_number_of_imp_levels(job, tmp_path):
    levels = _run(job(train={"epochs": 1}, prune={"density": 0.5, "levels": 0}), tmp_path)
    assert len(levels) == 1 + math.ceil(math.log(0.5) / math.log(0.8))
    assert levels[-1]["density"] <= 0.5


def test_checkpoint_of_another_job_is_refused(job, tmp_path):
    _run(job(prune={"levels": 0}), tmp_path)
    with pytest.raises(ValueError, match="another job"):
        _run(job(prune={"levels": 0}, seed=1), tmp_path)


def test_cifar_resnet_trains_with_augmentation_from_a_real_format_folder(job, cifar_root, tmp_path):
    config = job(
        model={"name": "cifar_resnet", "depth": 8, "width": 0.25},
        data={"name": "cifar10", "root": str(cifar_root), "fraction": 1.0, "augment": True},
        train={"steps": 3, "epochs": None, "batch_size": 32},
        prune={"levels": 1},
    )
    levels = _run(config, tmp_path)
    assert [r["n_train"] for r in levels] == [200, 200]
    assert levels[1]["density"] == pytest.approx(0.8, abs=1e-3)


def test_mnist1d_cnn_learns_well_dense_and_loses_accuracy_at_low_density(job, tmp_path):
    config = job(
        model={"name": "cnn1d", "width": 1.0, "depth": 3},
        data={"fraction": 1.0},
        train={"epochs": 8, "lr": 0.2, "schedule": "cosine", "checkpoint_every": 0},
        prune={"levels": 2, "rate": 0.9},
    )
    levels = _run(config, tmp_path)
    errors = [r["test_error"] for r in levels]
    assert [round(r["density"], 3) for r in levels] == [1.0, 0.1, 0.01]
    assert errors[0] < 0.15  # > 85 % test accuracy dense (chance is 90 % error)
    assert errors[2] > errors[0] + 0.05 and errors[2] > errors[1]


def test_augmented_channels_last_image_job_resumes_bitwise(job, cifar_root, tmp_path):
    config = job(
        model={"name": "cifar_resnet", "depth": 8, "width": 0.5},  # 8/16/32 channels: channels-last
        data={"name": "cifar10", "root": str(cifar_root), "fraction": 1.0, "augment": True},
        train={"epochs": 2, "batch_size": 64, "checkpoint_every": 1},
        prune={"levels": 1},
    )
    reference = _run(config, tmp_path / "reference")
    with pytest.raises(Interrupted):
        _run(config, tmp_path / "stopped", stop=_stop_after(4 + 2))  # 4 steps a level: mid-epoch in level 1
    assert without_wall(_run(config, tmp_path / "stopped")) == without_wall(reference)
