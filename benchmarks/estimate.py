"""How close `plan`'s estimate comes to the measured time of the default sweep (target: within 30 %).

Run: python benchmarks/estimate.py [overrides...]   (default: the default sweep, fit off; ~2 min on 2 cores)
In one process, as `scaling-sweep plan --json` then `scaling-sweep run` would: the plan's estimate
(per job, total device time, wall clock on the launcher's workers), then the run, with each job's time
from hand-out to its end as the launcher saw it. Prints estimated vs measured and their ratio, for
the device time, the wall clock and the levels (the early-stop model), and per width. On a shared
machine the wall times grow with other people's load and the estimate does not (it times CPU time);
the workers' CPU time is printed too, as the load-free measure (it includes their start, ~2 s each).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]


def main() -> None:
    import launchers.progress as progress_mod
    from scaling_sweep.cli import main as cli

    measured: dict[str, float] = {}
    original_ended = progress_mod.SweepProgress.job_ended

    def job_ended(self, job_id, outcome, error, job_dir, running):  # type: ignore[no-untyped-def]
        t0 = self.started.get(job_id)
        if t0 is not None and outcome == "done":
            measured[job_id] = time.monotonic() - t0
        return original_ended(self, job_id, outcome, error, job_dir, running)

    progress_mod.SweepProgress.job_ended = job_ended  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as out:
        args = [f"out_dir={out}", "name=est_check", "fit.enabled=false", *sys.argv[1:]]
        t0 = time.perf_counter()
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert cli(["plan", "--json", *args]) == 0
        plan_s = time.perf_counter() - t0
        plan = json.loads(buf.getvalue())
        t0, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
        with contextlib.redirect_stdout(io.StringIO()):
            assert cli(["run", "--no-progress", *args]) == 0
        run_s = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        load = os.getloadavg()[0]
        levels = {}
        for path in (Path(out) / "est_check" / "rows").glob("*.parquet"):
            import pyarrow.parquet as pq

            levels[path.stem] = pq.read_table(path).num_rows
    jobs = {j["job_id"]: j for j in plan["job_list"]}
    est = sum(j["estimate_s"] for j in jobs.values())
    real = sum(measured.values())
    print(
        f"{len(jobs)} jobs, {plan['workers']} workers; plan (calibration included) {plan_s:.1f} s; "
        f"load average at the end {load:.1f}"
    )
    print(f"  device time  estimated {est:7.1f} s  measured {real:7.1f} s  ratio {est / real:.2f}")
    print(f"  workers' CPU time {cpu:.1f} s: ratio {est / cpu:.2f}")
    print(
        f"  wall clock   estimated {plan['estimate_wall_s']:7.1f} s  measured {run_s:7.1f} s  ratio "
        f"{plan['estimate_wall_s'] / run_s:.2f}  (run includes worker start and collect)"
    )
    upper = sum(j["estimate_max_s"] for j in jobs.values())
    print(f"  upper bound (every planned level) {upper:.1f} s, ratio {upper / real:.2f}")
    lv_est, lv_real = sum(j["estimate_levels"] for j in jobs.values()), sum(levels.values())
    print(f"  levels       estimated {lv_est} measured {lv_real} ratio {lv_est / lv_real:.2f}")
    by = defaultdict(lambda: [0.0, 0.0, 0, 0])
    for i, j in jobs.items():
        w = j["axes"].get("model.width")
        by[w][0] += j["estimate_s"]
        by[w][1] += measured.get(i, 0.0)
        by[w][2] += j["estimate_levels"]
        by[w][3] += levels.get(i, 0)
    for w, (e, m, le, lm) in sorted(by.items()):
        print(f"  width {w}: {e:6.1f} s vs {m:6.1f} s (ratio {e / m:.2f}); levels {le} vs {lm}")


if __name__ == "__main__":
    main()
