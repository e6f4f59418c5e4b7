"""The two worked examples of docs/custom.md, run as a user would: from their directory, through the command line."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pyarrow.parquet as pq

from tests.conftest import CLI, ROOT, cli_env

EXAMPLES = ROOT / "docs" / "examples"
QUICK = ["--no-progress", "train.epochs=1", "prune.levels=1", "fit.enabled=false"]


def run_example(name: str, sweep: str, out: Path, *extra: str) -> list[dict]:
    p = subprocess.run(
        [*CLI, "run", "--config-dir", "configs", f"sweep={sweep}", f"out_dir={out}", *QUICK, *extra],
        cwd=EXAMPLES / name,
        env=cli_env(),
        text=True,
        capture_output=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    return pq.read_table(out / sweep / "results.parquet").to_pylist()


def test_tiny_vit_on_digits_prunes_its_attention_weights(tmp_path):
    rows = run_example("vit", "vit_digits", tmp_path)
    assert len(rows) == 4 * 2  # 2 widths x 2 fractions, levels 0 and 1
    assert {r["model"] for r in rows} == {"TinyViT"} and {r["width"] for r in rows} == {0.5, 1.0}
    assert {r["n_train"] for r in rows} == {719, 1437}  # digits: half and all of 1437 training images
    pruned = [r for r in rows if r["level"] == 1]
    assert all(abs(r["density"] - 0.5) < 0.01 for r in pruned)
    # The prunable count includes the attention projections: at width 1 (dim 32) in_proj alone is 3 x 32 x 32.
    wide = next(r for r in rows if r["width"] == 1.0)
    assert wide["params_prunable"] == 16_512 and wide["params_total"] == 18_154
    assert all(0 < r["test_error"] < 0.9 for r in rows)


def test_character_language_model_on_a_text_file(tmp_path):
    rows = run_example("charlm", "charlm_widths", tmp_path, "grid.model.width=[0.5]")
    assert len(rows) == 2 * 2
    by_fraction = {r["data_fraction"]: r["n_train"] for r in rows}
    blocks = (int(len((EXAMPLES / "charlm" / "scaling.txt").read_text()) * 0.9) - 1) // 32
    assert by_fraction == {1.0: blocks, 0.5: -(-blocks // 2)}  # a fraction cuts blocks, never targets
    assert all(0 < r["test_error"] < 1 for r in rows) and {r["dataset"] for r in rows} == {"scaling_text"}
