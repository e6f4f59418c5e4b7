"""Crash-safe file writes: temp file in the same directory, flush, fsync, rename (stdlib only).

Also the content checksums the sweep keeps beside its files (`.<file>.sha256`: the digests a file
may have) and the clean-up of temp files a killed writer left behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

HOST = socket.gethostname()
STALE_TEMP_S = 3600.0  # a temp file this old belongs to a writer that died (no write takes an hour)
# The temp name says who writes it: `.<name>.<pid>@<host>.<random>.tmp`.
_TEMP = re.compile(r"^\..+\.(?P<pid>\d+)@(?P<host>[^@/]+)\.[a-z0-9_]+\.tmp$")


def _read_umask() -> int:
    # os.umask can only be read by setting it, which races with other threads: read /proc instead.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # at import, before this process starts threads of its own
    os.umask(mask)
    return mask


# mkstemp creates files 0600; a sweep shared with colleagues should get what the umask allows.
FILE_MODE = 0o666 & ~_read_umask()


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Yield a file that replaces `path` only once it is fully written and on disk."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}.{os.getpid()}@{HOST}."
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


@contextmanager
def staged_text(path: str | os.PathLike, text: str) -> Iterator[Callable[[], None]]:
    """Write `text` to a synced temp file now; yield `commit`, which renames it over `path`.

    For a write that must happen under a lock: the slow part (write, fsync) is done before the lock is
    taken, so the lock is held only for a check and a rename. Not committed: the temp file is removed.
    """
    path = Path(path)
    fd, staged = tempfile.mkstemp(
        prefix=f".{path.name}.{os.getpid()}@{HOST}.", suffix=".tmp", dir=path.parent
    )
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(staged)
        raise
    done = False

    def commit() -> None:
        nonlocal done
        os.replace(staged, path)
        done = True

    try:
        yield commit
    finally:
        if not done:
            try:
                os.unlink(staged)
            except FileNotFoundError:
                pass
        else:
            _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    # The rename itself is durable only once the directory entry is flushed.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json_text(obj))


def json_text(obj: Any) -> str:
    """How every JSON file of a sweep is written."""
    return json.dumps(obj, indent=1, sort_keys=True) + "\n"


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as f:
        return json.load(f)


# -- checksums -----------------------------------------------------------------------------


def copy_tree(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy a directory's files (one level, temp files left out), each atomically; digest sidecars first,
    so a copy cut short never holds a file whose recorded digest is missing."""
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    files = [p for p in src.iterdir() if p.is_file() and not p.name.endswith(".tmp")]
    for p in sorted(files, key=lambda p: (not p.name.endswith(".sha256"), p.name)):
        copy_file(p, dst / p.name)


def copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy one file atomically (temp, fsync, rename)."""
    with atomic_open(dst, "wb") as f, open(src, "rb") as r:
        shutil.copyfileobj(r, f)


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sidecar(path: str | os.PathLike) -> Path:
    """Where the digests of `path` are kept: a hidden file, which Parquet dataset readers skip."""
    path = Path(path)
    return path.with_name(f".{path.name}.sha256")


def read_digests(side: Path) -> list[str] | None:
    """The digests a sidecar accepts, newest first; None when there is none; [] when it is damaged."""
    try:
        text = side.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        return []
    digests = text.split()
    return digests if all(re.fullmatch(r"[0-9a-f]{64}", d) for d in digests) else []


def write_digests(side: Path, digests: Iterable[str]) -> None:
    write_text(side, "".join(f"{d}\n" for d in digests))


def digest_problem(path: str | os.PathLike, side: Path | None = None) -> str:
    """Why `path`'s content is not what was written ("" when it is, or when no digest was recorded)."""
    accepted = read_digests(side or sidecar(path))
    if accepted is None:
        return ""  # written before checksums existed (or not by us): only its own format checks apply
    if not accepted:
        return f"its checksum file {side or sidecar(path)} is damaged"
    return "" if sha256_file(path) in accepted else "content differs from what was written (checksum fails)"


class HashingWriter:
    """A write-only file wrapper that hashes what passes through (torch.save writes sequentially)."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f, self.sha256 = f, hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


# -- temp files of killed writers ------------------------------------------------------------


def pid_alive(pid: int) -> bool:
    """Whether process `pid` on this host is alive (a zombie nobody reaps counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    # A killed process whose parent died too may linger as a zombie nobody reaps: it is dead.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


def remove_stale_temps(directories: Iterable[Path], prefix: str = "", now: float | None = None) -> list[Path]:
    """Delete our temp files that no writer will finish: its process (on this host) is gone, or it is old."""
    now = time.time() if now is None else now
    removed = []
    for d in directories:
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for name in names:
            m = _TEMP.match(name)
            if not m or not name.startswith(prefix):
                continue
            p = Path(d) / name
            try:
                dead = m["host"] == HOST and not pid_alive(int(m["pid"]))
                if dead or now - p.stat().st_mtime > STALE_TEMP_S:
                    p.unlink()
                    removed.append(p)
            except OSError:
                continue  # gone already, or not ours to remove
    return removed
