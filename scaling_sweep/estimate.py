"""Device time of jobs before they run, and the cheapest-first order: a job's budget from its config, its
seconds per step from the sweep's finished jobs or a few timed steps on this machine, its IMP depth
from finished jobs or an expected-levels rule.

A level costs steps x step_s + examples evaluated x eval_s + checkpoint writes x save_s (+ the
bookkeeping around it); a job costs its expected levels plus a fixed start. torch is imported only
inside the functions that time or count a model, so planning stays importable without it.
"""

from __future__ import annotations

import heapq
import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from scaling_sweep import schema
from scaling_sweep.errors import ConfigError
from scaling_sweep.spec import JobSpec

ORDERS = ("cheapest", "grid")  # launcher.order: cheapest jobs first (default), or as the grid declares them

# Test-set sizes of the built-in datasets of fixed shape (train sizes: schema.TRAIN_SIZES).
TEST_SIZES = {"mnist1d": 1000, "digits": 360, "cifar10": 10_000, "cifar100": 10_000}
# Only for costing: the standard CIFAR layout holds 50,000 training images. schema.train_size and
# grid filters leave them unknown (a directory may hold any size); an estimate may assume.
NOMINAL_TRAIN = {"cifar10": 50_000, "cifar100": 50_000}
# The expected-levels rule for trajectories that stop at chance: the last level is the first one
# that leaves at most this many prunable weights per class (below that a classifier cannot beat
# chance). Set on the default sweep: it predicts 13 / 11 / 9 levels at widths 1 / 0.5 / 0.25
# where 27 jobs ran 13.5 / 10.8 / 8.3 on average.
WEIGHTS_PER_CLASS_AT_CHANCE = 2
# Seconds a job spends outside its levels' wall_s: taking the lease, loading cached data, building the
# model (JOB_S); writing the rows and state files after each level (LEVEL_S). Measured on the default
# sweep on a 2-core machine (run_job around 27 jobs, against the sum of their rows' wall_s).
JOB_S = 0.2
LEVEL_S = 0.04
# Models of one family (same architecture, data, training step) timed at most; the others are
# interpolated in parameters x batch size between the cheapest, the middle and the dearest.
TIMED_PER_FAMILY = 3


def check_order(value: Any) -> str:
    """launcher.order, checked: one of ORDERS."""
    if value not in ORDERS:
        raise ConfigError(
            f"launcher.order={value!r}: use cheapest (cheapest jobs first, by the estimate) or grid "
            f"(the order the grid declares)"
        )
    return str(value)


# -- what a job does, from its config ----------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """One job's work per level, from its config alone."""

    dense_steps: int  # level 0
    pruned_steps: int  # each later level: the budget minus the rewind step
    eval_examples: int  # evaluated after every level (the training subset and the test set)
    saves: int  # checkpoint writes per level (mid-level ones and the level's end)


def cost_n_train(data: Mapping[str, Any]) -> int | None:
    """Training examples of a job, for costing: schema's known sizes, CIFAR's nominal one; None when unknown.

    A balanced subset is counted as fraction x size (it differs by at most a few examples per class).
    """
    if schema.TARGET in data:
        return None
    name = data.get("name")
    n = schema.TRAIN_SIZES.get(name) or NOMINAL_TRAIN.get(name)
    return None if n is None else schema.subset_size(n, float(data.get("fraction", 1.0)))


def budget(spec: JobSpec) -> Budget | None:
    """Steps, examples evaluated and checkpoint writes per level; None where the data's size is unknown."""
    n = cost_n_train(spec.data)
    if n is None:
        return None
    train = schema.parse("train", spec.train)
    per_epoch = schema.steps_per_epoch(n, train.batch_size)
    total = int(train.steps) if train.steps is not None else int(train.epochs or 0) * per_epoch
    kind, _, k = str(spec.prune.get("rewind", "init")).partition(":")
    rewind = int(k) * (per_epoch if kind == "epoch" else 1) if kind in ("step", "epoch") else 0
    every = int(train.checkpoint_every)
    mid = (math.ceil(total / per_epoch) - 1) // every if every > 0 else 0
    return Budget(total, max(1, total - rewind), n + TEST_SIZES.get(spec.data["name"], 0), 1 + mid)


