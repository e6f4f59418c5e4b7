"""What the terminal shows about a sweep: the plan/status table, its JSON form, and the end-of-run error summary."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from scaling_sweep.grid import Plan
from scaling_sweep.spec import ADDED_OPTIONS, JobSpec
from scaling_sweep.sweep import JobStatus, SweepDir

ORDER = ("done", "running", "failed", "interrupted", "pending")


def counts(statuses: Mapping[str, JobStatus]) -> dict[str, int]:
    c = Counter(s.status for s in statuses.values())
    return {k: c.get(k, 0) for k in ORDER}


def status_json(
    name: str,
    plan: Plan,
    statuses: Mapping[str, JobStatus],
    slurm: Mapping[str, str] | None = None,
    extra: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Everything `status --json` prints: counts and one entry per job (plus `extra[job_id]`'s keys)."""
    jobs = []
    for spec in plan.specs:
        st = statuses[spec.job_id]
        entry = {
            "job_id": spec.job_id,
            "status": st.status,
            "axes": dict(spec.axes),
            "levels_done": st.levels_done,
            "levels_total": st.levels_total,
            "stopped": st.stopped,
            "attempts": st.attempts,
            "owner": st.owner,
            "error": st.error,
            "problems": st.problems,
        }
        if slurm is not None:
            entry["slurm"] = slurm.get(spec.job_id, "")
        entry.update((extra or {}).get(spec.job_id, {}))
        jobs.append(entry)
    c = counts(statuses)
    return {
        "sweep": name,
        "grid_points": plan.n_points,
        "jobs": len(plan.specs),
        "folded": plan.folded,
        "counts": c,
        "to_run": c["pending"] + c["interrupted"],
        "problems": [p for s in statuses.values() for p in s.problems],
        "job_list": jobs,
    }


def fold_line(plan: Plan) -> str:
    levels = Counter(int(s.prune.get("levels") or 0) for s in plan.specs if s.prune.get("method") == "imp")
    oneshot = sum(1 for s in plan.specs if s.prune.get("method") != "imp")
    parts = []
    if levels:
        spread = ", ".join(f"{n} to level {lv}" for lv, n in sorted(levels.items()))
        parts.append(f"IMP trajectories: {sum(levels.values())} jobs ({spread}), one row per level")
    if oneshot:
        parts.append(f"one-shot: {oneshot} jobs, one per density")
    folded = f"{plan.n_points} grid points -> {len(plan.specs)} jobs" + (
        f" ({plan.folded} density points folded into IMP trajectories)" if plan.folded else ""
    )
    return folded + "; " + "; ".join(parts)


def early_stop_line(plan: Plan) -> str:
    """How jobs may end before their last level (the plan cannot know where: that depends on the training)."""
    imp = [s.prune for s in plan.specs if s.prune.get("method") == "imp"]
    oneshot = len(plan.specs) - len(imp)
    default = ADDED_OPTIONS["prune"]  # a sweep frozen before these options existed runs with these
    rules = sorted(
        {
            (
                int(p.get("stop_at_chance", default["stop_at_chance"])),
                float(p.get("chance_margin", default["chance_margin"])),
            )
            for p in imp
        },
        reverse=True,
    )
    chance = [
        f"after {k} consecutive levels at chance (test error >= 1 - 1/classes - {m:g})"
        for k, m in rules
        if k > 0
    ]
    parts = []
    if imp:
        last = "before pruning would remove the last weights of a layer"
        parts.append("IMP trajectories stop early " + " or ".join([*chance, last]))
    if oneshot:
        parts.append("one-shot jobs keep only their dense row if pruning would empty a layer")
    return "; ".join(parts)


def levels_cell(st: JobStatus) -> str:
    """Levels done / total, and why a trajectory that stopped early has fewer than planned."""
    cell = f"{st.levels_done}/{st.levels_total}"
    if not st.stopped:
        return cell
    reason = st.stopped.get("reason")
    if reason == "chance":
        return cell + " (stopped at chance)"
    if reason == "layer_empty":
        return cell + f" (stopped before {st.stopped.get('layer', 'a layer')} emptied)"
    return cell + f" (stopped: {reason})"


