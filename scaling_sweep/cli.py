"""The `scaling-sweep` command: run, plan, status, resume, retry, collect, fit, plot, cancel."""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Run as the command, a Ctrl-C while it still imports (a second or more) would end in a traceback
# from inside whatever library was loading; blocked here, it arrives once main() is ready for it.
_COMMAND = __name__ == "__main__" or Path(sys.argv[0]).name == "scaling-sweep"
if _COMMAND:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.markup import escape

from scaling_sweep import config as config_mod
from scaling_sweep import history, targets, tracking
from scaling_sweep.errors import ConfigError
from scaling_sweep.grid import Plan
from scaling_sweep.history import plan_all, training_diff  # noqa: F401  (training_diff: part of the CLI's API)
from scaling_sweep.report import code_lines
from scaling_sweep.spec import JobSpec
from scaling_sweep.sweep import SweepDir

# Pipes and logs get a wide console rather than rich's 80-column default, so nothing is cut.
console = Console(highlight=False, width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 140)


# -- config helpers ------------------------------------------------------------------------


def _plain(cfg: DictConfig) -> dict[str, Any]:
    try:
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except Exception as e:
        raise ConfigError(f"config: {config_mod._one_line(e)}") from e


def _launcher_group(cfg: DictConfig, overrides: list[str]) -> tuple[DictConfig, list[str]]:
    # `launcher=slurm` names a config group file; apply it before key overrides.
    rest = []
    for o in overrides:
        if o.startswith("launcher=") and "." not in o.split("=", 1)[0]:
            name = o.split("=", 1)[1]
            path = config_mod.config_dir() / "launcher" / f"{name}.yaml"
            if not path.is_file():
                known = sorted(p.stem for p in path.parent.glob("*.yaml"))
                raise ConfigError(f"launcher={name!r} is unknown; known launchers: {', '.join(known)}")
            cfg = OmegaConf.merge(cfg, {"launcher": None})
            cfg.launcher = OmegaConf.load(path)
        else:
            rest.append(o)
    return cfg, rest


class Loaded:
    """A sweep's config, its expanded plan and its directory.

    `configs` are the sweep's earlier variants (as first frozen, then after each extension) before
    this one; the plan is all of them together (history.plan_all). `extension` is what this config
    adds to the sweep's history, once a command that runs records it (None: nothing new).
    """

    def __init__(
        self,
        cfg: DictConfig,
        sweep: SweepDir,
        trains_here: bool = True,
        import_paths: Sequence[str] = (),
        configs: Sequence[dict[str, Any]] = (),
        extension: dict[str, Any] | None = None,
    ) -> None:
        self.cfg = cfg
        self.plain = _plain(cfg)
        self.import_paths = list(import_paths)
        self.extension = extension
        targets.activate(self.import_paths)
        # Dataset roots must exist only where training runs: not for status or fit, not on a SLURM login node.
        # User code is imported (and its signature checked) only by commands that train or plan.
        local = (self.plain.get("launcher") or {}).get("name", "local") != "slurm"
        grown = plan_all([*configs, self.plain], check_paths=trains_here and local, check_code=trains_here)
        self.plan: Plan = grown.plan
        self.origins = grown.origins
        self.sweep = sweep

    def record_extension(self) -> None:
        """Append what this config adds to sweep.yaml (a command that runs it has started), and where
        deepened trajectories continue from."""
        if self.extension is not None:
            self.sweep.append_extension(self.extension)
            console.print(f"extended {self.sweep.path}: {_extension_line(self.extension)}")
            self.extension = None
        for job_id, shallower in self.origins.items():
            self.sweep.write_origin(job_id, shallower)

    def reuse_from_store(self) -> None:
        """Record this launch's store, and copy in every pending job the store has finished."""
        self.sweep.write_store(self.plain.get("store"))
        shared, pending = self._in_store()
        n = sum(shared.reuse(self.sweep, job_id) for job_id in pending) if shared else 0
        if n:
            console.print(f"reused {n} finished jobs from the store {shared.path}")

    def reusable(self) -> int:
        """Pending jobs that the store holds finished (what `run` would copy in rather than train)."""
        return len(self._in_store()[1])

    def _in_store(self) -> tuple[Any, list[str]]:
        """(the store, the pending jobs it holds finished); (None, []) without a store."""
        from scaling_sweep.store import Store

        path = self.plain.get("store")
        if not path:
            return None, []
        shared = Store(path)
        statuses = self.sweep.statuses(self.plan.specs, verify=False)
        pending = [s.job_id for s in self.plan.specs if statuses[s.job_id].status == "pending"]
        return shared, [job_id for job_id in pending if shared.has(job_id)]