def expected_levels(
    prune: Mapping[str, Any], prunable: int | None, tensors: int | None, classes: int | None
) -> int:
    """Levels an IMP trajectory is expected to train before it stops (the planned ones at most).

    Pruning removes ceil(rate x remaining) weights a level. A trajectory stops before a layer would be
    emptied (so never with fewer weights left than prunable tensors) and, with prune.stop_at_chance,
    once it sits at chance: expected at WEIGHTS_PER_CLASS_AT_CHANCE weights per class, plus the levels
    a longer stop_at_chance waits. Unknown counts give the planned levels (an upper bound).
    """
    planned = schema.last_level(prune) + 1
    if prune.get("method", "imp") != "imp" or prunable is None:
        return planned
    floor = max(1, tensors or 1)
    stop_at_chance = int(prune.get("stop_at_chance", schema.ADDED_OPTIONS["prune"]["stop_at_chance"]))
    extra = 0
    if stop_at_chance > 0 and classes:
        floor = max(floor, WEIGHTS_PER_CLASS_AT_CHANCE * classes)
        extra = max(0, stop_at_chance - 2)  # the rule was set with the default of 2
    rate, remaining, last = float(prune.get("rate", 0.2)), prunable, 0
    while last < planned - 1 and remaining > floor:
        remaining -= math.ceil(rate * remaining)
        last += 1
    return min(planned, last + 1 + extra)


# -- what a step costs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rates:
    """Seconds of one kind of job: per training step, per example evaluated, per checkpoint write, per level."""

    step_s: float
    eval_s: float = 0.0
    save_s: float = 0.0
    level_s: float = 0.0
    source: str = "calibration"

    def level(self, steps: int, b: Budget) -> float:
        return steps * self.step_s + b.eval_examples * self.eval_s + b.saves * self.save_s + self.level_s


def rate_key(spec: JobSpec) -> str:
    """What decides a step's cost: the model, the data's shape, batch sizes and how a step runs; not the
    data fraction, the seed, the learning-rate schedule or the pruning depth."""
    data = {
        k: v for k, v in spec.data.items() if k not in ("fraction", "data_seed", "balanced", *_EXEC["data"])
    }
    train = {k: spec.train.get(k) for k in _STEP_KEYS}
    masks = {k: spec.prune.get(k) for k in ("include_output_layer", "include", "exclude")}
    return json.dumps([spec.model, data, train, masks], sort_keys=True, default=str)


_STEP_KEYS = (
    "batch_size",
    "eval_batch_size",
    "optimizer",
    "nesterov",
    "amp",
    "channels_last",
    "compile",
    "step",
)
_EXEC = schema.EXECUTION_KEYS


def rates_from_rows(rows: Iterable[Mapping[str, Any]]) -> Rates | None:
    """Rates fitted to finished levels: wall_s = step_s x steps + level_s (least squares; level_s >= 0).

    Evaluation and checkpoints are in level_s (and, where they grow with the data as steps do, in step_s).
    Levels trained in a pack (`pack` > 1) are left out: their wall_s is the whole pack's time, not
    what the job takes alone, which is what estimates are.
    """
    pts = [
        (float(r["steps"]), float(r["wall_s"]))
        for r in rows
        if r.get("steps") and r.get("wall_s") is not None and int(r.get("pack") or 1) == 1
    ]
    if not pts:
        return None
    n = len(pts)
    sx, sy = sum(x for x, _ in pts), sum(y for _, y in pts)
    mx, my = sx / n, sy / n
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    if sxx > 0:
        slope = sum((x - mx) * (y - my) for x, y in pts) / sxx
        intercept = my - slope * mx
        if slope > 0 and intercept >= 0:
            return Rates(step_s=slope, level_s=intercept, source="finished jobs")
    # One step count, or a fit out of range: the mean rate.
    return Rates(step_s=sy / sx, source="finished jobs")