def print_status(
    console: Console,
    title: str,
    plan: Plan,
    statuses: Mapping[str, JobStatus],
    slurm: Mapping[str, str] | None = None,
    first: int = 8,
    columns: Mapping[str, Mapping[str, str]] | None = None,
) -> None:
    """The plan/status screen: counts, folding, problems, the first few jobs with their axes (and `columns`)."""
    c = counts(statuses)
    console.print(f"[bold]{title}[/bold]")
    console.print(fold_line(plan))
    stops = early_stop_line(plan)
    if stops:
        console.print(stops)
    console.print(
        "  ".join(f"{k} [bold]{v}[/bold]" for k, v in c.items())
        + f"  to run [bold]{c['pending'] + c['interrupted']}[/bold]"
    )
    problems = [p for s in statuses.values() for p in s.problems]
    for p in problems[:10]:
        console.print(f"[yellow]problem[/yellow] {p}")
    if len(problems) > 10:
        console.print(f"[yellow]… and {len(problems) - 10} more problems[/yellow]")
    axes = list(plan.specs[0].axes) if plan.specs else []
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("job_id", no_wrap=True, min_width=16)
    table.add_column("status", no_wrap=True)
    columns = columns or {}
    for col in ["levels", *axes, *columns] + (["slurm"] if slurm is not None else []):
        table.add_column(col)
    for spec in plan.specs[:first]:
        st = statuses[spec.job_id]
        row = [
            spec.job_id,
            st.status + (f" ({st.owner})" if st.owner else ""),
            levels_cell(st),
        ] + [_fmt(spec.axes.get(a)) for a in axes]
        row += [values.get(spec.job_id, "") for values in columns.values()]
        if slurm is not None:
            row.append(slurm.get(spec.job_id, ""))
        table.add_row(*row)
    console.print(table)
    if len(plan.specs) > first:
        console.print(f"… {len(plan.specs) - first} more jobs (--json lists all)")
    failed = [s for s in statuses.values() if s.status == "failed"]
    for s in failed[:5]:
        console.print(f"[red]failed[/red] {s.job_id}: {s.error}")


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def summary_tables(table: Any, densities: Sequence[float]) -> list[Table]:
    """Mean test error (over seeds and other axes) by width x data fraction at a few densities."""
    df = table.to_pandas()
    if df.empty:
        return []
    out = []
    for target in densities:
        # Each job's level closest to the target density, then the mean over seeds.
        near = df.loc[(df["density"] - target).abs().groupby(df["job_id"]).idxmin()]
        near = near[(near["density"] - target).abs() <= 0.25 * target]
        if near.empty:
            continue
        pivot = near.pivot_table(index="width", columns="data_fraction", values="test_error", aggfunc="mean")
        dens = near["density"].mean()
        t = Table(title=f"test error, density ≈ {dens:.3g}", caption="mean over seeds", show_edge=False)
        t.add_column("width \\ fraction")
        for col in pivot.columns:
            t.add_column(f"{col:g}", justify="right")
        for w, row in pivot.iterrows():
            t.add_row(f"{w:g}", *[("" if v != v else f"{v:.3f}") for v in row])
        out.append(t)
    return out


def code_lines(plan: Plan, sweep: SweepDir) -> list[str]:
    """The user components a plan imports, and how many planned jobs are new only because their code changed.

    A job is "new because code changed" when the sweep directory holds a job with the same
    configuration whose recorded source hashes differ (the edited code makes it another job).
    """
    import json

    from scaling_sweep import targets

    lines = []
    seen: dict[str, str] = {}
    for spec in plan.specs:
        for where, t in targets.find(spec.trainer_config()).items():
            key = f"{where} {t.path}"
            if key not in seen:
                seen[key] = f"{targets.source_file(t.module)}, source {spec.code[where]}"
    lines += [f"user code: {k} ({v})" for k, v in seen.items()]
    if not seen or not (sweep.path / "jobs").is_dir():
        return lines
    planned = {_without_code(spec.identity()): spec for spec in plan.specs if spec.code}
    changed: Counter[str] = Counter()
    for path in (sweep.path / "jobs").glob("*/spec.json"):
        try:
            old = JobSpec.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        new = planned.get(_without_code(old.identity()))
        if new is not None and new.job_id != old.job_id:
            for where in sorted(set(new.code) | set(old.code)):
                if new.code.get(where) != old.code.get(where):
                    changed[where] += 1
    for where, n in changed.items():
        lines.append(
            f"new because code changed: {n} jobs ({where} source differs from the jobs already in {sweep.path})"
        )
    return lines


def _without_code(identity: Mapping[str, Any]) -> str:
    import json

    return json.dumps({k: v for k, v in identity.items() if k != "code"}, sort_keys=True)


# -- plan: what the jobs are and what they cost (scaling_sweep.estimate) ----------------------------


