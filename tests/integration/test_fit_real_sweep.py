"""A real small MNIST-1D sweep made by the project, fitted and plotted by `run` itself."""

from __future__ import annotations

import json
import struct
import subprocess

from tests.conftest import CLI, ROOT, cli_env

SWEEP = [
    "sweep=mnist1d_imp",
    "model=mlp",
    "grid.model.width=[0.5,1]",
    "grid.data.fraction=[0.5,1]",
    "grid.seed=[0,1]",
    "prune.levels=8",
    "prune.rate=0.2",
    "prune.include_output_layer=false",
    "train.epochs=4",
    "train.lr=0.2",
    "launcher.devices=[cpu,cpu]",
]


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_run_ends_with_plots_and_a_pruning_fit_within_10_percent(tmp_path):
    p = subprocess.run(
        [*CLI, "run", f"out_dir={tmp_path}", *SWEEP],
        cwd=ROOT,
        env=cli_env(),
        text=True,
        capture_output=True,
        timeout=900,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    fit_dir = tmp_path / "mnist1d_imp" / "fit"
    assert f"wrote {fit_dir}/error_vs_density.png" in p.stdout
    params = json.loads((fit_dir / "params.json").read_text())
    pruning = params["laws"]["pruning2021"]
    assert pruning["points"] == 4 * 8  # 2 widths x 2 fractions, pruned levels 1..8, seeds averaged
    assert abs(pruning["sigma"]) < 0.10, pruning
    assert pruning["verdict"] in ("ok", "unconstrained", "misfit") and pruning["verdict_reason"]
    assert set(pruning["params"]["gamma"]) >= {"value", "ci95", "constrained"}
    for name in (
        "error_vs_density.png",
        "error_vs_n_train.png",
        "error_vs_params.png",
        "fit_error_vs_density.png",
        "fit_predicted_vs_measured.png",
        "fit_collapse.png",
    ):
        assert png_size(fit_dir / name) == (1200, 800), name
    quality = (fit_dir / "quality.md").read_text()
    assert "pruning2021" in quality and "σ" in quality
    assert quality.index("## Verdicts") < quality.index("## Fit quality")