# process-wide: (rate key, threads, device) -> timed Rates, so a second plan of the same models is free
_TIMED: dict[tuple[str, int, str], Rates | None] = {}


def calibrate(spec: JobSpec, threads: int, device: str = "cpu") -> Rates | None:
    """Time a few training steps, an evaluation batch and a checkpoint write of `spec`'s model on `device`
    with `threads` CPU threads; None where the data's shape is unknown without loading it."""
    key = (rate_key(spec), threads, device)
    if key not in _TIMED:
        _TIMED[key] = _time_model(spec, threads, device)
    return _TIMED[key]


def _time_model(spec: JobSpec, threads: int, device: str) -> Rates | None:
    from scaling_sweep.train.census import time_model  # torch

    n = cost_n_train(spec.data)
    if n is None:
        return None
    timing = time_model(spec.trainer_config(), n, TEST_SIZES.get(spec.data.get("name"), 0), threads, device)
    if timing is None:
        return None
    return Rates(step_s=timing.step_s, eval_s=timing.eval_s, save_s=timing.save_s)


# -- the estimate of a plan --------------------------------------------------------------------------


@dataclass(frozen=True)
class JobEstimate:
    """Expected device seconds of one job, and what they rest on."""

    seconds: float | None  # expected (None: unknown)
    upper_s: float | None  # if every planned level runs
    levels: int  # expected levels
    planned: int  # planned levels
    source: str  # "measured" (a finished job), "finished jobs", "calibration", "unknown"
    work: float | None = None  # params x examples trained: the order of jobs whose seconds are unknown


@dataclass
class Estimates:
    """JobEstimate per job id, and how much timing it took to make them."""

    jobs: dict[str, JobEstimate] = field(default_factory=dict)
    timed: int = 0  # distinct models timed now (not counting those timed before in this process)
    timed_s: float = 0.0
    untimed: str = ""  # why nothing was timed here, when so

    def seconds(self) -> dict[str, float]:
        return {i: e.seconds for i, e in self.jobs.items() if e.seconds is not None}

    def total(self, job_ids: Iterable[str] | None = None) -> float | None:
        """Sum over `job_ids` (default: all); None when any of them is unknown."""
        picked = [self.jobs[i] for i in (self.jobs if job_ids is None else job_ids)]
        if any(e.seconds is None for e in picked):
            return None
        return sum(e.seconds or 0.0 for e in picked)


_CENSUS: dict[tuple[str, bool], Any] = {}


def census_of(spec: JobSpec, flops: bool = False) -> Any:
    """scaling_sweep.train.census.Census of a job's model (None: shape unknown), once per distinct model in this process."""
    key = json.dumps(
        [spec.model, spec.data.get("name"), spec.data.get(schema.TARGET), _masks(spec)],
        sort_keys=True,
        default=str,
    )
    if (key, flops) not in _CENSUS:
        from scaling_sweep.train.census import census

        _CENSUS[(key, flops)] = census(spec.trainer_config(), flops=flops)
    return _CENSUS[(key, flops)]


def _masks(spec: JobSpec) -> list[Any]:
    return [spec.prune.get(k) for k in ("include_output_layer", "include", "exclude")]


Finished = Sequence[tuple[JobSpec, Sequence[Mapping[str, Any]]]]


