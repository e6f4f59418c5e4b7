"""The law registry, and the two size laws set up on a table's points: the power-law baseline and the 2020 law."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from scaling_sweep.fit.problem import Options, Problem, Skip, Task, eps0_of, geomean, need_points
from scaling_sweep.fit.pruning import setup_pruning2021
from scaling_sweep.fit.table import Points

__all__ = [
    "SETUPS",
    "Options",
    "Problem",
    "Skip",
    "Task",
    "setup_power",
    "setup_pruning2021",
    "setup_rosenfeld2020",
]

# ---------------------------------------------------------------- power: ε(x) = a·x^(−α) + c


def setup_power(points: Points, opts: Options) -> list[Task]:
    """The baseline along one axis, on the dense slice that covers that axis best."""
    dense = points.frame[points.frame["dense"]]
    axes = [opts.power_axis] if opts.power_axis else ["n_train", "params_total"]
    for axis in axes:
        if axis in dense.columns and (dense[axis] <= 0).any():
            raise Skip(f"{axis} must be > 0 on every dense row")
    candidates = [_power_slice(dense, axis) for axis in axes if axis in dense.columns]
    if dense.empty or not candidates:
        raise Skip(f"needs a {' or '.join(axes)} column with dense (level 0) rows")
    # The axis with more distinct values wins; n_train on a tie, because data scaling is the usual baseline.
    axis, key, frame = max(candidates, key=lambda c: c[2][c[0]].nunique())
    if frame[axis].nunique() < 4:
        raise Skip(
            f"needs >= 4 distinct {axis} values in one slice of the dense rows, has {frame[axis].nunique()}"
        )
    need_points(frame, 3, "the dense slice")
    x_ref = geomean(frame[axis])
    y = frame["test_error"].to_numpy()

    def predict(theta: np.ndarray, pts: Any) -> np.ndarray:
        log_a, alpha, c = theta
        return np.exp(log_a) * np.power(np.asarray(pts[axis], dtype=float) / x_ref, -alpha) + c

    def public(theta: np.ndarray) -> dict[str, float]:
        log_a, alpha, c = theta
        return {"a": float(np.exp(log_a) * x_ref**alpha), "alpha": float(alpha), "c": float(c)}

    lower, upper = np.array([np.log(1e-6), 1e-3, 0.0]), np.array([np.log(10.0), 5.0, 1.0])
    starts = [
        np.array([np.log(max(np.median(y) - c, 1e-3)), alpha, c])
        for alpha in (0.3, 1.0)
        for c in (0.0, 0.5 * float(y.min()))
    ]
    box = (np.array([np.log(1e-3), 0.05, 0.0]), np.array([np.log(1.0), 2.0, float(y.min())]))
    slice_desc = ", ".join(f"{k}={v:g}" for k, v in key.items())
    problem = Problem(
        frame=frame,
        names=["a", "alpha", "c"],
        lower=lower,
        upper=upper,
        starts=starts,
        box=box,
        predict=predict,
        public=public,
        label={"axis": axis, **key},
    )
    return [
        Task("power", [problem], notes=[f"along {axis} at {slice_desc}" if slice_desc else f"along {axis}"])
    ]


def _power_slice(dense: pd.DataFrame, axis: str) -> tuple[str, dict[str, float], pd.DataFrame]:
    """(axis, slice key, rows) for the slice of the other axis with the most distinct `axis` values."""
    if axis == "n_train":
        other = ["params_total"] if "params_total" in dense else [c for c in ("depth", "width") if c in dense]
    else:
        other = ["n_train"] if "n_train" in dense else [c for c in ("data_fraction",) if c in dense]
    if not other:
        return axis, {}, dense
    best = None
    for key, rows in dense.groupby(other, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        score = (rows[axis].nunique(), key)  # ties go to the largest model (or most data)
        if best is None or score >= best[0]:
            best = (score, dict(zip(other, map(float, key))), rows)
    return axis, best[1], best[2]


# ---------------------------------------------------------------- rosenfeld2020: ê(m, n)


def setup_rosenfeld2020(points: Points, opts: Options) -> list[Task]:
    """ê(m, n) on the dense rows, a pinned to 1; n and m normalised by their geometric means."""
    frame = points.frame[points.frame["dense"]]
    for col in ("n_train", "params_total"):
        if col not in frame.columns:
            raise Skip(f"needs a {col} column")
        if (frame[col] <= 0).any() or frame[col].isna().any():
            raise Skip(f"{col} must be a positive number on every dense row")
    for col, what in (("n_train", "training-set sizes"), ("params_total", "model sizes")):
        if frame[col].nunique() < 2:
            raise Skip(f"needs >= 2 {what} ({col}) among dense rows, has {frame[col].nunique()}")
    need_points(frame, 5, "the dense table")
    eps0 = eps0_of(points, opts)
    n_ref, m_ref = geomean(frame["n_train"]), geomean(frame["params_total"])

    def predict(theta: np.ndarray, pts: Any) -> np.ndarray:
        alpha, beta, log_b, c, log_eta = theta
        e = (
            np.power(np.asarray(pts["n_train"], dtype=float) / n_ref, -alpha)
            + np.exp(log_b) * np.power(np.asarray(pts["params_total"], dtype=float) / m_ref, -beta)
            + c
        )
        return eps0 * e / np.sqrt(e**2 + np.exp(2 * log_eta))

    def public(theta: np.ndarray) -> dict[str, float]:
        # Undo the normalisation: ẽ in raw units is n_ref^(−α) times the normalised one, and so is η.
        alpha, beta, log_b, c, log_eta = theta
        scale = n_ref ** (-alpha)
        return {
            "alpha": float(alpha),
            "beta": float(beta),
            "b": float(np.exp(log_b) * scale * m_ref**beta),
            "c_inf": float(c * scale),
            "eta": float(np.exp(log_eta) * scale),
        }

    ratio = np.clip(eps0 / np.clip(frame["test_error"].median(), 1e-6, None), 1.0 + 1e-3, None)
    log_eta0 = float(np.log(2.0 * np.sqrt(ratio**2 - 1.0)))  # ẽ ≈ 2 at the reference point
    lower = np.array([1e-3, 1e-3, np.log(1e-6), 0.0, np.log(1e-6)])
    upper = np.array([5.0, 5.0, np.log(1e6), 1e3, np.log(1e6)])
    starts = [
        np.array([a, b_, 0.0, c, log_eta0])
        for a, b_ in ((0.5, 0.5), (1.0, 0.3), (0.3, 1.0))
        for c in (0.05, 0.5)
    ]
    box = (
        np.array([0.1, 0.1, np.log(1e-2), 0.0, log_eta0 - 2.3]),
        np.array([2.0, 2.0, np.log(1e2), 1.0, log_eta0 + 2.3]),
    )
    problem = Problem(
        frame=frame,
        names=["alpha", "beta", "b", "c_inf", "eta"],
        lower=lower,
        upper=upper,
        starts=[np.clip(s, lower, upper) for s in starts],
        box=box,
        predict=predict,
        public=public,
        pinned={"a": 1.0, "eps0": eps0},
    )
    return [
        Task(
            "rosenfeld2020",
            [problem],
            notes=[
                f"ε0 = {eps0:.4g}; a pinned to 1 (the form is invariant under scaling a, b, c∞, η together)"
            ],
        )
    ]


SETUPS: dict[str, Callable[[Points, Options], list[Task]]] = {
    "power": setup_power,
    "rosenfeld2020": setup_rosenfeld2020,
    "pruning2021": setup_pruning2021,
}
