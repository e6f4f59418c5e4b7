"""What the models share: how a width multiplier turns a base channel count into a layer size."""

from __future__ import annotations


def scaled(base: int, width: float) -> int:
    """Channels or units for a width multiplier: round(base * width), never below 1."""
    return max(1, round(base * float(width)))