def _extension_line(entry: dict[str, Any]) -> str:
    parts = [f"grid {json.dumps(entry['grid'], separators=(',', ':'))}"]
    if entry.get("prune"):
        parts.append("prune " + ", ".join(f"{k}={v}" for k, v in entry["prune"].items()))
    return "; ".join(parts)


def _history(sweep: SweepDir) -> list[dict[str, Any]]:
    return history.variants(_plain(config_mod.from_yaml(sweep.read_config())))


def load_new(overrides: Sequence[str], config_dirs: Sequence[str] = ()) -> Loaded:
    """The composed config; against an existing sweep of that name, as an extension of its history (or a refusal)."""
    cfg = config_mod.compose(overrides, config_dirs)
    plain = _plain(cfg)
    sweep = SweepDir(Path(plain["out_dir"]) / plain["name"])
    configs: list[dict[str, Any]] = []
    extension = None
    if sweep.exists():
        configs = _history(sweep)
        extension = history.growth(configs[-1], plain, str(sweep.path))
        if extension is None:
            configs = configs[:-1]  # the same trainings as the current variant: this config stands for it
    return Loaded(
        cfg, sweep, import_paths=targets.import_paths(config_dirs), configs=configs, extension=extension
    )


def load_existing(path: str, overrides: Sequence[str] = (), trains_here: bool = True) -> Loaded:
    """An existing sweep at its current variant, with `overrides` on top: execution settings, or growth (grid values, seeds, deeper pruning)."""
    sweep = SweepDir(path)
    configs = _history(sweep)
    current = OmegaConf.create(configs[-1])
    cfg, rest = _launcher_group(current, list(overrides))
    cfg = config_mod.apply_overrides(cfg, rest) if rest else cfg
    extension = history.growth(configs[-1], _plain(cfg), path)
    if extension is not None and not trains_here:
        raise ConfigError(f"{path}: overrides that grow a sweep go to `scaling-sweep resume {path} ...`")
    kept = configs if extension is not None else configs[:-1]
    return Loaded(
        cfg, sweep, trains_here, import_paths=sweep.read_import_paths(), configs=kept, extension=extension
    )


# -- subcommands ---------------------------------------------------------------------------


def _statuses(loaded: Loaded, verify: bool = True) -> dict:
    return loaded.sweep.statuses(loaded.plan.specs, verify=verify)


def _slurm_states(sweep: SweepDir) -> dict[str, str] | None:
    if not sweep.slurm_dir.is_dir():
        return None
    try:
        from launchers.slurm import slurm_states

        return slurm_states(sweep)
    except ConfigError as e:
        console.print(f"[yellow]slurm[/yellow]: {e}")
        return None


def cmd_plan(args: argparse.Namespace) -> int:
    from scaling_sweep.report import print_status, status_json

    loaded = load_new(args.overrides, args.config_dir)
    if args.cfg:
        print(config_mod.to_yaml(loaded.cfg), end="")
        return 0
    from scaling_sweep.report import estimate_json, estimate_line, plan_columns

    statuses = _statuses(loaded, verify=False)
    # --no-estimate: the plan alone, without torch (parameter counts, FLOPs and the timing calibration
    # take seconds on a large grid).
    counts = {} if args.no_estimate else _parameter_counts(loaded.plan)
    estimates, workers = (None, 0) if args.no_estimate else _estimate(loaded, loaded.plan.specs, statuses)
    to_run = [s.job_id for s in loaded.plan.specs if statuses[s.job_id].status in ("pending", "interrupted")]
    order = (loaded.plain.get("launcher") or {}).get("order", "cheapest")
    if args.json:
        extra, totals = (
            ({}, {})
            if args.no_estimate
            else estimate_json(loaded.plan, counts, estimates, to_run, workers, order)
        )
        out = status_json(loaded.plain["name"], loaded.plan, statuses, extra=extra)
        print(json.dumps({**out, **totals}, indent=1))
        return 0
    where = loaded.sweep.path
    note = "" if loaded.sweep.exists() else " (new)"
    print_status(
        console,
        f"plan: {loaded.plain['name']} -> {where}{note}",
        loaded.plan,
        statuses,
        columns=plan_columns(counts, estimates),
    )
    if estimates is not None:
        console.print(estimate_line(loaded.plan, estimates, to_run, workers, order), soft_wrap=True)
    for line in code_lines(loaded.plan, loaded.sweep):
        console.print(escape(line), soft_wrap=True)
    reused = loaded.reusable()
    if reused:
        console.print(
            f"reused {reused}: finished in the store {loaded.plain['store']}, copied in by `run` instead of trained"
        )
    return 0


