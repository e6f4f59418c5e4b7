"""Scaling-law fits on a results table: the 2020 (model x data) and 2021 (pruning) laws, quality, plots.

The package is also the notebook's `scaling_sweep.fit(source, ...)`: calling it runs `notebook.fit`.
"""

import sys
import types

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


class _CallablePackage(types.ModuleType):
    # `scaling_sweep.fit` names this package as soon as anything imports it (the CLI does), so the
    # notebook function of the same name can only be reached by making the package callable.
    def __call__(self, source, **options):
        from scaling_sweep.fit.notebook import fit

        return fit(source, **options)


sys.modules[__name__].__class__ = _CallablePackage
