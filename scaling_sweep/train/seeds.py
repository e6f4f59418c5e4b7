"""Derived seeds: every random choice of a job is a pure function of (seed, purpose, level, epoch, ...)."""

from __future__ import annotations

import hashlib


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed fixed by `parts`; stable across processes, platforms and Python versions."""
    digest = hashlib.sha256(repr(tuple(parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