def _parameter_counts(plan: Plan) -> dict[str, Any]:
    """train.census.Census (parameters, forward FLOPs) per job, one meta-device build per distinct model;
    None: the data's shape is unknown before loading."""
    from scaling_sweep.estimate import census_of

    return {spec.job_id: census_of(spec, flops=True) for spec in plan.specs}


def _cost_target(plain: dict[str, Any]) -> tuple[str | None, int, int]:
    """(device to time steps on, None where jobs run on devices this machine lacks; torch threads per
    job; jobs at once) of the configured launcher."""
    from scaling_sweep.estimate import check_order

    cfg = plain.get("launcher") or {}
    check_order(cfg.get("order", "cheapest"))
    if cfg.get("name", "local") == "slurm":
        from launchers.slurm import SlurmOptions

        o = SlurmOptions.parse(cfg)
        device = None if o.resolved_device().startswith("cuda") else "cpu"
        return device, int(o.threads or o.cpus_per_task), o.array_parallelism
    from launchers.local import make_slots

    slots = make_slots(
        cfg.get("devices", "auto"), cfg.get("jobs_per_device", 1), cfg.get("threads_per_worker")
    )
    return ("cpu" if slots[0].gpu is None else "cuda:0"), slots[0].threads, len(slots)


def _estimate(loaded: Loaded, specs: list[JobSpec], statuses: dict) -> tuple[Any, int]:
    """(scaling_sweep.estimate.Estimates of `specs`, workers that share them); None when it cannot be made.

    An estimate never stops a plan or a launch: a failure (a model that cannot run on random input,
    no torch on a SLURM login node) is one warning line.
    """
    from scaling_sweep import estimate

    device, threads, workers = _cost_target(loaded.plain)
    done = [s for s in loaded.plan.specs if statuses[s.job_id].status == "done"]
    try:
        finished = estimate.finished_rows(loaded.sweep, done)
        return estimate.estimate(specs, threads=threads, device=device, finished=finished), workers
    except Exception as e:
        first = (str(e).splitlines() or [""])[0]
        console.print(
            f"[yellow]no estimate[/yellow]: {escape(f'{type(e).__name__}: {first}')}", soft_wrap=True
        )
        return None, workers


def cmd_status(args: argparse.Namespace) -> int:
    from scaling_sweep.report import print_status, status_json

    loaded = load_existing(args.sweep_dir, trains_here=False)
    statuses = _statuses(loaded)
    slurm = _slurm_states(loaded.sweep)
    if args.json:
        print(json.dumps(status_json(loaded.plain["name"], loaded.plan, statuses, slurm), indent=1))
    else:
        print_status(console, f"status: {loaded.sweep.path}", loaded.plan, statuses, slurm)
    return 0


def _select(loaded: Loaded, which: str) -> list[JobSpec]:
    statuses = _statuses(loaded)
    for p in [p for s in statuses.values() for p in s.problems][:10]:
        console.print(f"[yellow]problem[/yellow] {p}")
    wanted = {"resume": ("pending", "interrupted"), "retry": ("failed",)}[which]
    picked = [s for s in loaded.plan.specs if statuses[s.job_id].status in wanted]
    c = {k: sum(1 for s in statuses.values() if s.status == k) for k in ("done", "running", "failed")}
    skipped = ", ".join(f"{v} {k}" for k, v in c.items() if v and k not in wanted)
    console.print(
        f"{len(picked)} jobs to run"
        + (f" ({skipped} left alone)" if skipped else "")
        + (
            f"; `scaling-sweep retry {loaded.sweep.path}` reruns failed jobs"
            if which == "resume" and c["failed"]
            else ""
        )
    )
    return picked


