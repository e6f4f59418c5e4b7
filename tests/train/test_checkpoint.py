"""Checkpoint files: the previous one is kept, an unreadable latest one falls back to it."""

import torch

from scaling_sweep.train import checkpoint


def test_saving_keeps_the_previous_checkpoint(tmp_path):
    checkpoint.save(tmp_path, {"step": 1, "w": torch.ones(3)})
    checkpoint.save(tmp_path, {"step": 2, "w": torch.zeros(3)})
    assert checkpoint.load(tmp_path)["step"] == 2
    assert (tmp_path / checkpoint.PREVIOUS).exists()
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]


def test_truncated_latest_falls_back_to_previous_and_says_so(tmp_path):
    checkpoint.save(tmp_path, {"step": 1})
    checkpoint.save(tmp_path, {"step": 2, "w": torch.randn(1000)})
    latest = tmp_path / checkpoint.LATEST
    latest.write_bytes(latest.read_bytes()[:100])
    lines: list[str] = []
    state = checkpoint.load(tmp_path, lines.append)
    assert state["step"] == 1
    assert any("unreadable" in line for line in lines) and any("previous" in line for line in lines)
    # The next save must not rotate the bad file over the good previous one.
    checkpoint.save(tmp_path, {"step": 3})
    assert checkpoint.load(tmp_path)["step"] == 3
    assert torch.load(tmp_path / checkpoint.PREVIOUS, weights_only=True)["step"] == 1


def test_nothing_readable_means_start_fresh(tmp_path):
    assert checkpoint.load(tmp_path) is None
    (tmp_path / checkpoint.LATEST).write_bytes(b"not a checkpoint")
    assert checkpoint.load(tmp_path) is None
