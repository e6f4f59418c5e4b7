"""The plan/status screen's notes on early stops: the header line and the levels cell."""

from __future__ import annotations

from scaling_sweep.grid import expand
from scaling_sweep.report import early_stop_line, levels_cell
from scaling_sweep.sweep import JobStatus
from tests.conftest import composed


def test_plan_header_says_how_trajectories_stop_early():
    line = early_stop_line(expand(composed("sweep=smoke")))
    assert line.startswith("IMP trajectories stop early after 2 consecutive levels at chance")
    assert "0.02" in line and "last weights of a layer" in line
    off = early_stop_line(expand(composed("sweep=smoke", "prune.stop_at_chance=0")))
    assert "chance" not in off and "last weights of a layer" in off
    oneshot = early_stop_line(expand(composed("prune=oneshot", "+grid.prune.density=[0.5]")))
    assert oneshot.startswith("one-shot jobs keep only their dense row")


def test_levels_cell_shows_why_a_trajectory_has_fewer_levels():
    assert levels_cell(JobStatus("a", "done", 3, 3)) == "3/3"
    chance = JobStatus("b", "done", 9, 9, stopped={"level": 8, "reason": "chance"})
    assert levels_cell(chance) == "9/9 (stopped at chance)"
    empty = JobStatus("c", "done", 6, 6, stopped={"level": 5, "reason": "layer_empty", "layer": "body.1"})
    assert levels_cell(empty) == "6/6 (stopped before body.1 emptied)"
