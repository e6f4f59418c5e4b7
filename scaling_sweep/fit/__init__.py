"""Scaling-law fits on a results table: the 2020 (model x data) and 2021 (pruning) laws, quality, plots."""

from scaling_sweep.fit.api import DEFAULT_LAWS, LAWS, fit_points, fit_table, fittable, plot_table
from scaling_sweep.fit.errors import FitError
from scaling_sweep.fit.quality import FitReport, LawFit

__all__ = [
    "DEFAULT_LAWS",
    "LAWS",
    "FitError",
    "FitReport",
    "LawFit",
    "fit_points",
    "fit_table",
    "fittable",
    "plot_table",
]