def estimate(
    specs: Sequence[JobSpec], *, threads: int, device: str | None = "cpu", finished: Finished = ()
) -> Estimates:
    """Expected seconds of every job on one worker with `threads` threads on `device`.

    `finished`: (spec, rows) of the sweep's done jobs, rows with level, steps, wall_s. They give their
    own time, the rates of jobs of the same kind and the depth of jobs of the same config. Jobs of a
    kind none of them ran are timed here, unless `device` is None (nothing can be timed here: unknown).
    """
    fitted = _rates_from_finished(finished)
    depths = _depths_from_finished(finished)
    rows_of = {spec.job_id: rows for spec, rows in finished}
    out = Estimates()
    rates: dict[str, Rates | None] = dict(fitted)
    if device is None:
        out.untimed = "the jobs run on a device this machine lacks"
    else:
        t0 = time.perf_counter()
        before = len(_TIMED)
        rates.update(_calibrated([s for s in specs if rate_key(s) not in rates], threads, device))
        out.timed, out.timed_s = len(_TIMED) - before, time.perf_counter() - t0
    for spec in specs:
        out.jobs[spec.job_id] = _job(spec, rates.get(rate_key(spec)), depths, rows_of.get(spec.job_id))
    return out


def _job(
    spec: JobSpec, rates: Rates | None, depths: Mapping[str, float], rows: Sequence[Mapping[str, Any]] | None
) -> JobEstimate:
    counted = census_of(spec)
    classes = _classes(spec)
    planned = schema.last_level(spec.prune) + 1
    if rows:
        spent = JOB_S + sum(float(r.get("wall_s") or 0.0) + LEVEL_S for r in rows)
        return JobEstimate(spent, spent, len(rows), planned, "measured")
    levels = depths.get(_depth_key(spec))
    if levels is None:
        levels = expected_levels(
            spec.prune,
            counted.params_prunable if counted else None,
            counted.prunable_tensors if counted else None,
            classes,
        )
    b = budget(spec)
    work = None
    if b is not None and counted is not None:
        work = (
            float(counted.params_trainable)
            * (b.dense_steps + (levels - 1) * b.pruned_steps)
            * spec.train["batch_size"]
        )
    if b is None or rates is None:
        return JobEstimate(None, None, round(levels), planned, "unknown", work)

    def seconds(n_levels: float) -> float:
        pruned = max(0.0, n_levels - 1)
        return (
            JOB_S
            + rates.level(b.dense_steps, b)
            + pruned * rates.level(b.pruned_steps, b)
            + n_levels * LEVEL_S
        )

    return JobEstimate(seconds(levels), seconds(planned), round(levels), planned, rates.source, work)


def _classes(spec: JobSpec) -> int | None:
    from scaling_sweep.train.census import input_spec

    found = input_spec(spec.data)
    return found[1] if found else None


def _depth_key(spec: JobSpec) -> str:
    identity = {k: v for k, v in spec.identity().items() if k != "seed"}
    return json.dumps(identity, sort_keys=True, default=str)


def _rates_from_finished(finished: Finished) -> dict[str, Rates | None]:
    rows: dict[str, list[Mapping[str, Any]]] = {}
    for spec, levels in finished:
        rows.setdefault(rate_key(spec), []).extend(levels)
    fitted = {k: rates_from_rows(v) for k, v in rows.items()}
    return {k: v for k, v in fitted.items() if v is not None}


def _depths_from_finished(finished: Finished) -> dict[str, float]:
    """Mean levels of finished jobs by their config without the seed (where a trajectory stops is a matter of seeds)."""
    seen: dict[str, list[int]] = {}
    for spec, levels in finished:
        if levels:
            seen.setdefault(_depth_key(spec), []).append(len(levels))
    return {k: sum(v) / len(v) for k, v in seen.items()}


