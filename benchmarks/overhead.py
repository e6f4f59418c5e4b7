"""Per-job overhead of the local launcher against Hydra's multirun (basic launcher), and `plan` on 10,000 jobs.

Run: python benchmarks/overhead.py [--jobs 200] [--workers 2]
Both sides run the same trivial task (no training) N times; each side's time covers everything a
user waits for: composing the config, expanding the grid, starting workers, bookkeeping, writing
results. Target: local launcher per-job overhead <= 1/3 of Hydra multirun's.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

HYDRA_APP = textwrap.dedent(
    """
    import hydra
    from omegaconf import DictConfig

    @hydra.main(version_base="1.3", config_path=None, config_name=None)
    def task(cfg: DictConfig) -> float:
        return 0.5  # the same trivial work as benchmarks/trivial.py

    if __name__ == "__main__":
        task()
    """
)


def hydra_multirun(n: int, workdir: Path) -> float:
    app = workdir / "app.py"
    app.write_text(HYDRA_APP)
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, str(app), "-m", f"+seed=range(0,{n})", f"hydra.sweep.dir={workdir / 'multirun'}"],
        check=True,
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0


def local_launcher(n: int, workers: int, workdir: Path) -> float:
    t0 = time.perf_counter()
    from launchers.local import LocalLauncher
    from scaling_sweep.cli import load_new
    from scaling_sweep.config import to_yaml

    loaded = load_new(
        [
            f"out_dir={workdir}",
            "grid.model.width=[1]",
            "grid.data.fraction=[1]",
            f"grid.seed=range(0,{n})",
            "prune.levels=0",
        ]
    )
    loaded.sweep.create(to_yaml(loaded.cfg))
    launcher = LocalLauncher(devices=["cpu"] * workers, train_fn="trivial:train", progress=False)
    result = launcher.launch(loaded.sweep, loaded.plan.specs)
    assert result.outcomes["done"] == n, result.outcomes
    return time.perf_counter() - t0


def plan_10k() -> tuple[float, float]:
    """Seconds for `scaling-sweep plan` on a 10,000-job grid, and for Hydra's sweeper to expand the same grid."""
    axes = [
        "grid.model.width=[1,2,3,4,5,6,7,8,9,10]",
        "grid.data.fraction=[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1]",
        "grid.seed=range(0,10)",
        "+grid.train.lr=[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0]",
    ]
    # --no-estimate: the plan itself; parameter counts, FLOPs and the timing calibration come on top
    # (about 6-9 s here for this grid, mostly importing torch and timing the models).
    ours = _median_seconds(
        [sys.executable, "-m", "scaling_sweep.cli", "plan", "--no-estimate", *axes], cwd=ROOT
    )
    hydra_axes = ["a=range(0,10)", "b=range(0,10)", "c=range(0,10)", "d=range(0,10)"]
    code = (
        "from hydra._internal.core_plugins.basic_sweeper import BasicSweeper\n"
        "from hydra.core.override_parser.overrides_parser import OverridesParser\n"
        f"o = OverridesParser.create().parse_overrides({hydra_axes!r})\n"
        "batches = BasicSweeper.split_arguments(o, None)\n"
        "assert sum(len(b) for b in batches) == 10000\n"
    )
    return ours, _median_seconds([sys.executable, "-c", code], cwd=ROOT)


def _median_seconds(cmd: list[str], cwd: Path, runs: int = 3) -> float:
    """Median wall time of a whole command: one run on a shared machine is too noisy to judge by."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=cwd, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        hydra_s = hydra_multirun(args.jobs, Path(d))
    with tempfile.TemporaryDirectory() as d:
        ours_s = local_launcher(args.jobs, args.workers, Path(d))
    h, o = hydra_s / args.jobs * 1e3, ours_s / args.jobs * 1e3
    print(f"{args.jobs} trivial jobs")
    print(f"  hydra multirun (basic launcher):   {hydra_s:6.2f} s  {h:6.1f} ms/job")
    print(f"  scaling-sweep local ({args.workers} workers):  {ours_s:6.2f} s  {o:6.1f} ms/job")
    print(f"  ratio ours/hydra: {o / h:.2f}  (target <= 0.33)")
    plan_s, hydra_plan_s = plan_10k()
    print("plan on a 10,000-job grid (median of 3 runs)")
    print(f"  scaling-sweep plan --no-estimate:          {plan_s:5.2f} s  (target < 1 s)")
    print(f"  hydra BasicSweeper expansion (python -c):  {hydra_plan_s:5.2f} s")
    print(f"  ratio ours/hydra: {plan_s / hydra_plan_s:.2f}")


if __name__ == "__main__":
    main()
