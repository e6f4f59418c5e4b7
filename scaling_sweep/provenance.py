"""Which code wrote a row (`code_version`): `git describe` in a checkout, else the installed version."""

from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path

from scaling_sweep import __version__

PACKAGE_DIR = Path(__file__).resolve().parent
GIT_TIMEOUT_S = 5.0  # a hung git (network filesystem, lock) must not hold up a job


@functools.cache  # once per process: every job of a worker writes the same value
def code_version() -> str:
    """`0.1.0+g1a2b3c4` (`-dirty` with uncommitted changes) in a git checkout, else e.g. `0.1.0`."""
    described = git_describe(PACKAGE_DIR)
    return f"{installed_version()}+{described}" if described else installed_version()


def installed_version() -> str:
    try:
        return metadata.version("scaling-sweep")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return __version__


def git_describe(package_dir: Path) -> str | None:
    """`git describe --always --dirty` of the checkout this package lives in, or None.

    git itself reads packed refs (after `git gc`) and sees uncommitted changes, which reading
    .git/HEAD by hand did not. None when git is missing, slow or fails, or when the repository
    git finds is not this package's own (an installed copy under a venv inside another checkout).
    """

    def git(*args: str) -> str | None:
        try:
            p = subprocess.run(
                ["git", *args],
                cwd=package_dir,
                capture_output=True,
                text=True,
                timeout=GIT_TIMEOUT_S,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return p.stdout.strip() if p.returncode == 0 and p.stdout.strip() else None

    top = git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != package_dir.parent:
        return None
    # --tags: lightweight tags count too. --long: with a tag always `TAG-N-gHASH`; without one, --always gives the bare hash, which
    # gets git's own "g" prefix so that either way the commit reads `g<hash>`.
    described = git("describe", "--always", "--dirty", "--long", "--tags")
    if described is None:
        return None
    return described if "-g" in described else f"g{described}"
