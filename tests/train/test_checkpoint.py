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


def test_flipped_bytes_in_the_latest_fail_its_checksum_and_the_previous_is_used(tmp_path):
    checkpoint.save(tmp_path, {"step": 1, "w": torch.ones(1000)})
    checkpoint.save(tmp_path, {"step": 2, "w": torch.ones(1000)})
    latest = tmp_path / checkpoint.LATEST
    data = bytearray(latest.read_bytes())
    data[len(data) // 2] ^= 0xFF  # still a readable zip: only the checksum can tell
    latest.write_bytes(bytes(data))
    lines: list[str] = []
    assert checkpoint.load(tmp_path, lines.append)["step"] == 1
    assert any("checksum fails" in line for line in lines)
    assert (tmp_path / (checkpoint.LATEST + ".unreadable")).exists()
    checkpoint.save(tmp_path, {"step": 3})  # the good previous one is kept, and both verify
    assert checkpoint.load(tmp_path)["step"] == 3
    assert torch.load(tmp_path / checkpoint.PREVIOUS, weights_only=True)["step"] == 1
    assert checkpoint._read(tmp_path / checkpoint.PREVIOUS)["step"] == 1
