"""The sweep side is torch-free: planning, status, fit and SLURM submission import without torch."""

import os
import subprocess
import sys

from tests.conftest import ROOT

TORCH_FREE = (
    "scaling_sweep.schema",
    "scaling_sweep.config",
    "scaling_sweep.grid",
    "scaling_sweep.sweep",
    "scaling_sweep.cli",
    "scaling_sweep.fit",
    "scaling_sweep.fit.api",
    "scaling_sweep.train",
    "launchers.slurm",
)

# A finder that refuses torch, so any import of it, however deep, raises ImportError. (Not
# sys.modules["torch"] = None: scipy reads a torch entry there as an imported torch and breaks.)
CODE = f"""
import importlib, sys

class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "torch":
            raise ImportError(f"{{name}} is unimportable in this test")

sys.meta_path.insert(0, NoTorch())
for m in {TORCH_FREE!r}:
    importlib.import_module(m)
assert "torch" not in sys.modules
"""


def test_sweep_modules_import_with_torch_unimportable():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
