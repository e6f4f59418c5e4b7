"""What every law is set up as: a least-squares Problem (parameterisation, bounds, starts), grouped in Tasks."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from scaling_sweep.fit import forms
from scaling_sweep.fit.table import Points

DENSE_EPS = 1e-9


class Skip(Exception):
    """This law cannot be fit on this table; str(skip) says why in one line."""


@dataclass
class Problem:
    """One least-squares problem: free parameters θ (fit space), how θ predicts error, and what θ means.

    Parameters are fitted in a normalised, mostly logarithmic space so that every coordinate is O(1)
    and positive quantities stay positive; `public` maps θ back to the published parameters.
    """

    frame: pd.DataFrame  # the points to fit
    names: list[str]  # published names of the free parameters, in θ order (for messages)
    lower: np.ndarray
    upper: np.ndarray
    starts: list[np.ndarray]  # deterministic starts, best guesses first
    box: tuple[np.ndarray, np.ndarray]  # where random starts are drawn
    # θ, points -> ê; points are a DataFrame or, inside the solver, a dict of its columns as arrays (faster)
    predict: Callable[[np.ndarray, Any], np.ndarray]
    public: Callable[[np.ndarray], dict[str, float]]  # θ -> published parameters
    pinned: dict[str, float] = field(default_factory=dict)
    label: dict[str, Any] = field(default_factory=dict)  # the configuration, for per-configuration fits
    # θ, points -> ∂ê/∂θ; None: the solver takes finite differences
    gradient: Callable[[np.ndarray, Any], np.ndarray] | None = None
    # a related fit's published parameters -> a start for this problem
    warm: Callable[[Mapping[str, float]], np.ndarray] | None = None

    _arrays: dict[str, np.ndarray] | None = field(default=None, repr=False)

    @property
    def n_free(self) -> int:
        return len(self.names)

    def arrays(self, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The frame's numeric columns as arrays (all rows, or a boolean mask of them). The solver calls
        predict thousands of times, and one pandas column lookup costs more than the law itself."""
        if self._arrays is None:
            self._arrays = {
                str(c): self.frame[c].to_numpy(dtype=float)
                for c in self.frame.columns
                if pd.api.types.is_numeric_dtype(self.frame[c]) or pd.api.types.is_bool_dtype(self.frame[c])
            }
        return self._arrays if rows is None else {c: v[rows] for c, v in self._arrays.items()}


@dataclass
class Task:
    """What one report entry fits: one joint problem, or one problem per configuration."""

    entry: str
    problems: list[Problem]
    notes: list[str] = field(default_factory=list)
    group: str | None = None  # CV folds are drawn within each value of this column
    per_config: bool = False  # one problem per configuration, even when there is only one


@dataclass
class Options:
    classes: int | None = None
    power_axis: str | None = None


def geomean(x: pd.Series | np.ndarray) -> float:
    return float(np.exp(np.mean(np.log(np.unique(np.asarray(x, dtype=float))))))


def need_points(frame: pd.DataFrame, n_free: int, what: str) -> None:
    # Two more points than parameters: one to leave the fit over-determined, one so σ means something.
    if len(frame) < n_free + 2:
        raise Skip(f"{what} has {len(frame)} points; {n_free} parameters need at least {n_free + 2}")


def eps0_of(points: Points, opts: Options) -> float:
    """Random-guess error from `classes=` or from the dataset's name."""
    if opts.classes:
        return forms.random_guess_error(opts.classes)
    name = points.family.get("dataset")
    if name is None:
        raise Skip("the table has no dataset column to infer ε0 = 1 − 1/classes from: pass classes=")
    if str(name).lower() not in forms.CLASSES:
        raise Skip(f"unknown dataset {name!r} for ε0 = 1 − 1/classes: pass classes=")
    return forms.random_guess_error(forms.CLASSES[str(name).lower()])
