"""The common path stays lean: no torchvision/dynamo/mnist1d for an MNIST-1D job."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_mnist1d_job_imports_neither_torchvision_nor_dynamo_nor_generators(job, tmp_path):
    config = job(prune={"levels": 1}, train={"epochs": 1})
    code = (
        f"from pathlib import Path\nfrom scaling_sweep.train.imp import run_imp\n"
        f"run_imp({config!r}, 'cpu', Path({str(tmp_path)!r}), emit=lambda rows: None)"
    )
    modules = _modules_after(code)
    heavy = {"torchvision", "torch._dynamo", "mnist1d", "matplotlib", "sklearn"}
    assert not heavy & modules