# The sweep directory a launch started on: what a Ctrl-C caught in main tells the user to resume.
_launched: Path | None = None


def _launch(loaded: Loaded, specs: list[JobSpec], args: argparse.Namespace) -> int:
    from launchers import make_launcher

    global _launched
    _launched = loaded.sweep.path

    if not specs and (loaded.plain.get("launcher") or {}).get("name") == "slurm":
        # Nothing to submit: no need to reach slurmctld (it may be down, or this a machine without it).
        console.print(
            f"nothing to submit; `scaling-sweep status {loaded.sweep.path}` shows where the sweep stands"
        )
        return 0
    launcher = make_launcher(loaded.plain["launcher"])
    if getattr(args, "no_progress", False) and hasattr(launcher, "progress"):
        launcher.progress = False
    if hasattr(launcher, "describe"):
        console.print(f"launcher {launcher.name}: {launcher.describe()}")
    _order_and_eta(loaded, launcher, specs)
    tracking.record(loaded.sweep.path, loaded.plain.get("tracking"))  # this launch's trackers reach its jobs
    backfilled = tracking.backfill(loaded.sweep, loaded.plan.specs, loaded.plain["name"])
    if backfilled:
        console.print(f"sent the rows of {backfilled} finished jobs to the trackers added since they ran")
    t0 = time.time()
    result = launcher.launch(loaded.sweep, specs, fail_fast=args.fail_fast)
    if not launcher.blocking:
        console.print(result.message or f"submitted {len(specs)} jobs")
        console.print(f"follow with `scaling-sweep status {loaded.sweep.path}`")
        return 0
    o = result.outcomes
    console.print(
        f"finished in {time.time() - t0:.1f}s: " + ", ".join(f"{k} {v}" for k, v in sorted(o.items()))
    )
    _finish(loaded)
    if result.interrupted_by_user or o.get("interrupted"):
        console.print(f"stopped; continue with `scaling-sweep resume {loaded.sweep.path}`")
        return 130 if result.interrupted_by_user else 1
    if o.get("failed"):
        console.print(
            f"[red]{o['failed']} jobs failed[/red]; see jobs/<id>/error.txt, rerun with "
            f"`scaling-sweep retry {loaded.sweep.path}`"
        )
        return 1
    return 0


def _order_and_eta(loaded: Loaded, launcher: Any, specs: list[JobSpec]) -> None:
    """Give the launcher the jobs' estimates (cheapest first, the ETA) and say what they add up to."""
    from scaling_sweep.estimate import seconds_text, wall_clock

    order = getattr(launcher, "order", None) or getattr(getattr(launcher, "options", None), "order", "grid")
    eta = launcher.blocking and getattr(launcher, "progress", False)
    if not specs or not hasattr(launcher, "estimates") or (order == "grid" and not eta):
        return  # nothing would use it: no torch import, no timing
    estimates, workers = _estimate(loaded, specs, _statuses(loaded, verify=False))
    if estimates is None:
        return
    launcher.estimates = estimates
    total = estimates.total([s.job_id for s in specs])
    if total is not None:
        from scaling_sweep.estimate import ordered

        jobs = ordered(specs, order, estimates)
        wall = wall_clock([estimates.jobs[s.job_id].seconds or 0.0 for s in jobs], workers)
        packing = getattr(launcher, "pack", 1) > 1
        how = " with every job alone (packs take less)" if packing else ""
        how += ", cheapest jobs first" if order == "cheapest" and not packing else ""
        console.print(
            f"estimate: {seconds_text(total)} of device time, about {seconds_text(wall)} on {workers} worker(s){how}"
        )


def _collect(sweep: SweepDir, plan: Plan | None = None) -> Any:
    """results.parquet from the rows of the planned jobs (all rows files without a plan).

    Rows of jobs the plan no longer holds stay on disk but out of the results: a trajectory that was
    deepened (its levels are the deeper job's first rows) or a user model's job before its code changed.
    """
    from scaling_sweep.results import collect

    def report(line: str) -> None:
        console.print(f"[yellow]warning[/yellow]: {escape(line)}", soft_wrap=True)

    paths = sorted((sweep.path / "rows").glob("*.parquet"))
    if plan is not None:
        planned = {s.job_id for s in plan.specs}
        paths = [p for p in paths if p.stem in planned]
    return collect(paths, sweep.results_path, report=report)


