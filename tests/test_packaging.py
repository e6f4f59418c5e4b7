"""Packaging: the wheel names every package and carries configs/, so an installed copy finds its configs."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import tomllib

from tests.conftest import ROOT


def test_pyproject_lists_every_package():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for top in ("scaling_sweep", "launchers")
        for p in (ROOT / top).rglob("__init__.py")
    }
    assert found | {"scaling_sweep.configs"} == listed


def test_installed_wheel_composes_configs_outside_the_checkout(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "wheel"),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "scaling_sweep/configs/sweep/mnist1d_imp.yaml" in names
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    code = (
        "from scaling_sweep.config import compose, config_dir; "
        "print(config_dir()); print(compose(['sweep=smoke']).name)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path / "site")},
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert out[0].startswith(str(tmp_path / "site")) and out[1] == "smoke"
