"""Packed vs unpacked: the default sweep's jobs per hour, and the share of the FLOP limit, on this machine.

Run: python benchmarks/packing.py [--rounds N] [--why] [overrides...]   (~10 min on 2 cores with 3 rounds)

Each round runs the default sweep through the CLI twice in fresh directories, with the same workers
(launcher defaults: one 1-thread worker per core): once with launcher.pack=off (one model per
worker) and once with launcher.pack=auto; the order alternates between rounds, and the medians are
compared. Time is the launch's own ("finished in", from the first job handed out to the last row),
so the plan's calibration and the fit are left out of both. Two sets of jobs: the whole default
sweep, and its widths <= 0.5 (the issue's target: 3x), which the last line reports.

The FLOP limit is a 2048 x 2048 fp32 matmul on one thread, measured here in this run, times the
number of workers. A sweep's FLOPs are the forward + backward FLOPs of one training step of each
model (torch.utils.flop_counter, batch 128, dense: a pruned weight still costs its multiply in a
dense kernel) times the steps each job trained (the `steps` column of its rows).

`--why` (about 2 more minutes) also measures where the ratio goes: one model's training step alone
(plan's own calibration of the trainer's step, scaling_sweep.estimate.calibrate) against its share
of a stacked step of 3 and of 9 models, per width; and each width's 9 jobs of the
default sweep in one process, one after another against one pack, the two widths side by side in two
processes as the two workers run them.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

SUBSETS = {
    "the default sweep, all widths": [],
    "widths <= 0.5": ["grid.model.width=[0.25,0.5]"],
}


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    """fp32 GFLOP/s of an n x n matmul on one thread (what one worker has)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        t0 = time.perf_counter()
        for _ in range(repeats):
            a @ b
        return 2 * n**3 * repeats / (time.perf_counter() - t0) / 1e9
    finally:
        torch.set_num_threads(threads)


def step_flops(width: float, depth: int, batch: int = 128) -> float:
    """Forward + backward FLOPs of one training step of the default sweep's cnn1d."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from scaling_sweep.schema import ModelOptions
    from scaling_sweep.train.models import build_model

    model = build_model(ModelOptions(name="cnn1d", width=width, depth=depth), (1, 40), 10)
    x, y = torch.randn(batch, 1, 40), torch.randint(0, 10, (batch,))
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    return float(counter.get_total_flops())


def default_specs(width: float) -> list:
    """The default sweep's 9 jobs of one width."""
    from omegaconf import OmegaConf

    from scaling_sweep import config
    from scaling_sweep.grid import expand

    cfg = config.compose([f"grid.model.width=[{width}]"])
    return expand(OmegaConf.to_container(cfg, resolve=True)).specs


def alone_ms(width: float) -> float:
    """ms per training step of one model alone on one thread: plan's own timing of the trainer's step."""
    from scaling_sweep.estimate import calibrate

    return calibrate(default_specs(width)[0], threads=1, device="cpu").step_s * 1e3


def stacked_ms(width: float, k: int, steps: int = 200) -> float:
    """ms per training step of 128 on one thread: one model's share of a stacked step of k (train/packed.py)."""
    import torch

    from scaling_sweep.schema import ModelOptions
    from scaling_sweep.train.models import build_model
    from scaling_sweep.train.packed import Stack, keep_freed_memory
    from scaling_sweep.train.pruning import attach_masks

    keep_freed_memory()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        models = []
        for _ in range(k):
            model = build_model(ModelOptions(name="cnn1d", width=width, depth=3), (1, 40), 10)
            attach_masks(model, True, None, None)
            models.append(model)
        x, y = torch.randn(k, 128, 1, 40), torch.randint(0, 10, (k, 128))
        stack, rows = Stack(models, 0.9, False, 5e-4), list(range(k))
        for _ in range(steps // 4):
            stack.step(rows, x, y, [0.1] * k)
        t0 = time.perf_counter()
        for _ in range(steps):
            stack.step(rows, x, y, [0.1] * k)
        return (time.perf_counter() - t0) / steps * 1e3 / k
    finally:
        torch.set_num_threads(threads)


def one_width(width: float, packed: bool) -> float:
    """Seconds to train the default sweep's 9 jobs of one width in this process: one pack, or one after another."""
    import torch

    from scaling_sweep.train.imp import run_imp
    from scaling_sweep.train.packed import Member, run_pack

    torch.set_num_threads(1)
    configs = [s.trainer_config() for s in default_specs(width)]
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        if packed:
            run_pack([Member(c, Path(out) / str(i), lambda rows: None) for i, c in enumerate(configs)], "cpu")
        else:
            for i, c in enumerate(configs):
                run_imp(c, "cpu", Path(out) / str(i), lambda rows: None)
        return time.perf_counter() - t0


def why() -> None:
    print("why (one thread, a training step of 128):")
    for width in (0.25, 0.5, 1.0):
        alone, share = alone_ms(width), {k: stacked_ms(width, k) for k in (3, 9)}
        shares = ", ".join(f"of {k}: {ms:.2f} ms ({alone / ms:.1f}x)" for k, ms in share.items())
        print(f"  cnn1d width {width:g}: alone {alone:.2f} ms; a model's share of a stacked step {shares}")
    print("each width's 9 jobs in one process, the two widths side by side (as the two workers run them):")
    seconds: dict[tuple[float, bool], float] = {}
    for packed in (False, True):
        procs = {
            w: subprocess.Popen(
                [sys.executable, __file__, "--one-width", str(w), "pack" if packed else "alone"],
                stdout=subprocess.PIPE,
                text=True,
            )
            for w in (0.25, 0.5)
        }
        for w, proc in procs.items():
            out, _ = proc.communicate()
            seconds[w, packed] = float(out.strip().splitlines()[-1])
    for w in (0.25, 0.5):
        print(
            f"  width {w:g}: one after another {seconds[w, False]:.1f} s, one pack {seconds[w, True]:.1f} s "
            f"({seconds[w, False] / seconds[w, True]:.2f}x)"
        )
    alone = seconds[0.25, False] + seconds[0.5, False]
    longest = max(seconds[0.25, True], seconds[0.5, True])
    print(
        f"  two workers wait for the longer pack: ({seconds[0.25, False]:.1f} + {seconds[0.5, False]:.1f}) / 2 "
        f"/ {longest:.1f} = {alone / 2 / longest:.2f}x"
    )


def run_sweep(out: str, pack: str, extra: list[str]) -> tuple[float, Path]:
    """One run through the CLI; the launch's seconds and the sweep directory."""
    name = f"pack_{pack}"
    cmd = [
        sys.executable,
        "-m",
        "scaling_sweep.cli",
        "run",
        "--no-progress",
        f"out_dir={out}",
        f"name={name}",
    ]
    cmd += ["fit.enabled=false", f"launcher.pack={pack}", *extra]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ))
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
    found = re.search(r"finished in ([0-9.]+)s: done (\d+)", p.stdout)
    if not found:
        raise SystemExit(f"no 'finished in' line in:\n{p.stdout}")
    return float(found.group(1)), Path(out) / name


