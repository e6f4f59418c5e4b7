"""code_version: git describe in a checkout (packed refs, uncommitted changes), the installed version otherwise."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from scaling_sweep import provenance

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="no git on PATH")


def _git(repo: Path, *args: str) -> str:
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    import os

    p = subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True, env={**os.environ, **env}
    )
    return p.stdout.strip()


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A scratch repository holding a package directory, committed once, refs packed as `git gc` leaves them."""
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "__init__.py").write_text("x = 1\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "one")
    _git(repo, "pack-refs", "--all")
    assert not (repo / ".git" / "refs" / "heads" / "master").exists()
    assert not (repo / ".git" / "refs" / "heads" / "main").exists()
    return repo


@needs_git
def test_git_describe_reads_packed_refs_and_sees_uncommitted_changes(checkout):
    head = _git(checkout, "rev-parse", "--short", "HEAD")
    assert provenance.git_describe(checkout / "pkg") == f"g{head}"
    (checkout / "pkg" / "__init__.py").write_text("x = 2\n")
    assert provenance.git_describe(checkout / "pkg") == f"g{head}-dirty"


@needs_git
def test_a_tag_reads_as_tag_count_and_commit(checkout):
    _git(checkout, "tag", "v0.1.0")
    head = _git(checkout, "rev-parse", "--short", "HEAD")
    assert provenance.git_describe(checkout / "pkg") == f"v0.1.0-0-g{head}"


@needs_git
def test_an_installed_copy_inside_another_checkout_is_not_described_by_it(checkout):
    # e.g. site-packages/scaling_sweep of a venv that lives inside some repository
    nested = checkout / "venv" / "site-packages" / "pkg"
    nested.mkdir(parents=True)
    assert provenance.git_describe(nested) is None


def test_no_git_or_no_repository_gives_none(tmp_path, monkeypatch):
    assert provenance.git_describe(tmp_path) is None
    monkeypatch.setenv("PATH", str(tmp_path))  # git not found
    assert provenance.git_describe(Path(provenance.__file__).parent) is None


def test_code_version_is_computed_once_per_process(monkeypatch):
    calls = []
    monkeypatch.setattr(provenance, "git_describe", lambda d: calls.append(d) or "gabc1234")
    provenance.code_version.cache_clear()
    try:
        assert provenance.code_version() == f"{provenance.installed_version()}+gabc1234"
        assert provenance.code_version() == f"{provenance.installed_version()}+gabc1234"
        assert len(calls) == 1
        monkeypatch.setattr(provenance, "git_describe", lambda d: None)
        provenance.code_version.cache_clear()
        assert provenance.code_version() == provenance.installed_version()
    finally:
        provenance.code_version.cache_clear()


def test_job_rows_carry_it():
    from scaling_sweep import job

    assert job.code_version() == provenance.code_version()