def _calibrated(specs: Sequence[JobSpec], threads: int, device: str) -> dict[str, Rates | None]:
    """Rates of each distinct kind among `specs`: timed, or for a family of many, interpolated."""
    kinds: dict[str, JobSpec] = {}
    for s in specs:
        kinds.setdefault(rate_key(s), s)
    families: dict[str, list[tuple[float, str]]] = {}
    for key, spec in kinds.items():
        counted = census_of(spec)
        size = float(counted.params_trainable * spec.train["batch_size"]) if counted else 0.0
        family = json.dumps(
            [
                spec.model.get("name"),
                spec.model.get(schema.TARGET),
                spec.model.get("depth"),
                json.loads(key)[1:],
            ],
            sort_keys=True,
            default=str,
        )
        families.setdefault(family, []).append((size, key))
    out: dict[str, Rates | None] = {}
    for members in families.values():
        members.sort()
        picks = (
            {0, len(members) // 2, len(members) - 1}
            if len(members) > TIMED_PER_FAMILY
            else range(len(members))
        )
        timed = [(members[i][0], calibrate(kinds[members[i][1]], threads, device)) for i in sorted(picks)]
        points = [(x, r) for x, r in timed if r is not None]
        for x, key in members:
            out[key] = _interpolate(points, x)
    return out


def _interpolate(points: Sequence[tuple[float, Rates]], x: float) -> Rates | None:
    """Rates at size x, linear between the timed sizes around it (a timed size gives its own)."""
    if not points:
        return None
    for px, r in points:
        if px == x:
            return r
    lo = max((p for p in points if p[0] < x), default=None, key=lambda p: p[0])
    hi = min((p for p in points if p[0] > x), default=None, key=lambda p: p[0])
    if lo is None or hi is None:
        px, r = lo or hi  # type: ignore[misc]
        scale = x / px if px > 0 else 1.0
        return Rates(r.step_s * scale, r.eval_s * scale, r.save_s, r.level_s, "calibration")
    w = (x - lo[0]) / (hi[0] - lo[0])
    a, b = lo[1], hi[1]
    return Rates(
        a.step_s + w * (b.step_s - a.step_s),
        a.eval_s + w * (b.eval_s - a.eval_s),
        a.save_s + w * (b.save_s - a.save_s),
        0.0,
        "calibration",
    )


# -- order and wall clock ----------------------------------------------------------------------------


def ordered(specs: Sequence[JobSpec], order: str, estimates: Estimates | None) -> list[JobSpec]:
    """The jobs in launch order: as given for `grid` (or without estimates), else cheapest first: by
    expected seconds, then by params x examples trained where the seconds are unknown, then as given."""
    if order == "grid" or estimates is None:
        return list(specs)

    def key(spec: JobSpec) -> tuple[int, float]:
        e = estimates.jobs.get(spec.job_id)
        if e is not None and e.seconds is not None:
            return (0, e.seconds)
        if e is not None and e.work is not None:
            return (1, e.work)
        return (2, 0.0)

    return sorted(specs, key=key)  # stable: ties keep the grid's order


def wall_clock(seconds: Sequence[float], workers: int, busy: Sequence[float] = ()) -> float:
    """Seconds until `workers` workers, each taking the next job in order when free, finish `seconds`;
    `busy`: seconds left on jobs already running."""
    free = [*busy, *[0.0] * max(0, workers - len(busy))] or [0.0]
    heapq.heapify(free)
    for s in seconds:
        heapq.heappush(free, heapq.heappop(free) + s)
    return max(free)


def finished_rows(sweep: Any, specs: Iterable[JobSpec]) -> list[tuple[JobSpec, list[dict[str, Any]]]]:
    """(spec, its rows: level, steps, wall_s, pack) of done jobs whose rows file reads (others are left
    out); `pack`: how many jobs trained in its last run's pack (1: alone), from its state."""
    from scaling_sweep.results import read_rows

    out = []
    for spec in specs:
        try:
            table = read_rows(sweep.rows_path(spec.job_id)).select(["level", "steps", "wall_s"])
        except Exception:  # a damaged file is status's to report; an estimate just does without it
            continue
        pack = int(sweep.read_state(spec.job_id).get("pack") or 1)
        out.append((spec, [dict(r, pack=pack) for r in table.to_pylist()]))
    return out


def seconds_text(s: float | None) -> str:
    """1.2 s, 42 s, 3m 05s, 2h 10m; '?' when unknown."""
    if s is None:
        return "?"
    if s < 10:
        return f"{s:.1f} s"
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{int(s // 60)}m {int(s % 60):02d}s"
    return f"{int(s // 3600)}h {int(s % 3600 // 60):02d}m"