def sweep_flops(sweep_dir: Path) -> tuple[int, float]:
    """(jobs, training FLOPs) of a finished sweep, from its rows."""
    import pyarrow.parquet as pq

    rows = pq.read_table(sweep_dir / "results.parquet").to_pylist()
    per_step: dict[tuple[float, int], float] = {}
    total = 0.0
    for r in rows:
        key = (float(r["width"]), int(r["depth"]))
        if key not in per_step:
            per_step[key] = step_flops(*key)
        total += per_step[key] * int(r["steps"])
    return len({r["job_id"] for r in rows}), total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=sorted(SUBSETS), help="one set of jobs instead of both")
    parser.add_argument("--why", action="store_true", help="also measure where the ratio goes (~2 min)")
    parser.add_argument("--one-width", nargs=2, metavar=("WIDTH", "HOW"), help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for both runs")
    args = parser.parse_args()
    if args.one_width:  # a child of --why
        print(one_width(float(args.one_width[0]), args.one_width[1] == "pack"))
        return

    workers = os.cpu_count() or 1
    per_worker = matmul_gflops()
    limit = per_worker * workers
    print(
        f"FLOP limit: a 2048^2 fp32 matmul on 1 thread, {per_worker:.1f} GFLOP/s, x {workers} workers = {limit:.0f} GFLOP/s"
    )
    for width in (0.25, 0.5, 1.0):
        print(f"  cnn1d width {width:g}: {step_flops(width, 3) / 1e6:.2f} MFLOP per training step of 128")

    ratio = 0.0
    for label, extra in SUBSETS.items():
        if args.only and label != args.only:
            continue
        times: dict[str, list[float]] = {"off": [], "auto": []}
        flops: dict[str, float] = {}
        jobs = 0
        for r in range(args.rounds):
            for pack in ("off", "auto") if r % 2 == 0 else ("auto", "off"):
                with tempfile.TemporaryDirectory() as out:
                    seconds, sweep_dir = run_sweep(out, pack, [*extra, *args.overrides])
                    jobs, flops[pack] = sweep_flops(sweep_dir)
                times[pack].append(seconds)
                print(f"  {label}, round {r + 1}, pack={pack}: {seconds:.1f} s", flush=True)
        off, auto = statistics.median(times["off"]), statistics.median(times["auto"])
        ratio = off / auto
        share = {p: flops[p] / (statistics.median(times[p]) * limit * 1e9) for p in flops}
        print(
            f"{label} ({jobs} jobs), medians of {args.rounds} alternating rounds: one model per worker "
            f"{off:.1f} s ({jobs / off * 3600:.0f} jobs/h, {share['off']:.2%} of the FLOP limit), packed "
            f"{auto:.1f} s ({jobs / auto * 3600:.0f} jobs/h, {share['auto']:.2%} of the limit): {ratio:.2f}x"
        )
    if args.why:
        why()
    print(f"packed/unpacked jobs per hour: {ratio:.2f}x")


if __name__ == "__main__":
    main()
