"""How often the joint pruning law's 95 % intervals cover the true parameters, on noisy copies of a rich grid.

Baseline, measured in the same run: the Jacobian standard errors (value ± 1.96 s.e.), which treat each
configuration's ε_np as exact. Prints, per parameter, the coverage of both, and the ratio of the estimates'
real spread to the reported standard error (1 is honest; above 1 the error bars are too small).

    python benchmarks/fit_coverage.py [--copies 40] [--replicates 100] [--seeds 3] [--noise 0.02] [--run-noise 0.02]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fit"))
from conftest import PRUNING, make_pruning  # noqa: E402  (the tests' generator of the 2021 law)

from scaling_sweep.fit import fit_table  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=40)
    ap.add_argument("--replicates", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--levels", type=int, default=25)
    ap.add_argument("--noise", type=float, default=0.02, help="relative noise of each point")
    ap.add_argument(
        "--run-noise", type=float, default=0.02, help="relative noise of each run, shared by all its levels"
    )
    args = ap.parse_args()

    boot_hits = {k: 0 for k in PRUNING}
    jac_hits = {k: 0 for k in PRUNING}
    est, boot_sd, jac_sd = ({k: [] for k in PRUNING} for _ in range(3))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        for copy in range(args.copies):
            table = make_pruning(
                seed=1000 + copy,
                noise=args.noise,
                run_noise=args.run_noise,
                seeds=args.seeds,
                levels=args.levels,
            )
            report = fit_table(
                table, out, laws=["pruning2021"], folds=0, plots=False, bootstrap=args.replicates, n_starts=4
            )
            fit = report.fits["pruning2021"]
            for name, truth in PRUNING.items():
                value, stderr = fit.params[name]
                iv = fit.intervals[name]
                boot_hits[name] += iv.low <= truth <= iv.high
                jac_hits[name] += abs(value - truth) <= 1.96 * stderr
                est[name].append(value)
                boot_sd[name].append(iv.std)
                jac_sd[name].append(stderr)
    n = args.copies
    print(
        f"{n} copies of 3 depths x 3 widths x {args.seeds} seeds x {args.levels} levels, {args.noise:.0%} noise "
        f"per point and {args.run_noise:.0%} per run, "
        f"{args.replicates} bootstrap replicates each; {time.perf_counter() - t0:.0f} s"
    )
    print(
        f"{'parameter':10} {'bootstrap 95%':>14} {'jacobian 95%':>13} {'spread/boot s.e.':>17} {'spread/jac s.e.':>16}"
    )
    for name in PRUNING:
        spread = np.std(est[name], ddof=1)
        print(
            f"{name:10} {boot_hits[name] / n:14.2f} {jac_hits[name] / n:13.2f} "
            f"{spread / np.mean(boot_sd[name]):17.2f} {spread / np.mean(jac_sd[name]):16.2f}"
        )
    boot = sum(boot_hits.values()) / (n * len(PRUNING))
    jac = sum(jac_hits.values()) / (n * len(PRUNING))
    print(
        f"overall coverage: bootstrap {boot:.2f}, jacobian {jac:.2f} (nominal 0.95); ratio {boot / jac:.2f}"
    )


if __name__ == "__main__":
    main()
