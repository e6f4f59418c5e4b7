"""Multi-start least squares on the relative divergence δ = (ê − ε)/ε, Jacobian uncertainties, CV and extrapolation."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from scaling_sweep.fit.bootstrap import Interval, Resampler, describe, intervals
from scaling_sweep.fit.problem import Problem, Task
from scaling_sweep.fit.quality import LawFit
from scaling_sweep.fit.table import query

Say = Callable[[str], None]
# A well-posed fit converges in tens of evaluations; one that is still walking after this many is walking
# along a flat valley (a parameter the data do not pin down), where more steps buy nothing.
MAX_NFEV = 200


@dataclass
class Solution:
    theta: np.ndarray
    delta: np.ndarray  # δ on the fitted points
    params: dict[str, tuple[float, float]]  # published name -> (value, standard error)
    at_bound: frozenset[str] = frozenset()  # free parameters that ended on a bound of their range
    intervals: dict[str, Interval] = field(default_factory=dict)  # published name -> bootstrap interval


def divergence(
    problem: Problem, theta: np.ndarray, frame: pd.DataFrame | dict[str, np.ndarray]
) -> np.ndarray:
    """δ = (ê − ε)/ε on `frame`."""
    err = np.asarray(frame["test_error"], dtype=float)
    return (problem.predict(theta, frame) - err) / err


def solve(
    problem: Problem,
    rows: np.ndarray | None = None,
    *,
    n_starts: int = 8,
    seed: int = 0,
    random_only: bool = False,
    first: Sequence[np.ndarray] = (),
    cols: dict[str, np.ndarray] | None = None,
    weights: np.ndarray | None = None,
    uncertainty: bool = True,
) -> Solution:
    """Least squares on problem.frame (or its `rows`, a boolean mask) from `first`, the deterministic starts,
    then random starts up to n_starts in all; the lowest cost wins.

    `cols` replaces the problem's points (a bootstrap replicate), `weights` multiply each point's squared δ
    (a configuration drawn twice counts twice)."""
    cols = problem.arrays(rows) if cols is None else cols
    starts = list(first) + ([] if random_only else list(problem.starts))
    rng = np.random.default_rng(seed)
    lo, hi = problem.box
    starts += [rng.uniform(lo, hi) for _ in range(max(n_starts - len(starts), 0))]
    root_w = None if weights is None else np.sqrt(weights)

    def residuals(theta: np.ndarray) -> np.ndarray:
        # A start far off can overflow; a huge finite residual steers the solver back instead of stopping it.
        r = np.nan_to_num(divergence(problem, theta, cols), nan=1e6, posinf=1e6, neginf=-1e6)
        return r if root_w is None else r * root_w

    jac = "2-point"
    if problem.gradient is not None:
        err = cols["test_error"][:, None]
        scale = err if root_w is None else err / root_w[:, None]

        def jac(theta: np.ndarray) -> np.ndarray:
            return np.nan_to_num(problem.gradient(theta, cols) / scale, nan=0.0, posinf=1e6, neginf=-1e6)

    best = None
    for x0 in starts:
        x0 = np.clip(x0, problem.lower, problem.upper)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            res = least_squares(
                residuals,
                x0,
                jac=jac,
                bounds=(problem.lower, problem.upper),
                method="trf",
                x_scale="jac",
                ftol=1e-8,
                xtol=1e-8,
                gtol=1e-8,
                max_nfev=MAX_NFEV,
            )
        if best is None or res.cost < best.cost - 1e-15:
            best = res
    assert best is not None, "solve needs at least one start"
    span = problem.upper - problem.lower
    at = (best.x - problem.lower < 1e-6 * span) | (problem.upper - best.x < 1e-6 * span)
    params = (
        _uncertainty(problem, best)
        if uncertainty
        else {k: (v, math.nan) for k, v in problem.public(best.x).items()}
    )
    return Solution(
        theta=best.x,
        delta=divergence(problem, best.x, cols),
        params=params,
        at_bound=frozenset(np.asarray(problem.names)[at]),
    )


def _uncertainty(problem: Problem, res) -> dict[str, tuple[float, float]]:
    """Published parameters with standard errors: cov(θ) = s²·(JᵀJ)⁺ at the optimum, pushed through θ -> params."""
    n, k = res.fun.size, res.x.size
    s2 = float(res.fun @ res.fun) / max(n - k, 1)
    cov = s2 * np.linalg.pinv(res.jac.T @ res.jac)
    values = problem.public(res.x)
    # Delta method: the published parameters are smooth functions of θ; central differences give their gradient.
    grad = np.zeros((len(values), k))
    for j in range(k):
        h = 1e-6 * max(1.0, abs(res.x[j]))
        up, down = res.x.copy(), res.x.copy()
        up[j] += h
        down[j] -= h
        grad[:, j] = (
            np.array(list(problem.public(up).values())) - np.array(list(problem.public(down).values()))
        ) / (2 * h)
    var = np.einsum("ij,jk,ik->i", grad, cov, grad)
    return {name: (val, float(np.sqrt(max(v, 0.0)))) for (name, val), v in zip(values.items(), var)}


def fold_ids(frame: pd.DataFrame, folds: int, group: str | None, seed: int) -> np.ndarray:
    """A fold number per point, shuffled, and balanced within each group so each configuration keeps its shape."""
    rng = np.random.default_rng(seed)
    ids = np.empty(len(frame), dtype=int)
    groups = frame[group].to_numpy() if group else np.zeros(len(frame))
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        ids[idx] = rng.permutation(len(idx)) % folds
    return ids


def cross_validate(
    problem: Problem, theta: np.ndarray, folds: int, *, group: str | None, seed: int
) -> np.ndarray | str:
    """δ on every point from a fit without its fold; a one-line reason when the points are too few."""
    frame = problem.frame
    k = min(folds, len(frame))
    if k < 2:
        return f"folds={folds}: cross-validation needs at least 2"
    ids = fold_ids(frame, k, group, seed)
    delta = np.full(len(frame), np.nan)
    for f in range(k):
        held = ids == f
        if (~held).sum() < problem.n_free + 1:
            return f"a fold leaves {(~held).sum()} points for {problem.n_free} parameters"
        # Warm-started from the full fit plus the first guess: a fold moves the optimum a little, not far.
        sol = solve(problem, ~held, n_starts=0, seed=seed, random_only=True, first=[theta, problem.starts[0]])
        delta[held] = divergence(problem, sol.theta, problem.arrays(held))
    return delta


def extrapolate(
    problem: Problem, train_on: str, *, n_starts: int, seed: int
) -> tuple[np.ndarray, np.ndarray] | str:
    """(δ on the held-out points, their positions) from a fit on the points matching `train_on`."""
    frame = problem.frame
    train = frame.index.isin(query(frame, train_on, "train_on").index)
    if train.all():
        return f"train_on={train_on!r} keeps every point; nothing is held out"
    if train.sum() < problem.n_free + 1:
        return f"train_on={train_on!r} keeps {train.sum()} points for {problem.n_free} parameters"
    sol = solve(problem, train, n_starts=n_starts, seed=seed)
    return divergence(problem, sol.theta, problem.arrays(~train)), np.flatnonzero(~train)


def fit_task(
    task: Task,
    *,
    folds: int,
    train_on: str | None,
    n_starts: int,
    seed: int,
    say: Say,
    hint: Mapping[str, float] | None = None,
    resampler: Resampler | None = None,
    replicates: int = 0,
) -> LawFit:
    """Fit every problem of a task and measure the quality of the whole: μ, σ, CV and extrapolation.

    `hint`: the parameters of a related fit (the joint law, for the per-configuration fits); each problem
    starts from it too, and needs fewer other starts. `replicates` > 0: bootstrap intervals from `resampler`.
    """
    fits, deltas, cv, ex = [], [], [], []
    cv_reason = ex_reason = None
    many = len(task.problems) > 1
    for i, problem in enumerate(task.problems):
        where = f" configuration {i + 1}/{len(task.problems)}" if many else ""
        first = [problem.warm(hint)] if hint is not None and problem.warm is not None else []
        starts = max(1, -(-n_starts // 2)) if first else n_starts
        say(f"fitting {task.entry}{where}: {len(problem.frame)} points, {starts} starts")
        sol = solve(problem, n_starts=starts, seed=seed, first=first)
        # Seeds are resampled; a table with one run per point falls back to its configurations.
        configs = resampler is not None and not resampler.has_seeds
        if replicates and resampler is not None and (resampler.has_seeds or not task.per_config):
            say(f"bootstrapping {task.entry}{where}: {replicates} replicates")
            sol.intervals = intervals(
                problem, sol.theta, resampler, replicates=replicates, configs=configs, seed=seed, solve=solve
            )
        fits.append(sol)
        deltas.append(sol.delta)
        if folds:
            say(f"cross-validating {task.entry}{where}: {min(folds, len(problem.frame))} folds")
            out = cross_validate(problem, sol.theta, folds, group=task.group, seed=seed)
            if isinstance(out, str):
                cv_reason = cv_reason or out
            else:
                cv.append(out)
        if train_on:
            say(f"extrapolating {task.entry}{where}: train_on={train_on}")
            got = extrapolate(problem, train_on, n_starts=n_starts, seed=seed)
            if isinstance(got, str):
                ex_reason = ex_reason or got
            else:
                ex.append(got[0])
    if task.per_config and train_on and not ex:
        ex_reason = (
            f"train_on={train_on!r} splits no configuration's own points; to extrapolate each "
            f"configuration, filter on density (e.g. 'density >= 0.2')"
        )
    task.notes.extend(_bound_notes(task, fits))
    drawn = [f for f in fits if f.intervals]
    return LawFit.build(
        task,
        fits,
        np.concatenate(deltas),
        cv=np.concatenate(cv) if cv else None,
        cv_reason=cv_reason if not cv else None,
        extrapolation=np.concatenate(ex) if ex else None,
        extrapolation_reason=ex_reason if not ex else None,
        bootstrap=describe(configs, replicates) if drawn else None,
    )


def _bound_notes(task: Task, fits: list[Solution]) -> list[str]:
    """Name the parameters that ended on a bound: the unconstrained optimum lies beyond it (or the data leave
    the parameter free), so the value is a limit, not an estimate."""
    hits: dict[str, int] = {}
    for sol in fits:
        for name in sorted(sol.at_bound):
            hits[name] = hits.get(name, 0) + 1
    if not hits:
        return []
    if not task.per_config:
        params = fits[0].params
        return [
            f"{name} = {params[name][0]:.4g} sits on a bound of its allowed range: read it as a limit, "
            f"not an estimate"
            for name in hits
        ]
    counts = ", ".join(f"{name} in {n}" for name, n in hits.items())
    return [
        f"parameters on a bound of their allowed range (limits, not estimates): {counts} of "
        f"{len(task.problems)} configurations"
    ]