def _finish(loaded: Loaded) -> None:
    """After a blocking launch: results.parquet, the summary screen, the plots and (when possible) the fit."""
    from scaling_sweep.report import summary_tables

    sweep = loaded.sweep
    table = _collect(sweep, loaded.plan)
    console.print(f"results: [bold]{sweep.results_path}[/bold] ({table.num_rows} rows)")
    for t in summary_tables(table, loaded.plain.get("summary_densities") or [1.0]):
        console.print(t)
    fit_opts = loaded.plain.get("fit") or {}
    if table.num_rows and fit_opts.get("enabled", True):
        _plots_and_fit(sweep.path, sweep.fit_dir, fit_opts, do_fit=True, required=False)


def _plots_and_fit(
    source: Path,
    out_dir: Path,
    fit_opts: dict[str, Any],
    do_fit: bool,
    required: bool,
    columns: dict[str, str] | None = None,
) -> int:
    """Measured-curve plots, then (do_fit) the laws; one live status line while it works."""
    from scaling_sweep import fit

    report = None
    with console.status("plotting…") as line:
        try:
            paths = fit.plot_table(
                source,
                out_dir,
                columns=columns,
                where=fit_opts.get("where"),
                classes=fit_opts.get("classes"),
                progress=line.update,
            )
            if do_fit:
                report = fit.fit_table(
                    source,
                    out_dir,
                    laws=fit_opts.get("laws") or fit.DEFAULT_LAWS,
                    train_on=fit_opts.get("train_on"),
                    where=fit_opts.get("where"),
                    folds=int(fit_opts.get("folds", 5)),
                    bootstrap=int(fit_opts.get("bootstrap", 200)),
                    classes=fit_opts.get("classes"),
                    columns=columns,
                    progress=line.update,
                )
        except fit.FitError as e:
            if required:
                raise ConfigError(str(e)) from e
            console.print(f"[yellow]fit skipped[/yellow]: {escape(str(e))}")
            paths = []
    if report is not None:
        console.print(escape(report.summary()), soft_wrap=True)  # verdicts first; lists the files it wrote
        paths = [p for p in paths if p not in report.paths]
    for p in paths:
        console.print(f"wrote {p}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    loaded = load_new(args.overrides, args.config_dir)
    if args.cfg:
        print(config_mod.to_yaml(loaded.cfg), end="")
        return 0
    sweep = loaded.sweep
    if sweep.exists() and loaded.extension is None:
        console.print(f"{sweep.path} exists with the same config: continuing it")
    from launchers import make_launcher

    make_launcher(loaded.plain["launcher"])  # bad launcher settings fail before anything is written
    sweep.create(config_mod.to_yaml(loaded.cfg))
    loaded.record_extension()
    loaded.reuse_from_store()
    sweep.write_import_paths(loaded.import_paths)
    global _launched
    _launched = sweep.path
    console.print(f"sweep [bold]{loaded.plain['name']}[/bold] -> {sweep.path}")
    for line in code_lines(loaded.plan, sweep):
        console.print(escape(line), soft_wrap=True)
    return _launch(loaded, _select(loaded, "resume"), args)


def cmd_resume(args: argparse.Namespace) -> int:
    loaded = load_existing(args.sweep_dir, args.overrides)
    loaded.sweep.remove_stale_temps()  # what a killed run left half-written (results.parquet's, say)
    loaded.record_extension()
    loaded.reuse_from_store()
    for line in code_lines(loaded.plan, loaded.sweep):
        console.print(escape(line), soft_wrap=True)
    return _launch(loaded, _select(loaded, "resume"), args)


def cmd_retry(args: argparse.Namespace) -> int:
    loaded = load_existing(args.sweep_dir, args.overrides)
    if loaded.extension is not None:
        raise ConfigError(
            f"retry reruns failed jobs only; grow the sweep with `scaling-sweep resume {args.sweep_dir} ...`"
        )
    return _launch(loaded, _select(loaded, "retry"), args)


def cmd_collect(args: argparse.Namespace) -> int:
    loaded = load_existing(args.sweep_dir, trains_here=False)
    table = _collect(loaded.sweep, loaded.plan)
    console.print(f"wrote {loaded.sweep.results_path} ({table.num_rows} rows)")
    return 0


def _fit_source(args: argparse.Namespace) -> tuple[Path, Path, dict[str, Any], dict[str, str]]:
    """(table source, output directory, fit options, column map) for `fit` and `plot`.

    The source is a sweep directory (its frozen config gives the fit options; overrides may change them) or
    any results table: a Parquet file, a directory of Parquet files or a CSV (options from `fit.*` overrides).
    """
    source = Path(args.source)
    columns = _column_map(args.column)
    if (source / "sweep.yaml").is_file():
        loaded = load_existing(str(source), args.overrides, trains_here=False)
        if not (loaded.sweep.results_path.exists() or any((loaded.sweep.path / "rows").glob("*.parquet"))):
            raise ConfigError(f"{loaded.sweep.path}: no rows yet; run or resume the sweep first")
        out = Path(args.out) if args.out else loaded.sweep.fit_dir
        return _collected(loaded.sweep, loaded.plan), out, dict(loaded.plain.get("fit") or {}), columns
    if not source.exists():
        raise ConfigError(
            f"{source}: no such file or directory; pass a sweep directory, a Parquet file, a directory of "
            f"Parquet files or a CSV"
        )
    out = Path(args.out) if args.out else (source if source.is_dir() else source.parent) / "fit"
    return source, out, config_mod.fit_options(args.overrides), columns


def _collected(sweep: SweepDir, plan: Plan) -> Path:
    """The sweep with results.parquet brought up to date, or its rows/ when the directory is read-only."""
    try:
        _collect(sweep, plan)
    except OSError as e:
        if e.errno not in ENVIRONMENT_ERRNOS:
            raise
        # A read-only sweep (an archive, someone else's) can still be fitted: rows/ is the truth
        # and the fit reads it directly; only a stale results.parquet must not be read instead.
        return sweep.path / "rows"
    return sweep.path


def _column_map(pairs: Sequence[str]) -> dict[str, str]:
    """--column ours=theirs, repeated, as the fit's {theirs: ours}."""
    out: dict[str, str] = {}
    for pair in pairs:
        ours, sep, theirs = pair.partition("=")
        if not sep or not ours.strip() or not theirs.strip():
            raise ConfigError(f"--column {pair!r}: write OURS=THEIRS, e.g. --column test_error=err")
        out[theirs.strip()] = ours.strip()
    return out


def cmd_fit(args: argparse.Namespace) -> int:
    source, out, opts, columns = _fit_source(args)
    return _plots_and_fit(source, out, opts, do_fit=True, required=True, columns=columns)


def cmd_plot(args: argparse.Namespace) -> int:
    source, out, opts, columns = _fit_source(args)
    return _plots_and_fit(source, out, opts, do_fit=False, required=True, columns=columns)


def cmd_cancel(args: argparse.Namespace) -> int:
    sweep = SweepDir(args.sweep_dir)
    sweep.read_config()
    from launchers.slurm import cancel

    n = cancel(sweep)
    console.print(f"cancelled {n} SLURM array tasks of {sweep.path}")
    return 0


# -- argument parsing ----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scaling-sweep",
        description="Declare scaling-law grids in Hydra configs, train them with IMP locally or on SLURM, fit the laws.",
        epilog="Overrides use Hydra's grammar, e.g. sweep=mnist1d_imp grid.model.width=[0.5,1,2] prune.levels=10",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_overrides(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("overrides", nargs="*", help="Hydra overrides (key=value)")

    def launching(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--fail-fast", action="store_true", help="stop the sweep at the first failed job")
        sp.add_argument("--no-progress", action="store_true", help="no progress bar (plain lines)")

    def composing(sp: argparse.ArgumentParser) -> None:
        with_overrides(sp)
        sp.add_argument(
            "--config-dir",
            action="append",
            default=[],
            help="extra directory searched for config groups (and for the modules `_target_` names)",
        )
        sp.add_argument(
            "--cfg", choices=["job"], help="print the composed config and exit (as Hydra's --cfg job)"
        )
        # Hydra's multirun flag: every `run` sweeps its grid, so it changes nothing.
        sp.add_argument(
            "-m", "--multirun", action="store_true", help="accepted for Hydra habit; run always sweeps"
        )

    sp = sub.add_parser("run", help="compose a sweep from configs and run (or submit) it")
    composing(sp)
    launching(sp)
    sp.set_defaults(fn=cmd_run)

    sp = sub.add_parser("plan", help="show what `run` with these arguments would do; changes nothing")
    composing(sp)
    sp.add_argument("--json", action="store_true")
    sp.add_argument(
        "--no-estimate",
        action="store_true",
        help="leave out parameter counts, FLOPs and time estimates (no torch import: fast on large grids)",
    )
    sp.set_defaults(fn=cmd_plan)

    for name, fn, helptext in (
        ("resume", cmd_resume, "run what is not done, with the frozen sweep.yaml"),
        ("retry", cmd_retry, "rerun only the failed jobs"),
    ):
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument("sweep_dir")
        with_overrides(sp)
        launching(sp)
        sp.set_defaults(fn=fn)

    sp = sub.add_parser("status", help="done / running / failed / to run for an existing sweep")
    sp.add_argument("sweep_dir")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.set_defaults(fn=cmd_status)

    for name, fn, helptext in (
        ("collect", cmd_collect, "write results.parquet from the rows files"),
        ("cancel", cmd_cancel, "cancel this sweep's SLURM jobs"),
    ):
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument("sweep_dir")
        sp.set_defaults(fn=fn, overrides=[])

    for name, fn, helptext in (
        (
            "fit",
            cmd_fit,
            "fit the scaling laws to a sweep or any results table: params.json, quality.md, plots",
        ),
        ("plot", cmd_plot, "plot the measured curves (no fit) of a sweep or any results table"),
    ):
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument(
            "source", help="a sweep directory, a Parquet file, a directory of Parquet files, or a CSV"
        )
        with_overrides(sp)
        sp.add_argument(
            "--column",
            action="append",
            default=[],
            metavar="OURS=THEIRS",
            help="read the table's column THEIRS as our OURS (e.g. test_error=err); repeatable",
        )
        sp.add_argument(
            "--out", help="where params.json, quality.md and the plots go (default: fit/ beside the input)"
        )
        sp.set_defaults(fn=fn)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    code = _main(argv)
    if code == 130 and _COMMAND:
        # CPython (3.11) remembers a KeyboardInterrupt that escaped exec'd code (a dataclass that an
        # interrupted import was creating), even one caught and handled, and at exit ends the process
        # with SIGINT instead of this exit status. Every job is checkpointed and every worker gone.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    # Overrides may come after options (`fit DIR --out X fit.folds=0`): argparse leaves those unclaimed.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any(e.startswith("-") for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    try:
        if _COMMAND:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # a pending Ctrl-C lands here
        return int(args.fn(args) or 0)
    except ConfigError as e:
        return _error(str(e), 2)
    except BrokenPipeError:
        # `plan --json | head`: the reader is gone. Point stdout at /dev/null so that Python's
        # flush at exit does not raise again, and exit as a program killed by SIGPIPE would.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 141
    except KeyboardInterrupt:
        # Ctrl-C before the launcher's handler is up, or during the end-of-run fit: every job
        # state is on disk already, so a line saying how to go on is all that is needed.
        # A second Ctrl-C (or one still pending) must not turn this orderly exit into a traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        where = f"; continue with `scaling-sweep resume {_launched}`" if _launched else ""
        console.print(f"interrupted{where}", soft_wrap=True)
        return 130
    except OSError as e:
        if e.errno not in ENVIRONMENT_ERRNOS:
            raise
        # A full disk or a read-only / forbidden directory is the machine, not a bug: one line.
        path = Path(e.filename) if e.filename else Path("a file")
        if path.name.startswith(".") and path.name.endswith(".tmp"):
            path = path.parent  # an atomic write's temp file: the directory is what the user knows
        return _error(f"{path}: {e.strerror or os.strerror(e.errno)}", 1)


# What the machine, not the sweep, gets wrong: one line each (see main).
ENVIRONMENT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def _error(message: str, code: int) -> int:
    console.print(f"[red]error[/red]: {escape(message)}", soft_wrap=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
