"""scaling-sweep: declare scaling-law grids, train them with IMP anywhere, fit the laws.

For notebooks: `scaling_sweep.load(path)` reads results as a DataFrame, `scaling_sweep.fit(path_or_frame)`
fits the laws. Both are imported on first use, so `import scaling_sweep` stays cheap and torch-free.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
__all__ = ["fit", "load", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "fit":  # the fitting package, callable as the notebook's fit()
        return importlib.import_module("scaling_sweep.fit")
    if name == "load":
        from scaling_sweep.fit.notebook import load

        return load
    raise AttributeError(f"module 'scaling_sweep' has no attribute {name!r}")