def plan_columns(counts: Mapping[str, Any], estimates: Any) -> dict[str, dict[str, str]]:
    """The plan table's extra columns: params, prunable params, flops/example, estimate (censuses from train.census)."""

    def cell(job_id: str, what: str) -> str:
        c = counts.get(job_id)
        if c is None:
            return "when loaded"
        if what == "params":
            return f"{c.params_trainable:,}"
        if what == "prunable":
            return f"{c.params_prunable:,} of {c.params_total:,}"
        return _si(c.flops_per_example)

    columns = (
        {
            "params": {i: cell(i, "params") for i in counts},
            "prunable params": {i: cell(i, "prunable") for i in counts},
            "flops/example": {i: cell(i, "flops") for i in counts},
        }
        if counts
        else {}
    )
    if estimates is not None:
        from scaling_sweep.estimate import seconds_text

        columns["estimate"] = {i: seconds_text(e.seconds) for i, e in estimates.jobs.items()}
    return columns


def _si(n: float | None) -> str:
    if n is None:
        return ""
    for div, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:g}"


def estimate_json(
    plan: Plan, counts: Mapping[str, Any], estimates: Any, to_run: Sequence[str], workers: int, order: str
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """(per-job keys, top-level keys) that `plan --json` adds: parameters, FLOPs and the estimate in seconds."""
    from scaling_sweep.estimate import ordered, wall_clock

    extra: dict[str, dict[str, Any]] = {}
    for spec in plan.specs:
        entry: dict[str, Any] = {}
        c = counts.get(spec.job_id)
        if c is not None:
            entry.update(
                params_total=c.params_total,
                params_prunable=c.params_prunable,
                params=c.params_trainable,
                flops_per_example=c.flops_per_example,
            )
        e = estimates.jobs.get(spec.job_id) if estimates is not None else None
        entry.update(
            estimate_s=_round(e.seconds if e else None),
            estimate_max_s=_round(e.upper_s if e else None),
            estimate_levels=e.levels if e else None,
            estimate_source=e.source if e else "unknown",
        )
        extra[spec.job_id] = entry
    totals: dict[str, Any] = {"estimate_total_s": None, "estimate_to_run_s": None, "estimate_wall_s": None}
    if estimates is not None:
        run = set(to_run)
        jobs = [s for s in ordered(plan.specs, order, estimates) if s.job_id in run]
        to_run_s = estimates.total([s.job_id for s in jobs])
        wall = (
            None
            if to_run_s is None
            else wall_clock([estimates.jobs[s.job_id].seconds for s in jobs], workers)
        )
        totals = {
            "estimate_total_s": _round(estimates.total()),
            "estimate_to_run_s": _round(to_run_s),
            "estimate_wall_s": _round(wall),
        }
    return extra, {**totals, "workers": workers}


def _round(s: float | None) -> float | None:
    return None if s is None else round(s, 3)


def estimate_line(plan: Plan, estimates: Any, to_run: Sequence[str], workers: int, order: str) -> str:
    """One line under the plan table: device time of the jobs to run, the wall clock on the launcher's
    workers in launch order, the upper bound if no trajectory stops early, and what the numbers rest on."""
    from scaling_sweep.estimate import ordered, seconds_text, wall_clock

    run = set(to_run)
    jobs = [estimates.jobs[s.job_id] for s in ordered(plan.specs, order, estimates) if s.job_id in run]
    if not jobs:
        return f"estimate: nothing to run ({seconds_text(estimates.total())} of device time in finished jobs)"
    known = [e for e in jobs if e.seconds is not None]
    if not known:
        why = estimates.untimed or "the data's size and shape are known only once it is loaded"
        return f"estimate: unknown until jobs of these kinds have finished ({why})"
    total = sum(e.seconds for e in known)
    upper = sum(e.upper_s for e in known)
    wall = wall_clock([e.seconds for e in known], workers)
    sources = Counter(e.source for e in jobs)
    basis = []
    if sources.get("finished jobs"):
        basis.append(f"{sources['finished jobs']} from the sweep's finished jobs")
    if sources.get("calibration"):
        timed = f", {estimates.timed} model(s) timed in {estimates.timed_s:.1f} s" if estimates.timed else ""
        basis.append(f"{sources['calibration']} from steps timed on this machine{timed}")
    if sources.get("unknown"):
        why = estimates.untimed or "their data's size and shape are known only once it is loaded"
        basis.append(f"{sources['unknown']} unknown ({why}), not counted")
    deeper = f"; {seconds_text(upper)} if no trajectory stopped early" if upper > total * 1.001 else ""
    return (
        f"estimate: {seconds_text(total)} of device time for {len(known)} jobs to run, about "
        f"{seconds_text(wall)} on {workers} worker(s){deeper} ({'; '.join(basis)})"
    )
